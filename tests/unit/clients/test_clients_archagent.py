"""The archive agent and walvault-wal-archive's thin client, as real processes.

Every call runs the installed ``walvault-wal-archive`` the way PostgreSQL does (from the data
directory, ``%p`` relative), and the agent runs the real ``walvault put-wal`` locally into a
real walvault home; the segments are synthetic (a long page header that matches the name).
PostgreSQL's side is played by the tests: ``archive_status/<name>.ready`` files, renamed to
``.done`` after a call exits 0.  tests/integration/test_archive_agent.py does the same with
PostgreSQL itself, locally and over ssh.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakewal import python_stdout
from walsupply import SYSID, segment_name, synthetic_segment
from walvault.archive import putwal
from walvault.clients import acks, archagent, walarchive, walstream
from walvault.clients.spool import spool_key
from walvault.compression import decompress_bytes
from walvault.config import load_config

BIN = Path(sys.executable).parent
CLIENT = str(BIN / "walvault-wal-archive")
NAMES = [segment_name(1, n) for n in range(3, 10)]


class Cluster:
    """A pg_wal as PostgreSQL keeps it, a walvault home, and the client's command line."""

    def __init__(self, tmp: Path, *options: str) -> None:
        self.data = tmp / "data"
        self.status = self.data / "pg_wal" / "archive_status"
        self.status.mkdir(parents=True)
        self.conf = tmp / "walvault.conf"
        self.conf.write_text(
            f"[walvault]\nwalvault_home = {tmp / 'home'}\n\n"
            "[pg]\nconninfo = host=localhost\narchiver = on\n"
        )
        self.server = load_config(str(self.conf), check_conninfo=False).servers["pg"]
        self.spool_root = tmp / "spool"
        pg_wal = str(self.data / "pg_wal")
        key = spool_key("pg", "local", str(self.conf), pg_wal, role="archive@")
        self.spool = self.spool_root / key
        self.argv = [CLIENT, "--spool-dir", str(self.spool_root), "-c", str(self.conf), *options]

    def segment(self, name: str, data: bytes | None = None, ready: bool = True) -> bytes:
        data = synthetic_segment(name) if data is None else data
        (self.data / "pg_wal" / name).write_bytes(data)
        if ready:
            (self.status / f"{name}.ready").touch()
        return data

    def archive(self, name: str, *options: str) -> subprocess.CompletedProcess[str]:
        """One archive_command call, as PostgreSQL makes it (``.ready`` -> ``.done`` on 0)."""
        argv = [*self.argv, *options, "local", "pg", f"pg_wal/{name}"]
        done = subprocess.run(argv, cwd=self.data, capture_output=True, text=True, timeout=120)
        ready = self.status / f"{name}.ready"
        if done.returncode == 0 and ready.exists():
            ready.rename(self.status / f"{name}.done")
        return done

    def incoming(self, name: str) -> Path:
        return Path(self.server.incoming_wals_directory, name)

    def agent_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.spool / archagent.LOCK).read_text())
        return None

    def log(self) -> str:
        return (self.spool / archagent.LOG).read_text()

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        pid = self.agent_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), sig)  # its own session: its put-wal runs too


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, "-p", "2", "--zstd")
    yield made
    made.stop_agent()


def _wait(predicate: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_agent_ships_ahead_in_batches_and_every_call_takes_its_ack(cluster: Cluster) -> None:
    contents = {name: cluster.segment(name) for name in NAMES}
    first = cluster.archive(NAMES[0])
    assert first.returncode == 0, first.stderr
    # the agent looked ahead in archive_status: the other files are shipped and acked
    _wait(lambda: all((cluster.spool / f"{n}.ack").exists() for n in NAMES[1:]), "acks")
    for name in NAMES[1:]:
        size, digest, _ = acks.read(str(cluster.spool), name) or (0, "", 0)
        assert (size, digest) == (len(contents[name]), hashlib.sha256(contents[name]).hexdigest())
        assert decompress_bytes("zstd", cluster.incoming(name).read_bytes()) == contents[name]
    put_wal_runs = cluster.log().count("shipped ")
    for name in NAMES[1:]:
        done = cluster.archive(name)
        assert done.returncode == 0, done.stderr
        assert not (cluster.spool / f"{name}.ack").exists()  # taken
    log = cluster.log()
    assert log.count("shipped ") == put_wal_runs  # every later call was answered by its ack
    batched = [line for line in log.splitlines() if "shipped " in line and ", " in line]
    assert batched, log  # several files in one put-wal stream
    assert "up to 2 put-wal at a time" in log
    for name in NAMES:
        assert decompress_bytes("zstd", cluster.incoming(name).read_bytes()) == contents[name]


def test_an_ack_for_other_bytes_is_never_taken(cluster: Cluster) -> None:
    name, other = NAMES[0], NAMES[1]
    original = cluster.segment(name)
    assert cluster.archive(name).returncode == 0
    # the same name with other bytes, and an ack that matches the first content
    forged = cluster.segment(name, synthetic_segment(name, filler=b"other bytes"))
    assert forged != original
    acks.write(str(cluster.spool), name, len(original), hashlib.sha256(original).hexdigest())
    refused = cluster.archive(name)
    assert refused.returncode == 1
    assert "it was for other content (same name, other bytes)" in refused.stderr
    assert "Duplicate Files Detected with Mismatched Checksums" in refused.stderr
    assert "ERROR: Local 'walvault put-wal' command has failed!" in refused.stderr
    assert not (cluster.spool / f"{name}.ack").exists()
    assert decompress_bytes("zstd", cluster.incoming(name).read_bytes()) == original
    # a matching ack is taken without asking anyone: no put-wal can run for this call
    data = cluster.segment(other, ready=False)
    acks.write(str(cluster.spool), other, len(data), hashlib.sha256(data).hexdigest())
    taken = cluster.archive(other, "--walvault-command", "/nonexistent/walvault")
    assert taken.returncode == 0, taken.stderr
    assert not (cluster.spool / f"{other}.ack").exists()
    assert not cluster.incoming(other).exists()


def test_a_refusing_put_wal_is_reported_and_nothing_is_acked(cluster: Cluster) -> None:
    identity = Path(cluster.server.identity_path)
    identity.parent.mkdir(parents=True, exist_ok=True)
    identity.write_text(json.dumps({"systemid": str(SYSID + 1), "version": "15"}))
    for name in NAMES[:3]:
        cluster.segment(name)
    refused = cluster.archive(NAMES[0])
    assert refused.returncode == 1
    assert f"WAL file '{NAMES[0]}' belongs to another PostgreSQL cluster" in refused.stderr
    assert refused.stderr.rstrip().endswith("Local 'walvault put-wal' command has failed!")
    _wait(lambda: cluster.log().count("exit 1") >= 2, "the lookahead's attempts")
    assert acks.names(str(cluster.spool)) == []
    assert not os.path.exists(cluster.server.incoming_wals_directory) or not [
        n for n in os.listdir(cluster.server.incoming_wals_directory) if not n.startswith(".")
    ]
    assert (cluster.status / f"{NAMES[0]}.ready").exists()


def test_a_killed_agent_is_replaced_and_acks_only_what_put_wal_took(cluster: Cluster) -> None:
    cluster.segment(NAMES[0])
    assert cluster.archive(NAMES[0]).returncode == 0
    pid = cluster.agent_pid()
    assert pid is not None
    cluster.stop_agent(signal.SIGKILL)
    _wait(lambda: _gone(pid), "the agent's death")
    cluster.segment(NAMES[1])
    again = cluster.archive(NAMES[1])  # a stale socket, no listener: a new agent
    assert again.returncode == 0, again.stderr
    assert cluster.agent_pid() not in (None, pid)
    assert cluster.incoming(NAMES[1]).exists()


def test_no_usable_spool_ships_in_process(tmp_path: Path) -> None:
    made = Cluster(tmp_path)
    made.spool_root.write_text("not a directory")
    made.segment(NAMES[0])
    done = made.archive(NAMES[0])
    assert done.returncode == 0, done.stderr
    assert "WARNING: archive agent disabled: spool directory" in done.stderr
    assert "is not a directory" in done.stderr
    assert made.incoming(NAMES[0]).read_bytes() == synthetic_segment(NAMES[0])


def test_a_call_answered_from_the_spool_or_the_agent_imports_nothing_heavy(
    cluster: Cluster,
) -> None:
    for name in NAMES[:3]:
        cluster.segment(name)
    assert cluster.archive(NAMES[0]).returncode == 0  # starts the agent
    _wait(lambda: (cluster.spool / f"{NAMES[1]}.ack").exists(), "an ack")
    heavy = {"re", "typing", "dataclasses", "enum", "json", "configparser", "zstandard"}
    heavy |= {"argparse", "logging", "socket", "subprocess", "threading", "tarfile"}
    for name in NAMES[1:3]:
        (cluster.spool / f"{NAMES[2]}.ack").unlink(missing_ok=True)  # the agent answers it
        argv = [*cluster.argv[1:], "local", "pg", str(cluster.data / "pg_wal" / name)]
        code = (
            "import sys\nfrom walvault.clients import walarchive\n"
            f"code = walarchive.main({argv!r})\nprint(code, sorted(sys.modules))\n"
        )
        status, loaded = python_stdout(code).split(" ", 1)
        modules = set(ast.literal_eval(loaded))
        assert int(status) == 0
        assert not modules & heavy, (name, modules & heavy)
        assert not any(m.startswith(("walvault.config", "walvault.archive")) for m in modules)


def test_the_agent_refuses_malformed_requests(cluster: Cluster) -> None:
    sender = archagent.Sender(["false"], walstream.Options(), local=True)
    agent = archagent.ArchiveAgent(str(cluster.spool_root), sender, str(cluster.data), 1)
    cases = {
        b"FETCH x y\n": "malformed request",
        b"ARCHIVE ../../etc/passwd /etc/passwd\n": "is not a valid WAL file name",
        f"ARCHIVE {NAMES[0]} pg_wal/{NAMES[0]}\n".encode(): "not an absolute path",
        f"ARCHIVE {NAMES[0]} /x/{NAMES[1]}\n".encode(): "not an absolute path",
    }
    for request, message in cases.items():
        code, lines = agent.answer(request)
        assert code == 2 and message in lines[0], (request, lines)


def test_acks_nobody_will_take_are_removed(cluster: Cluster) -> None:
    spool = str(cluster.spool)
    cluster.spool.mkdir(parents=True)
    fresh, done, recycled, old = NAMES[:4]
    for name in (fresh, old):
        (cluster.status / f"{name}.ready").touch()
    (cluster.status / f"{done}.done").touch()
    for name in (fresh, done, recycled, old):
        acks.write(spool, name, 1, "0" * 64)
    stamp = time.time() - acks.ACK_MAX_AGE - 60
    os.utime(acks.ack_path(spool, old), (stamp, stamp))
    sender = archagent.Sender(["false"], walstream.Options(), local=True)
    archagent.ArchiveAgent(spool, sender, str(cluster.data / "pg_wal"), 1)._clean_acks()
    assert acks.names(spool) == [fresh]
    # and a call does not take an ack that is too old, even one that matches
    data = cluster.segment(old)
    acks.write(spool, old, len(data), hashlib.sha256(data).hexdigest())
    os.utime(acks.ack_path(spool, old), (stamp, stamp))
    assert not acks.take(spool, old, str(cluster.data / "pg_wal" / old))
    assert acks.names(spool) == [fresh]


def test_batches_fit_what_put_wal_takes_in_one_stream() -> None:
    assert min(putwal.STREAM_SEGMENTS, putwal.MAX_WAL_FILES) >= archagent.BATCH_MAX


@pytest.mark.parametrize(
    "argv",
    [
        ["local", "pg", "pg_wal/x"],
        ["-c", "/etc/w.conf", "--spool-dir", "/s", "-p", "4", "local", "pg", "x"],
        ["-U", "barman", "--port", "2222", "--zstd", "--compression-level", "3", "h", "pg", "x"],
        ["--md5", "-j", "--ssh-command", "ssh -i k", "h", "pg", "x", "--walvault-command=/w"],
        ["-p4", "--parallel=2", "-Ubob", "-t", "h", "pg", "x"],
    ],
)
def test_fast_parse_agrees_with_argparse(argv: list[str]) -> None:
    fast = walarchive.fast_parse(argv)
    assert fast is not None
    assert vars(fast) == vars(walarchive.build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["-h"],
        ["--version"],
        ["-t", "h", "pg"],
        ["-z", "-j", "h", "pg", "x"],
        ["--gzip", "--zstd", "h", "pg", "x"],
        ["-p", "x", "h", "pg", "x"],
        ["h", "pg", "x", "y"],
    ],
)
def test_fast_parse_leaves_the_unusual_to_argparse(argv: list[str]) -> None:
    assert walarchive.fast_parse(argv) is None
