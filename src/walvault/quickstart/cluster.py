"""A throwaway PostgreSQL cluster for the quickstart, run as an unprivileged user when root."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass

from walvault.errors import WalvaultError

QUICKSTART_USER = "walvault-quickstart"


def find_bindir() -> str:
    """PostgreSQL's server programs: ``$WALVAULT_PG_BINDIR``, ``pg_config``, Debian's paths."""
    candidates = []
    if os.environ.get("WALVAULT_PG_BINDIR"):
        candidates.append(os.environ["WALVAULT_PG_BINDIR"])  # when set, the only candidate
    pg_config = shutil.which("pg_config")
    if pg_config and not candidates:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            )
            candidates.append(out.stdout.strip())
        except OSError:
            pass
    if not os.environ.get("WALVAULT_PG_BINDIR"):
        candidates += [f"/usr/lib/postgresql/{v}/bin" for v in (17, 16, 15)]
    for directory in candidates:
        if directory and all(
            os.access(os.path.join(directory, p), os.X_OK)
            for p in ("initdb", "pg_ctl", "postgres", "pg_receivewal", "pg_basebackup")
        ):
            return directory
    raise WalvaultError(
        "PostgreSQL server programs (initdb, pg_ctl, postgres, pg_receivewal, pg_basebackup) "
        "were not found: install PostgreSQL 15 (Debian/Ubuntu: apt-get install postgresql-15) "
        "or set WALVAULT_PG_BINDIR"
    )


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_user() -> tuple[int, int] | None:
    """As root, the unprivileged OS user that runs PostgreSQL (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(QUICKSTART_USER)
    except KeyError:
        # root's PATH may lack the sbin directories (su without -, some containers)
        useradd = shutil.which("useradd", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        if useradd is None:
            raise WalvaultError(
                f"cannot create the OS user {QUICKSTART_USER}: useradd was not found (in PATH, "
                "/usr/sbin or /sbin); create the user yourself or run quickstart as a non-root "
                "user"
            ) from None
        subprocess.run(
            [
                useradd,
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                QUICKSTART_USER,
            ],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(QUICKSTART_USER)
    return entry.pw_uid, entry.pw_gid


@dataclass
class Cluster:
    """One PostgreSQL data directory, its port and socket directory."""

    bindir: str
    data: str
    port: int
    socket_dir: str
    owner: tuple[int, int] | None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self.owner is not None:
            command = [
                "setpriv",
                f"--reuid={self.owner[0]}",
                f"--regid={self.owner[1]}",
                "--clear-groups",
                *command,
            ]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
        if check and result.returncode != 0:
            raise WalvaultError(f"{args[0]} failed: {(result.stderr or result.stdout).strip()}")
        return result

    def chown(self, path: str) -> None:
        """Give ``path`` (recursively) to the PostgreSQL user."""
        if self.owner is None:
            return
        os.lchown(path, *self.owner)
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, *self.owner)

    def initdb(self) -> None:
        """Create the cluster (1 MiB WAL segments, so progress is visible quickly)."""
        os.makedirs(self.data, mode=0o700)
        self.chown(os.path.dirname(self.data))
        self._run(
            "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--wal-segsize=1",
            "--no-sync",
        )

    def configure(self, settings: dict[str, str]) -> None:
        """Append settings to ``postgresql.auto.conf``."""
        path = os.path.join(self.data, "postgresql.auto.conf")
        with open(path, "a", encoding="utf-8") as handle:
            handle.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self.chown(path)

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        log = os.path.join(os.path.dirname(self.data), "postgres.log")
        if not os.path.exists(log):
            open(log, "w").close()
            self.chown(log)
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
        try:
            self._run(
                "pg_ctl", "start", "-w", "-t", "120", "-D", self.data, "-l", log, "-o", options
            )
        except WalvaultError as exc:
            with open(log, encoding="utf-8", errors="replace") as handle:
                tail = " | ".join(handle.read().strip().splitlines()[-3:])
            raise WalvaultError(f"{exc.message} ({log}: {tail})") from None

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: the primary dies without a clean shutdown."""
        self._run("pg_ctl", "stop", "-m", "immediate", "-D", self.data, check=False)

    def stop(self) -> None:
        """Stop if running (quietly)."""
        self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", self.data, check=False)

    def conninfo(self) -> str:
        """The superuser over TCP (trust authentication on this throwaway cluster)."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
