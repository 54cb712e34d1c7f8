"""put-wal and walvault-wal-archive as the real archive_command of PostgreSQL 15 (local and ssh)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from archiving import (
    archived,
    archiving_server,
    assert_archived_identical,
    enable_archive_command,
    wait_shipped,
)
from sshharness import Sshd
from tarstream import symlink_member, tar_stream
from walsupply import catalogue_lines, copy_closed_segments
from walvault.compression import identify
from wvharness import WALVAULT, streaming_server, wait_for

BIN = os.path.dirname(sys.executable)
CLIENT = os.path.join(BIN, "walvault-wal-archive")
WALVAULT_BIN = os.path.join(BIN, "walvault")
READY = "Ready to accept WAL files for the server pg\n"


def client(wv: Any, *options: str) -> list[str]:
    """walvault-wal-archive in local mode for the server ``pg`` of ``wv``."""
    return [CLIENT, "-c", str(wv.conf), *options, "local", "pg"]


def make_segments(pg: Any, count: int) -> list[str]:
    pg.sql("CREATE TABLE IF NOT EXISTS t (i int, pad text)")
    names = []
    for i in range(count):
        pg.sql(f"INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {100 + i}) g")
        names.append(pg.switch_wal())
    return names


def visible(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def test_local_archive_command(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": archiving_server(pg, compression="zstd")})
    test = subprocess.run([*client(wv), "-t"], capture_output=True, text=True)
    assert (test.returncode, test.stdout) == (0, READY), test.stderr
    enable_archive_command(pg, client(wv))
    names = make_segments(pg, 4)
    wait_shipped(pg, names)
    incoming = wv.server().incoming_wals_directory
    assert set(names) <= set(os.listdir(incoming))
    assert [n for n in os.listdir(incoming) if n.startswith(".")] == []
    run = wv.run("archive-wal", "pg")
    assert run.returncode == 0, run.stderr
    assert_archived_identical(pg, wv, names)
    assert visible(incoming) == []


def test_archive_command_through_ssh(pg: Any, walvault_factory: Any, sshd: Sshd) -> None:
    wv = walvault_factory({"pg": archiving_server(pg)})
    argv = [
        CLIENT,
        "--ssh-command",
        sshd.ssh_command,
        "--port",
        str(sshd.port),
        "-U",
        sshd.user,
        "--walvault-command",
        WALVAULT_BIN,
        "-c",
        str(wv.conf),
        "--lz4",
        "127.0.0.1",
        "pg",
    ]
    test = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=60)
    assert (test.returncode, test.stdout) == (0, READY), test.stderr
    enable_archive_command(pg, argv)
    names = make_segments(pg, 3)
    wait_shipped(pg, names)
    incoming = wv.server().incoming_wals_directory
    for name in names:  # compressed by the client, kept as sent
        assert identify(Path(incoming, name).read_bytes()) == "lz4"
    log = (wv.home / "walvault.log").read_text()
    assert f"Received WAL file {names[0]} in put-wal for server 'pg' (SSH host: 127.0.0.1)" in log
    assert wv.run("archive-wal", "pg").returncode == 0
    assert_archived_identical(pg, wv, names)
    bad_port = [a if a != str(sshd.port) else "1" for a in argv]
    down = subprocess.run([*bad_port, "-t"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 3
    assert "ERROR: Connection problem with ssh" in down.stderr


def test_same_segment_twice_and_a_different_one(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    wv = walvault_factory({"pg": archiving_server(pg)})
    server = wv.server()
    (name,) = copy_closed_segments(pg, 1, tmp_path / "wal")
    original = tmp_path / "wal" / name
    forged = tmp_path / "forged" / name
    forged.parent.mkdir()
    data = bytearray(original.read_bytes())
    data[300_000] ^= 0xFF
    forged.write_bytes(data)

    def push(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*client(wv), str(path)], capture_output=True, text=True)

    assert push(original).returncode == 0
    assert push(original).returncode == 0  # identical: success, nothing added
    assert visible(server.incoming_wals_directory) == [name]
    refused = push(forged)
    assert refused.returncode == 1
    assert "ERROR: Duplicate Files Detected with Mismatched Checksums. " in refused.stderr
    assert "The file has been moved to the errors directory" in refused.stderr
    assert "ERROR: Local 'walvault put-wal' command has failed!" in refused.stderr
    (kept,) = os.listdir(server.errors_directory)
    assert kept.startswith(f"{name}.") and kept.endswith(".duplicate")
    assert Path(server.errors_directory, kept).read_bytes() == bytes(data)
    assert Path(server.incoming_wals_directory, name).read_bytes() == original.read_bytes()
    assert wv.run("archive-wal", "pg").returncode == 0
    assert push(original).returncode == 0  # identical to the archived copy
    again = push(forged)
    assert again.returncode == 1
    assert "An identical copy of the file is already in the errors directory" in again.stderr
    assert os.listdir(server.errors_directory) == [kept]
    assert visible(server.incoming_wals_directory) == []
    assert [line[0] for line in catalogue_lines(server)] == [name]


def test_refused_streams(pg: Any, walvault_factory: Any, tmp_path: Path) -> None:
    wv = walvault_factory({"pg": archiving_server(pg)})
    (name,) = copy_closed_segments(pg, 1, tmp_path)
    data = (tmp_path / name).read_bytes()
    env = {**os.environ, "SSH_CONNECTION": "192.0.2.7 50000 192.0.2.1 22"}
    where = "in put-wal for server 'pg' (SSH host: 192.0.2.7)"

    def put(stream: bytes) -> tuple[int, str]:
        done = subprocess.run(
            [*WALVAULT, "-c", str(wv.conf), "put-wal", "pg"],
            input=stream,
            capture_output=True,
            env=env,
        )
        return done.returncode, done.stderr.decode()

    zeros = "0" * 64
    actual = hashlib.sha256(data).hexdigest()
    cases = [
        (
            tar_stream({name: data}, sums_data=f"{zeros} *{name}\n".encode()),
            f"Bad file checksum '{actual}' (should be {zeros}) for file '{name}' {where}",
        ),
        (tar_stream({f"pg_wal/{name}": data}), f"Unsupported filename 'pg_wal/{name}' {where}"),
        (
            tar_stream({}, sums=None, extra=[symlink_member(name, "/etc/passwd")]),
            f"Unsupported file type 'symbolic link' for file '{name}' {where}",
        ),
        (tar_stream({name: data}, sums=None), f"Missing checksum for file '{name}' {where}"),
    ]
    for stream, message in cases:
        assert put(stream) == (1, f"ERROR: {message}\n")
    server = wv.server()
    Path(server.identity_path).write_text(json.dumps({"systemid": "1", "version": "15"}))
    code, err = put(tar_stream({name: data}))
    assert code == 1
    assert f"WAL file '{name}' belongs to another PostgreSQL cluster" in err
    assert os.listdir(server.incoming_wals_directory) == []
    wv.write({"pg": archiving_server(pg, active="false")})
    code, err = put(b"")
    assert (code, err) == (1, "ERROR: server 'pg' is inactive (active = false)\n")


THROTTLE = """
import subprocess, sys, time
proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE)
while chunk := sys.stdin.buffer.read1(32768):
    proc.stdin.write(chunk)
    proc.stdin.flush()
    time.sleep(0.05)
proc.stdin.close()
sys.exit(proc.wait())
"""

KILLER = """
import os, signal, subprocess, sys, time
wal = sys.argv[1]
if os.path.exists(MARKER):
    os.execv(RETRY[0], RETRY + [wal])
with open(MARKER, "w") as marker:
    marker.write(os.path.basename(wal))

def writing():
    for entry in os.listdir(INCOMING):
        try:
            if entry.startswith("." + os.path.basename(wal)) and os.path.getsize(
                os.path.join(INCOMING, entry)
            ):
                return True
        except OSError:
            pass
    return False

proc = subprocess.Popen(FIRST + [wal], start_new_session=True)
deadline = time.monotonic() + 30
while not writing() and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.005)
os.killpg(proc.pid, signal.SIGKILL)  # the client, the slow pipe and put-wal
proc.wait()
sys.exit(1)
"""


def test_killed_mid_push_then_postgresql_retries(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    wv = walvault_factory({"pg": archiving_server(pg)})
    incoming = wv.server().incoming_wals_directory
    os.makedirs(incoming)
    throttle, killer, marker = tmp_path / "throttle.py", tmp_path / "killer.py", tmp_path / "killed"
    throttle.write_text(THROTTLE)
    slow = shlex.join([sys.executable, str(throttle), WALVAULT_BIN])
    settings = {
        "MARKER": str(marker),
        "INCOMING": incoming,
        "FIRST": client(wv, "--walvault-command", slow),
        "RETRY": client(wv),
    }
    killer.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()) + KILLER)
    enable_archive_command(pg, [sys.executable, str(killer)])
    names = make_segments(pg, 2)
    wait_shipped(pg, names)
    victim = marker.read_text()
    temps = [n for n in os.listdir(incoming) if n.startswith(f".{victim}.")]
    # Normally the killed put-wal leaves its temporary file (invisible to archive-wal); on a
    # loaded machine the kill can land just after the rename, and then there is none.
    assert len(temps) <= 1, os.listdir(incoming)
    assert wv.run("archive-wal", "pg").returncode == 0
    assert victim in names
    assert_archived_identical(pg, wv, names)
    assert visible(incoming) == []
    assert not os.path.exists(wv.server().errors_directory)
    # Later put-wal runs remove the temporary file once its writer is gone long enough.
    if not temps:
        return
    stale = Path(incoming, temps[0])
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert subprocess.run([*client(wv), str(pg.wal_dir / victim)]).returncode == 0
    assert not stale.exists()


def test_streaming_and_archive_command_archive_each_segment_once(
    pg: Any, walvault_factory: Any
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, archiver="on", compression="gzip")})
    enable_archive_command(pg, client(wv))
    server = wv.server()
    try:
        assert wv.run("cron").returncode == 0
        wait_for(
            lambda: pg.scalar(
                "SELECT active FROM pg_replication_slots WHERE slot_name = 'walvault'"
            ),
            what="receiver streaming",
        )
        names = make_segments(pg, 6)
        pg.sql("INSERT INTO t VALUES (0, 'open the next segment')")
        wait_shipped(pg, names)

        def all_archived() -> bool:
            wv.run("archive-wal", "pg")
            done = all(archived(wv, n).exists() for n in names)
            return done and visible(server.incoming_wals_directory) == []

        wait_for(all_archived, timeout=90, what="every segment archived")
    finally:
        wv.run("receive-wal", "--stop", "pg")
    assert_archived_identical(pg, wv, names)
    errors = server.errors_directory
    assert not os.path.isdir(errors) or os.listdir(errors) == []


def _put_wal(wv: Any, server: str = "pg") -> subprocess.Popen[bytes]:
    """A real ``walvault put-wal`` whose stdin the test holds (and may never close)."""
    return subprocess.Popen(
        [*WALVAULT, "-c", str(wv.conf), "put-wal", server],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, str, float]:
    """Wait for put-wal to exit on its own (stdin still open); its code, stderr, the wait."""
    started = time.monotonic()
    try:
        code = proc.wait(timeout=timeout)
    finally:
        proc.kill()
        assert proc.stdin is not None and proc.stderr is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    return code, proc.stderr.read().decode(), time.monotonic() - started


def everything_in(directory: str) -> list[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_impossible_sizes_and_stalled_senders(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    wv = walvault_factory(
        {"pg": archiving_server(pg), "quick": archiving_server(pg, put_wal_timeout="2")}
    )
    (name,) = copy_closed_segments(pg, 1, tmp_path)
    # A member that declares 10 GiB under a segment's name: refused on its header, before a
    # byte of content is copied and long before the (default, 60 s) idle timeout.
    proc = _put_wal(wv)
    info = tarfile.TarInfo(name)
    info.size = 10 << 30
    assert proc.stdin is not None
    proc.stdin.write(info.tobuf(tarfile.PAX_FORMAT) + bytes(32 << 10))
    proc.stdin.flush()
    code, err, waited = _finish(proc, timeout=30)
    assert code == 1 and waited < 30
    assert err.startswith(f"ERROR: '{name}' is 10737418240 bytes long: a segment file can be at")
    assert err.count("\n") == 1
    assert everything_in(wv.server().incoming_wals_directory) == []
    # A sender that stalls mid-stream (the pipe is never closed): given up after 2 s.
    stream = tar_stream({name: (tmp_path / name).read_bytes()})
    for sent in (0, 40_000):
        proc = _put_wal(wv, "quick")
        assert proc.stdin is not None
        proc.stdin.write(stream[:sent])
        proc.stdin.flush()
        code, err, waited = _finish(proc, timeout=60)
        assert (code, err) == (
            1,
            "ERROR: no data received for 2 seconds (put_wal_timeout): the sender stalled; "
            "nothing was kept in put-wal for server 'quick'\n",
        )
        assert 2 <= waited < 30
        assert everything_in(wv.server("quick").incoming_wals_directory) == []  # no temp file
    log = (wv.home / "walvault.log").read_text()
    assert "no data received for 2 seconds" in log


def test_postgresql_history_and_backup_files_pass_and_junk_is_kept(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    wv = walvault_factory({"pg": archiving_server(pg)})
    server = wv.server()
    enable_archive_command(pg, client(wv))
    # pg_basebackup makes PostgreSQL write a backup history file, which its archiver sends
    standby = pg.make_standby(name="standby")
    (label,) = [p for p in pg.wal_dir.iterdir() if p.name.endswith(".backup")]
    wait_shipped(pg, [label.name])
    standby.promote()  # PostgreSQL writes 00000002.history
    history = standby.wal_dir / "00000002.history"
    for path in (label, history):
        pushed = subprocess.run([*client(wv), str(path)], capture_output=True, text=True)
        assert pushed.returncode == 0, pushed.stderr  # accepted (or found identical)
        assert Path(server.incoming_wals_directory, path.name).read_bytes() == path.read_bytes()
    # junk under history and backup names: refused (PostgreSQL keeps it and retries), kept
    # once in errors/, and check says so
    junk = tmp_path / "00000003.history"
    junk.write_text("3\t0/5000000\tits own timeline\n")
    tampered = tmp_path / label.name
    tampered.write_text(label.read_text().replace("START TIMELINE: 1", "START TIMELINE: 2"))
    expected = {
        junk: "'00000003.history' is not a valid WAL file for its name (not a timeline "
        "history file: line 1: parent timeline 3 is not below the file's timeline 3); "
        "it is NOT archived, a copy is kept in the errors directory (",
        tampered: f"'{label.name}' is not a valid WAL file for its name (not a backup history "
        "file: START WAL LOCATION file",
    }
    for path, message in expected.items():
        for attempt in range(2):
            refused = subprocess.run([*client(wv), str(path)], capture_output=True, text=True)
            assert refused.returncode == 1
            lines = refused.stderr.splitlines()
            assert lines[0].startswith("ERROR: " + (message if attempt == 0 else ""))
            assert lines[1] == "ERROR: Local 'walvault put-wal' command has failed!"
            assert attempt == 0 or "an identical copy is already in the errors" in lines[0]
    kept = everything_in(server.errors_directory)
    assert [n.split(".")[-1] for n in kept] == ["invalid", "invalid"]
    check = wv.run("check", "pg")
    assert "\tarchiver errors: FAILED (invalid content: 2)" in check.stdout.splitlines()
    assert wv.run("archive-wal", "pg").returncode == 0
    wals = Path(server.wals_directory)
    assert (wals / history.name).exists() and (wals / label.name[:16] / label.name).exists()
