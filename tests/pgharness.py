"""Throwaway PostgreSQL clusters for integration tests.

This is a plain library (fixtures live in ``tests/conftest.py``).  It drives the
real PostgreSQL server binaries (``initdb``, ``pg_ctl``, ``pg_basebackup``...) to
build, start, crash, promote and destroy small clusters that listen on
127.0.0.1 only, on a free port, with their unix socket in a short directory
under ``/tmp`` (socket paths must stay below ~100 characters).

PostgreSQL refuses to run as root: run the suite with ``bash scripts/test.sh``,
which switches to the unprivileged ``walvault-test`` user by itself.

Every cluster has these roles (passwords are random, kept on the object):

* ``postgres``           superuser (trust over the unix socket, password over TCP)
* ``walvault``           LOGIN, member of ``pg_monitor`` and ``pg_checkpoint``, may run
                         ``pg_switch_wal()`` and ``pg_create_restore_point(text)``
* ``streaming_walvault`` LOGIN REPLICATION
* ``nomonitor``          LOGIN and nothing else

(``pg_checkpoint`` exists from PostgreSQL 15: on 14 ``walvault`` has ``pg_monitor`` only.)

A cluster may be of any major (``PgCluster.create(..., major=17)``, or ``bindir=``): its
binaries are found by :func:`pgcluster_util.find_pg_bindir` and every copy of it (restored
backups, standbys) runs the same binaries.

The helpers (roles, binaries, ports, conninfo strings, :func:`wait_until`) live in
``pgcluster_util.py`` and the copies (restored backups, standbys) in
``pgcluster_copies.py``; everything is importable from here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql

import pgcluster_copies
from pgcluster_util import (
    DEFAULT_MAJOR,
    DEFAULT_TIMEOUT,
    LATEST_MAJOR,
    MATRIX_MAJORS,
    MONITOR_USER,
    NOMONITOR_USER,
    STREAMING_USER,
    SUPERUSER,
    ConfValue,
    HarnessError,
    conf_value,
    ensure_not_root,
    find_pg_bindir,
    free_port,
    fresh_cluster_dir,
    make_conninfo,
    pg_binaries_root,
    postgres_major,
    requested_majors,
    tail,
    wait_until,
)

__all__ = [
    "DEFAULT_MAJOR",
    "DEFAULT_TIMEOUT",
    "LATEST_MAJOR",
    "MATRIX_MAJORS",
    "MONITOR_USER",
    "NOMONITOR_USER",
    "STREAMING_USER",
    "SUPERUSER",
    "ConfValue",
    "HarnessError",
    "PgCluster",
    "find_pg_bindir",
    "free_port",
    "make_conninfo",
    "pg_binaries_root",
    "postgres_major",
    "requested_majors",
    "wait_until",
]


class PgCluster:
    """One throwaway PostgreSQL cluster (primary or standby).

    Layout: ``<base_dir>/<name>/data`` (PGDATA), ``<base_dir>/<name>/postgres.log``;
    unix socket in a private short directory under ``/tmp``.  Settings managed by
    the harness live in ``<data>/harness.conf`` (included from postgresql.conf);
    change them with :meth:`configure`.
    """

    def __init__(
        self,
        *,
        name: str,
        cluster_dir: Path,
        bindir: Path,
        port: int,
        socket_dir: Path,
        passwords: Mapping[str, str],
        settings: Mapping[str, ConfValue],
    ) -> None:
        self.name = name
        self.cluster_dir = cluster_dir
        self.bindir = bindir
        self.port = port
        self.socket_dir = socket_dir
        self.passwords: dict[str, str] = dict(passwords)
        self.settings: dict[str, ConfValue] = dict(settings)
        self.standbys: list[PgCluster] = []
        self.host = "127.0.0.1"
        self._roles_pending = False

    # ---------------------------------------------------------------- properties

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "pg_wal"

    @property
    def log_path(self) -> Path:
        return self.cluster_dir / "postgres.log"

    @property
    def superuser(self) -> str:
        return SUPERUSER

    @property
    def superuser_password(self) -> str:
        return self.passwords[SUPERUSER]

    @property
    def monitor_user(self) -> str:
        return MONITOR_USER

    @property
    def monitor_password(self) -> str:
        return self.passwords[MONITOR_USER]

    @property
    def streaming_user(self) -> str:
        return STREAMING_USER

    @property
    def streaming_password(self) -> str:
        return self.passwords[STREAMING_USER]

    @property
    def nomonitor_user(self) -> str:
        return NOMONITOR_USER

    @property
    def nomonitor_password(self) -> str:
        return self.passwords[NOMONITOR_USER]

    @functools.cached_property
    def major(self) -> int:
        """The PostgreSQL major of this cluster's binaries (15, 18...)."""
        major = postgres_major(self.bindir)
        if major is None:
            raise HarnessError(f"{self.bindir}/postgres does not run")
        return major

    def __repr__(self) -> str:
        try:
            major = str(self.major)
        except HarnessError:
            major = "?"
        return f"<PgCluster {self.name} pg{major} port={self.port} data={self.data_dir}>"

    # ---------------------------------------------------------------- creation

    @classmethod
    def create(
        cls,
        base_dir: str | os.PathLike[str],
        *,
        name: str,
        wal_segsize_mb: int = 1,
        extra_conf: Mapping[str, ConfValue] | None = None,
        bindir: str | os.PathLike[str] | None = None,
        major: int | None = None,
        start: bool = True,
    ) -> PgCluster:
        """``initdb`` a new cluster under ``base_dir/name``; start it and add roles.

        The binaries are ``bindir``, else those of ``major`` (:func:`find_pg_bindir`), else
        the default ones. With ``start=False`` the cluster is only initialised; the roles
        are then created on the first :meth:`start`.
        """
        ensure_not_root()
        bin_path = Path(bindir) if bindir is not None else find_pg_bindir(major)
        cluster_dir = fresh_cluster_dir(Path(base_dir).resolve() / name)

        passwords = {
            role: secrets.token_urlsafe(18)
            for role in (SUPERUSER, MONITOR_USER, STREAMING_USER, NOMONITOR_USER)
        }
        socket_dir = Path(tempfile.mkdtemp(prefix="wvpg-", dir="/tmp"))
        settings = cls._default_settings(name, free_port(), socket_dir)
        settings.update(extra_conf or {})
        cluster = cls(
            name=name,
            cluster_dir=cluster_dir,
            bindir=bin_path,
            port=int(settings["port"]),
            socket_dir=socket_dir,
            passwords=passwords,
            settings=settings,
        )
        cluster._roles_pending = True
        try:
            cluster._initdb(wal_segsize_mb)
            cluster._write_hba()
            cluster._write_settings()
            with (cluster.data_dir / "postgresql.conf").open("a") as f:
                f.write("\n# managed by tests/pgharness.py\ninclude 'harness.conf'\n")
            if start:
                cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    @staticmethod
    def _default_settings(name: str, port: int, socket_dir: Path) -> dict[str, ConfValue]:
        return {
            "cluster_name": name,
            "listen_addresses": "127.0.0.1",
            "port": port,
            "unix_socket_directories": str(socket_dir),
            "wal_level": "replica",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "wal_keep_size": 0,
            "fsync": False,
            "full_page_writes": True,
            "logging_collector": False,
            "hot_standby": True,
            "archive_mode": False,
            "shared_buffers": "16MB",
            "max_connections": 40,
        }

    def _initdb(self, wal_segsize_mb: int) -> None:
        pwfile = self.cluster_dir / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.passwords[SUPERUSER] + "\n")
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--wal-segsize={wal_segsize_mb}",
                "-E",
                "UTF8",
                "--locale=C",
                f"--pwfile={pwfile}",
                "--no-sync",
                "--no-instructions",
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _write_hba(self) -> None:
        lines = [
            "# managed by tests/pgharness.py",
            "local   all          all                  trust",
            "local   replication  all                  trust",
            "host    all          all   127.0.0.1/32   scram-sha-256",
            "host    replication  all   127.0.0.1/32   scram-sha-256",
            "host    all          all   ::1/128        scram-sha-256",
            "host    replication  all   ::1/128        scram-sha-256",
        ]
        (self.data_dir / "pg_hba.conf").write_text("\n".join(lines) + "\n")

    def _write_settings(self) -> None:
        body = "".join(f"{k} = {conf_value(v)}\n" for k, v in self.settings.items())
        (self.data_dir / "harness.conf").write_text("# managed by tests/pgharness.py\n" + body)

    def configure(self, settings: Mapping[str, ConfValue], *, reload: bool = True) -> None:
        """Change settings in ``harness.conf``; reload the server if it runs.

        Settings that need a restart (``archive_mode``, ``wal_level``...) only take
        effect after ``stop()`` + ``start()``.  ``port`` and
        ``unix_socket_directories`` are kept in sync with the object.
        """
        self.settings.update(settings)
        self.port = int(self.settings["port"])
        self.socket_dir = Path(str(self.settings["unix_socket_directories"]))
        self._write_settings()
        if reload and self.is_running():
            self._run("pg_ctl", "reload", "-D", str(self.data_dir))

    def _create_roles(self) -> None:
        with self._admin_connect() as conn:
            for role, attrs in (
                (MONITOR_USER, "LOGIN"),
                (STREAMING_USER, "LOGIN REPLICATION"),
                (NOMONITOR_USER, "LOGIN"),
            ):
                conn.execute(
                    pgsql.SQL("CREATE ROLE {} " + attrs + " PASSWORD {}").format(
                        pgsql.Identifier(role), pgsql.Literal(self.passwords[role])
                    )
                )
            roles = "pg_monitor, pg_checkpoint" if self.major >= 15 else "pg_monitor"
            conn.execute(
                pgsql.SQL("GRANT " + roles + " TO {}").format(pgsql.Identifier(MONITOR_USER))
            )
            # what walvault's documentation asks of a non-superuser backup user
            for function in ("pg_switch_wal()", "pg_create_restore_point(text)"):
                conn.execute(
                    pgsql.SQL("GRANT EXECUTE ON FUNCTION " + function + " TO {}").format(
                        pgsql.Identifier(MONITOR_USER)
                    )
                )
        self._roles_pending = False

    # ---------------------------------------------------------------- processes

    def _run(
        self, program: str, *args: str, timeout: float = DEFAULT_TIMEOUT + 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / program), *args]
        env = dict(os.environ)
        for var in ("PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD"):
            env.pop(var, None)
        env["LC_ALL"] = "C"
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(
                f"{program} timed out after {timeout:.0f}s: {' '.join(cmd)}\n"
                + self.describe_failure()
            ) from exc
        if check and proc.returncode != 0:
            raise HarnessError(
                f"{program} failed with exit code {proc.returncode}: {' '.join(cmd)}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}\n"
                + self.describe_failure()
            )
        return proc

    def describe_failure(self) -> str:
        return f"--- last lines of {self.log_path} ---\n{tail(self.log_path)}"

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        if not self.data_dir.exists():
            return False
        proc = self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False)
        return proc.returncode == 0

    def start(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Start the server and wait until it accepts connections.

        If the port was taken in the meantime, retry on a fresh port.
        """
        for attempt in range(3):
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            proc = self._run(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                str(int(timeout)),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                check=False,
                timeout=timeout + 30,
            )
            if proc.returncode == 0:
                break
            with contextlib.suppress(OSError), self.log_path.open(errors="replace") as f:
                f.seek(offset)
                new_log = f.read()
            if attempt < 2 and "could not bind" in new_log and not self.is_running():
                self.configure({"port": free_port()}, reload=False)
                continue
            raise HarnessError(
                f"pg_ctl start failed for {self.name} (exit {proc.returncode})\n"
                f"{proc.stdout}{proc.stderr}\n" + self.describe_failure()
            )
        self.wait_ready(timeout=timeout)
        if self._roles_pending:
            self._create_roles()

    def wait_ready(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until a TCP connection as the superuser succeeds."""

        def ready() -> bool:
            if self.postmaster_pid() is None:
                raise HarnessError(
                    f"{self.name}: postmaster is not running\n" + self.describe_failure()
                )
            with psycopg.connect(self.superuser_conninfo(connect_timeout=5), autocommit=True):
                return True

        wait_until(ready, timeout=timeout, what=f"{self.name} to accept connections", cluster=self)

    def stop(self, mode: str = "fast", *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """``pg_ctl stop -m mode``; a no-op when the server is not running."""
        if not self.is_running():
            return
        self._run(
            "pg_ctl",
            "stop",
            "-w",
            "-t",
            str(int(timeout)),
            "-m",
            mode,
            "-D",
            str(self.data_dir),
            timeout=timeout + 30,
        )

    def crash(self) -> None:
        """Simulate a crash: ``pg_ctl stop -m immediate`` (no shutdown checkpoint)."""
        self.stop("immediate")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def promote(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Promote a standby and wait until it leaves recovery."""
        self._run("pg_ctl", "promote", "-w", "-t", str(int(timeout)), "-D", str(self.data_dir))
        wait_until(
            lambda: not self.is_in_recovery(),
            timeout=timeout,
            what=f"{self.name} to finish promotion",
            cluster=self,
        )

    def _kill_leftover_postmaster(self) -> None:
        pid = self.postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

    def destroy(self) -> None:
        """Stop (immediate) this cluster and its standbys, then delete everything."""
        for standby in reversed(self.standbys):
            with contextlib.suppress(Exception):
                standby.destroy()
        self.standbys.clear()
        try:
            self.stop("immediate", timeout=30)
        except Exception:
            self._kill_leftover_postmaster()
        shutil.rmtree(self.cluster_dir, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    # ---------------------------------------------------------------- connections

    def conninfo(self, user: str = MONITOR_USER, dbname: str = "postgres", **extra: object) -> str:
        """TCP conninfo (``host=127.0.0.1 port=.. user=.. password=.. dbname=..``).

        The password is filled in for the harness roles unless ``password`` is
        given in ``extra`` (pass ``password=None`` to leave it out).
        """
        params: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "password": self.passwords.get(user),
            "dbname": dbname,
        }
        params.update(extra)
        return make_conninfo(**params)

    def superuser_conninfo(self, dbname: str = "postgres", **extra: object) -> str:
        return self.conninfo(SUPERUSER, dbname, **extra)

    def streaming_conninfo(self, dbname: str = "postgres", **extra: object) -> str:
        """Conninfo of the replication role (add ``replication=true`` yourself)."""
        return self.conninfo(STREAMING_USER, dbname, **extra)

    def connect(
        self, user: str = MONITOR_USER, dbname: str = "postgres", **extra: object
    ) -> psycopg.Connection[tuple[Any, ...]]:
        """An autocommit psycopg connection; arguments as for :meth:`conninfo`."""
        return psycopg.connect(self.conninfo(user, dbname, **extra), autocommit=True)

    def _admin_connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        """Superuser connection over the unix socket (trust)."""
        return psycopg.connect(
            make_conninfo(host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname=dbname),
            autocommit=True,
        )

    def sql(
        self, query: str, params: Any = None, *, dbname: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (unix socket); return all rows."""
        with self._admin_connect(dbname) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else []

    def scalar(self, query: str, params: Any = None) -> Any:
        """First column of the first row of :meth:`sql` (``None`` if no rows)."""
        rows = self.sql(query, params)
        return rows[0][0] if rows else None

    # ---------------------------------------------------------------- state

    def system_identifier(self) -> int:
        """Database system identifier, from ``pg_controldata`` (works when stopped)."""
        out = self._run("pg_controldata", "-D", str(self.data_dir)).stdout
        m = re.search(r"^Database system identifier:\s+(\d+)", out, re.MULTILINE)
        if not m:
            raise HarnessError(f"cannot parse pg_controldata output:\n{out}")
        return int(m.group(1))

    def is_in_recovery(self) -> bool:
        return bool(self.scalar("SELECT pg_is_in_recovery()"))

    def timeline(self) -> int:
        """Current timeline: of the WAL insert position on a primary; on a standby
        the one of the WAL receiver, else of the last replayed checkpoint."""
        if not self.is_in_recovery():
            walfile = self.scalar("SELECT pg_walfile_name(pg_current_wal_lsn())")
            return int(str(walfile)[:8], 16)
        tli = self.scalar("SELECT received_tli FROM pg_stat_wal_receiver")
        if tli is None:
            tli = self.scalar("SELECT timeline_id FROM pg_control_checkpoint()")
        return int(tli)

    def switch_wal(self) -> str:
        """``pg_switch_wal()`` after a tiny write so the switch is never a no-op."""
        self.sql("SELECT txid_current()")
        return str(self.scalar("SELECT pg_walfile_name(pg_switch_wal())"))

    def replication_state(self, application_name: str) -> str | None:
        state = self.scalar(
            "SELECT state FROM pg_stat_replication WHERE application_name = %s",
            (application_name,),
        )
        return None if state is None else str(state)

    # ---------------------------------------------------------------- copies
    # (see pgcluster_copies.py; as methods, ``self`` is the template/primary)

    sibling = pgcluster_copies.sibling
    from_backup = pgcluster_copies.from_backup
    make_standby = pgcluster_copies.make_standby
