"""The parts of the PostgreSQL test harness that are not the cluster itself.

Constants and roles, finding the server binaries, free ports, libpq ``key=value``
strings, ``postgresql.conf`` values and :func:`wait_until`.  Import them from
``pgharness`` (which re-exports them) unless you need the module itself.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgharness import PgCluster

DEFAULT_TIMEOUT = 60.0
"""Seconds any single wait (start, stop, standby catch-up...) may take."""

SUPERUSER = "postgres"
MONITOR_USER = "walvault"
STREAMING_USER = "streaming_walvault"
NOMONITOR_USER = "nomonitor"

ConfValue = str | int | float | bool


class HarnessError(RuntimeError):
    """A throwaway cluster could not be set up or did not reach the expected state."""


# --------------------------------------------------------------------------- helpers


def ensure_not_root() -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        raise HarnessError(
            "PostgreSQL refuses to run as root, so the integration tests cannot run "
            "as root. Run the suite with `bash scripts/test.sh`: as root it copies the "
            "tree and runs the tests as the unprivileged user 'walvault-test'."
        )


def _postgres_major(bindir: Path) -> int | None:
    postgres = bindir / "postgres"
    if not os.access(postgres, os.X_OK):
        return None
    try:
        out = subprocess.run(
            [str(postgres), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(m.group(1)) if m else None


def find_pg_bindir(version: int = 15) -> Path:
    """Locate the PostgreSQL server binaries of major ``version``.

    Order: ``$WALVAULT_PG_BINDIR``; ``pg_config --bindir`` when its ``postgres``
    has the right major version; ``/usr/lib/postgresql/<version>/bin``.
    """
    env = os.environ.get("WALVAULT_PG_BINDIR")
    if env:
        bindir = Path(env)
        major = _postgres_major(bindir)
        if major is None:
            raise HarnessError(
                f"WALVAULT_PG_BINDIR={env!r} does not contain a working 'postgres' binary"
            )
        return bindir

    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _postgres_major(Path(out)) == version:
            return Path(out)

    debian = Path(f"/usr/lib/postgresql/{version}/bin")
    if _postgres_major(debian) == version:
        return debian

    raise HarnessError(
        f"PostgreSQL {version} server binaries not found (looked at $WALVAULT_PG_BINDIR, "
        f"`pg_config --bindir` and {debian}). Install them (Debian: "
        f"`apt-get install postgresql-{version}`, as `.ci/run` does) or point "
        f"WALVAULT_PG_BINDIR at the directory holding 'postgres' and 'initdb'."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _quote_conninfo_value(value: object) -> str:
    text = str(value)
    if text and not re.search(r"[\s'\\]", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def make_conninfo(**params: object) -> str:
    """A libpq ``key=value`` string; ``None`` values are left out."""
    return " ".join(f"{k}={_quote_conninfo_value(v)}" for k, v in params.items() if v is not None)


def conf_value(value: ConfValue) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
    what: str = "condition",
    cluster: PgCluster | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Exceptions raised by the predicate count as "not yet" (the last one is
    reported), except :class:`HarnessError`, which aborts the wait at once.  On
    timeout a :class:`HarnessError` carries the cluster log tail.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
        except HarnessError:
            raise
        except Exception as exc:
            last_exc = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:.0f}s waiting for {what}"
            if last_exc is not None:
                msg += f"; last error: {last_exc!r}"
            if cluster is not None:
                msg += "\n" + cluster.describe_failure()
            raise HarnessError(msg)
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


def fresh_cluster_dir(path: Path) -> Path:
    """Create the directory of a new cluster; it must not exist yet."""
    if path.exists():
        raise HarnessError(f"{path} already exists")
    path.mkdir(parents=True)
    return path
