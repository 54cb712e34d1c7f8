"""A deployment as DBAs run it: PostgreSQL as one OS user, walvault as another, root as the DBA.

The other tests run everything as one user.  This one needs three: root (the DBA typing
``sudo walvault ...``), walvault's user (``WALVAULT_TEST_WALVAULT_USER``, the test user) and
PostgreSQL's user (``WALVAULT_TEST_PG_USER``).  Only root can start processes as other users
without a setuid helper, so scripts/test.sh creates PostgreSQL's user and runs this directory
as root after the unprivileged suite (``runuser`` starts every process as its user, with a
clean environment); anywhere else it is skipped, saying why.

What it proves, in the order a deployment meets it:

* a root command with ``walvault_user`` set creates the missing log directory, log file and
  home for walvault's user, and walvault's user logs afterwards (issue 19: it could not);
* ``.pgpass`` with ``replication`` in the database field serves every replication connection
  (``--create-slot``, receive-wal, ``check``), with connection strings that hold no password;
* ``check`` OK, run by walvault's user and by root;
* synchronous streaming, a backup, a write load, the primary killed;
* ``recover --get-wal --recovery-owner <PostgreSQL's user>`` run by root: the copy belongs to
  PostgreSQL's user, restore_command asks walvault's restore service, and PostgreSQL started
  by its own user -- which cannot read walvault's configuration or archive -- with no edit and
  no sudo, recovers every acknowledged row.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

PG_BIN = Path(os.environ.get("WALVAULT_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
WV_USER = os.environ.get("WALVAULT_TEST_WALVAULT_USER", "")
PG_USER = os.environ.get("WALVAULT_TEST_PG_USER", "")
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (WV_USER and PG_USER),
    reason="the two-user deployment test runs as root with WALVAULT_TEST_WALVAULT_USER and "
    "WALVAULT_TEST_PG_USER set: `bash scripts/test.sh` (as root) runs it after the suite",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Deployment:
    """The three parties and their files under one base directory (root's, 0755)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.wv = pwd.getpwnam(WV_USER)
        self.pgu = pwd.getpwnam(PG_USER)
        self.port = _free_port()
        self.passwords = {r: secrets.token_urlsafe(12) for r in ("postgres", "wv", "stream")}
        self.pg_dir = base / "pg"  # PostgreSQL's user's, 0700
        self.data = self.pg_dir / "data"
        self.wv_dir = base / "wv"  # walvault's user's, 0700: configuration and .pgpass
        self.conf = self.wv_dir / "walvault.conf"
        self.pgpass = self.wv_dir / "pgpass"
        self.home = base / "home"  # missing: a root command creates it for walvault's user
        self.log = base / "log" / "walvault" / "walvault.log"  # missing, likewise
        self.socket = base / "run" / "restore.sock"  # missing: the root-started service's
        self.restored = base / "restored" / "data"
        self.procs: list[subprocess.Popen[str]] = []

    # ------------------------------------------------------------------ running things

    def env(self, user: pwd.struct_passwd) -> list[str]:
        return [
            f"HOME={user.pw_dir}",
            f"USER={user.pw_name}",
            f"LOGNAME={user.pw_name}",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "LANG=C.UTF-8",
            "LC_ALL=C",
            f"PGPASSFILE={self.pgpass}",
            "PYTHONDONTWRITEBYTECODE=1",
        ]

    def as_user(self, user: pwd.struct_passwd | None, argv: list[str]) -> list[str]:
        """``argv`` as ``user`` (root when None), with a clean environment."""
        env = ["env", "-i", *self.env(user or pwd.getpwuid(0))]
        if user is None:
            return [*env, *argv]
        return ["runuser", "-u", user.pw_name, "--", *env, *argv]

    def run(
        self, user: pwd.struct_passwd | None, argv: list[str], timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.as_user(user, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )

    def walvault(
        self, user: pwd.struct_passwd | None, *args: str, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return self.run(user, [str(VENV_BIN / "walvault"), "-c", str(self.conf), *args], timeout)

    def spawn(self, user: pwd.struct_passwd | None, *args: str) -> subprocess.Popen[str]:
        argv = self.as_user(user, [str(VENV_BIN / "walvault"), "-c", str(self.conf), *args])
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd="/",
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def pg_ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run(self.pgu, [str(PG_BIN / "pg_ctl"), *args], timeout)

    def connect(self, user: str = "postgres", password: str | None = None) -> Any:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            dbname="postgres",
            password=password or self.passwords["postgres"],
            autocommit=True,
            connect_timeout=10,
        )

    def scalar(self, query: str) -> Any:
        with self.connect() as conn:
            row = conn.execute(query).fetchone()
            return row[0] if row else None

    # ------------------------------------------------------------------ set up

    def owned_dir(self, path: Path, user: pwd.struct_passwd, mode: int = 0o700) -> None:
        path.mkdir(parents=True)
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(mode)

    def owned_file(self, path: Path, user: pwd.struct_passwd, text: str) -> None:
        path.write_text(text)
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(0o600)

    def create_postgres(self) -> None:
        """initdb and start as PostgreSQL's user; the roles walvault's README asks for."""
        self.owned_dir(self.pg_dir, self.pgu)
        pwfile = self.pg_dir / "pwfile"
        self.owned_file(pwfile, self.pgu, self.passwords["postgres"] + "\n")
        init = self.run(
            self.pgu,
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--wal-segsize=1",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        )
        assert init.returncode == 0, init.stdout + init.stderr
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.pg_dir}'",
            "wal_level": "replica",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "fsync": "off",
            "shared_buffers": "16MB",
            "max_connections": "30",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n"
        )
        started = self.pg_ctl(
            "-D", str(self.data), "-l", str(self.pg_dir / "pg.log"), "-w", "start"
        )
        assert started.returncode == 0, started.stdout + started.stderr
        with self.connect() as conn:
            conn.execute(f"CREATE ROLE walvault LOGIN PASSWORD '{self.passwords['wv']}'")
            conn.execute("GRANT pg_monitor, pg_checkpoint TO walvault")
            conn.execute("GRANT EXECUTE ON FUNCTION pg_switch_wal() TO walvault")
            conn.execute("GRANT EXECUTE ON FUNCTION pg_create_restore_point(text) TO walvault")
            conn.execute(
                "CREATE ROLE streaming_walvault LOGIN REPLICATION "
                f"PASSWORD '{self.passwords['stream']}'"
            )
            conn.execute("CREATE TABLE acked (id int PRIMARY KEY, pad text)")

    def configure_walvault(self) -> None:
        """walvault's configuration and .pgpass, private to walvault's user; nothing of
        walvault_home, the log or the socket's directory exists yet."""
        self.owned_dir(self.wv_dir, self.wv)
        self.owned_file(
            self.pgpass,
            self.wv,
            f"127.0.0.1:{self.port}:replication:streaming_walvault:{self.passwords['stream']}\n"
            f"127.0.0.1:{self.port}:postgres:walvault:{self.passwords['wv']}\n",
        )
        self.owned_file(
            self.conf,
            self.wv,
            f"""[walvault]
walvault_user = {WV_USER}
walvault_home = {self.home}
log_file = {self.log}
log_level = DEBUG
restore_socket = {self.socket}
restore_users = {PG_USER}

[pg]
conninfo = host=127.0.0.1 port={self.port} user=walvault dbname=postgres
streaming_conninfo = host=127.0.0.1 port={self.port} user=streaming_walvault dbname=postgres
backup_method = postgres
streaming_archiver = on
streaming_archiver_synchronous = on
slot_name = walvault
create_slot = auto
archiver = off
compression = zstd
path_prefix = {PG_BIN}
""",
        )

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with_group = os.getpgid(proc.pid)
                os.killpg(with_group, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(with_group, signal.SIGKILL)
                    proc.wait()
        self.walvault(self.wv, "receive-wal", "--stop", "pg", timeout=60)
        for data in (self.restored, self.data):
            if (data / "postmaster.pid").exists():
                self.pg_ctl("-D", str(data), "stop", "-m", "immediate", timeout=60)


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    base = Path(tempfile.mkdtemp(prefix="wv-two-users-", dir="/var/tmp"))
    base.chmod(0o755)
    dep = Deployment(base)
    try:
        yield dep
    finally:
        try:
            dep.stop_all()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def wait_for(predicate: Any, what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def owner(path: Path) -> str:
    return pwd.getpwuid(path.lstat().st_uid).pw_name


def test_postgresql_and_walvault_as_two_os_users(deployment: Deployment) -> None:
    dep = deployment
    dep.create_postgres()
    dep.configure_walvault()

    # the DBA, as root: the slot.  walvault creates its log and home for walvault_user.
    made = dep.walvault(None, "receive-wal", "--create-slot", "pg")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "no password supplied" not in made.stderr
    for path in (dep.log.parent.parent, dep.log.parent, dep.log, dep.home):
        assert owner(path) == WV_USER, f"{path} belongs to {owner(path)}"
    assert dep.log.stat().st_mode & 0o777 == 0o600
    assert dep.log.parent.stat().st_mode & 0o777 == 0o700

    # walvault's user, from its crontab: cron starts the receiver (which can log)
    cron = dep.walvault(dep.wv, "cron")
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert "cannot open log_file" not in cron.stderr

    def streaming() -> bool:
        return bool(
            dep.scalar("SELECT active FROM pg_replication_slots WHERE slot_name = 'walvault'")
        )

    wait_for(streaming, "the receiver streaming on its slot")
    with dep.connect() as conn:
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'walvault_receive_wal'")
        conn.execute("SELECT pg_reload_conf()")
    wait_for(
        lambda: (
            dep.scalar(
                "SELECT sync_state FROM pg_stat_replication "
                "WHERE application_name = 'walvault_receive_wal'"
            )
            == "sync"
        ),
        "the receiver as a synchronous standby",
    )

    backup = dep.walvault(dep.wv, "backup", "--wait", "pg")
    assert backup.returncode == 0, backup.stdout + backup.stderr

    # check: OK for walvault's user, and for root; root's run does not break the log
    size_before_root = dep.log.stat().st_size
    as_root = dep.walvault(None, "check", "pg")
    assert as_root.returncode == 0, as_root.stdout + as_root.stderr
    assert owner(dep.log) == WV_USER
    checked = dep.walvault(dep.wv, "check", "pg")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "cannot" not in checked.stderr, checked.stderr
    archive = dep.walvault(dep.wv, "switch-wal", "--archive", "pg")
    assert archive.returncode == 0, archive.stdout + archive.stderr
    first = min(p.name.split(".")[0] for p in (dep.home / "pg" / "wals").glob("0*/0*"))
    sent = dep.walvault(dep.wv, "get-wal", "-o", str(dep.wv_dir), "pg", first)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "cannot open log_file" not in archive.stderr + sent.stderr
    assert dep.log.stat().st_size > size_before_root, "walvault's user logs after root did"
    assert "Sending WAL" in dep.log.read_text()[size_before_root:]

    # a write load; every commit is acknowledged only once walvault's receiver has it
    acked: list[int] = []
    with dep.connect() as conn:
        for batch in range(30):
            with conn.transaction():
                ids = range(batch * 200, batch * 200 + 200)
                conn.execute(
                    "INSERT INTO acked SELECT g, repeat('x', 300) "
                    "FROM generate_series(%s::int, %s::int) g",
                    (ids.start, ids.stop - 1),
                )
            acked += ids
            if batch % 10 == 9:
                conn.execute("SELECT pg_switch_wal()")
    killed = dep.pg_ctl("-D", str(dep.data), "stop", "-m", "immediate")
    assert killed.returncode == 0, killed.stdout + killed.stderr

    # PostgreSQL's user cannot read walvault's configuration nor its archive
    for private in (dep.conf, dep.home / "pg" / "wals"):
        denied = dep.run(dep.pgu, ["ls", str(private)])
        assert denied.returncode != 0, f"{PG_USER} can read {private}"

    # the restore service, started by root like systemd would, runs as walvault's user
    service = dep.spawn(None, "restore-service")
    wait_for(lambda: dep.socket.exists() or service.poll() is not None, "the service's socket")
    assert service.poll() is None, service.communicate()[0]
    assert owner(dep.socket.parent) == WV_USER and owner(dep.socket) == WV_USER

    # the DBA recovers for PostgreSQL's user
    dep.restored.parent.mkdir()
    recovered = dep.walvault(
        None, "recover", "--get-wal", "--recovery-owner", PG_USER, "pg", "latest", str(dep.restored)
    )
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert f"now belong to {PG_USER}" in recovered.stdout
    assert f"to {PG_USER} (uid {dep.pgu.pw_uid}), the PostgreSQL user" in dep.log.read_text()
    assert owner(dep.log) == WV_USER  # root's own line did not take the log over
    assert owner(dep.restored) == PG_USER
    assert dep.restored.stat().st_mode & 0o777 == 0o700
    strangers = [p for p in dep.restored.rglob("*") if owner(p) != PG_USER]
    assert not strangers, strangers[:5]
    auto = (dep.restored / "postgresql.auto.conf").read_text()
    assert "--service" in auto and f"-U {WV_USER}" in auto, auto

    # PostgreSQL's user starts it: no edit, no sudo
    started = dep.pg_ctl(
        "-D", str(dep.restored), "-l", str(dep.pg_dir / "restored.log"), "-w", "-t", "180", "start"
    )
    log_text = (dep.pg_dir / "restored.log").read_text(errors="replace")
    assert started.returncode == 0, started.stdout + started.stderr + log_text
    wait_for(lambda: dep.scalar("SELECT NOT pg_is_in_recovery()"), "the end of recovery")
    with dep.connect() as conn:
        rows = {row[0] for row in conn.execute("SELECT id FROM acked")}
    missing = sorted(set(acked) - rows)
    assert not missing, f"{len(missing)} acknowledged rows lost, the first {missing[:5]}"
    log_text = (dep.pg_dir / "restored.log").read_text(errors="replace")
    assert "Permission denied" not in log_text
    assert f"for {PG_USER} (uid {dep.pgu.pw_uid})" in dep.log.read_text(), "served by the service"
