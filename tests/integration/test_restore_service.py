"""The restore service answers walvault-wal-restore --service over its Unix socket.

Here the service and the client run as the same OS user (the test user): what crosses users
(PostgreSQL's user asking, walvault's user answering) is proven by tests/deploy, run as root.
What these tests pin: the WAL written into the descriptor the client passes is the archive's
segment byte for byte, through the verified read path; "not in the archive" is 1 and every
other failure 200; -t; prefetch through the client's restore agent; a socket served by
another user than -U names is never asked; requests without exactly one writable regular
file descriptor are refused.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from walsupply import stream_segments
from walvault.clients.spool import spool_key
from wvharness import stop_process, streaming_server, wait_for

CLIENT = str(Path(sys.executable).parent / "walvault-wal-restore")


@pytest.fixture
def served(pg: Any, walvault_factory: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An archive of 3 segments (and the .partial after them) and its running service."""
    wv = walvault_factory({"pg": streaming_server(pg, compression="zstd")})
    names = stream_segments(pg, tmp_path / "streamed", 3)
    streaming = Path(wv.server("pg").streaming_wals_directory)
    streaming.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(tmp_path / "streamed"):
        shutil.copy2(tmp_path / "streamed" / name, streaming / name)
    run = wv.run("archive-wal", "pg")
    assert run.returncode == 0, run.stdout + run.stderr
    sock = tmp_path / "run" / "restore.sock"
    proc = wv.spawn("restore-service", "--socket", str(sock))
    wait_for(lambda: sock.exists() or proc.poll() is not None, what="the service's socket")
    assert proc.poll() is None, proc.communicate()
    try:
        yield {"wv": wv, "names": names, "socket": sock, "streamed": tmp_path / "streamed"}
    finally:
        stop_process(proc)


def restore(
    sock: Path, *args: str, user: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [CLIENT, "-U", user or getpass.getuser(), "--service", str(sock), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd)


def test_segments_come_through_the_service(served: dict[str, Any], tmp_path: Path) -> None:
    sock, names, streamed = served["socket"], served["names"], served["streamed"]
    spool = str(tmp_path / "spool")
    ready = restore(sock, "-t", "local", "pg", "DUMMY", "DUMMY")
    assert ready.returncode == 0, ready.stderr
    assert "Ready to retrieve WAL files from the server pg" in ready.stdout

    dest = tmp_path / "RECOVERYXLOG"
    first = restore(sock, "--no-agent", "local", "pg", names[0], str(dest))
    assert first.returncode == 0, first.stderr
    assert dest.read_bytes() == (streamed / names[0]).read_bytes()

    # the client's restore agent asks the service too, and prefetches through it (-p 2)
    got = restore(sock, "--spool-dir", spool, "-p", "2", "local", "pg", names[1], str(dest))
    assert got.returncode == 0, got.stderr
    assert dest.read_bytes() == (streamed / names[1]).read_bytes()
    spooled = Path(spool, spool_key("pg", "local"), names[2])
    wait_for(lambda: spooled.exists(), what="the next segment prefetched through the service")
    assert spooled.read_bytes() == (streamed / names[2]).read_bytes()

    # -P: the streamed .partial stands in for the next segment (RPO 0)
    (partial,) = [n for n in os.listdir(streamed) if n.endswith(".partial")]
    tail = restore(sock, "--no-agent", "-P", "local", "pg", partial[:24], str(dest))
    assert tail.returncode == 0, tail.stderr
    assert dest.read_bytes() == (streamed / partial).read_bytes()

    absent = f"{names[0][:16]}000000F0"
    missing = restore(sock, "--no-agent", "local", "pg", absent, str(dest))
    assert missing.returncode == 1, missing.stderr  # PostgreSQL's "no such file": end of WAL
    assert f"WAL file '{absent}' not found in server 'pg'" in missing.stderr
    assert not dest.exists()  # a failed fetch leaves no WAL_DEST

    # PostgreSQL probes the next timeline's history at the end of every recovery: no ERROR
    probe = restore(sock, "--no-agent", "local", "pg", "00000002.history", str(dest))
    assert probe.returncode == 1, probe.stderr
    assert "ERROR" not in probe.stderr and "not found in server 'pg'" in probe.stderr

    unknown = restore(sock, "--no-agent", "local", "nosuch", names[0], str(dest))
    assert unknown.returncode == 200, unknown.stderr
    assert "unknown server 'nosuch'" in unknown.stderr


def test_a_corrupt_segment_is_200_and_leaves_nothing(
    served: dict[str, Any], tmp_path: Path
) -> None:
    wv, sock, names = served["wv"], served["socket"], served["names"]
    stored = next(Path(wv.server("pg").wals_directory).rglob(names[2] + "*"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    dest = tmp_path / "RECOVERYXLOG"
    bad = restore(sock, "--no-agent", "local", "pg", names[2], str(dest))
    assert bad.returncode == 200, bad.stderr
    assert names[2] in bad.stderr
    assert not dest.exists()


def test_no_service_or_another_users_service_is_200(served: dict[str, Any], tmp_path: Path) -> None:
    sock, names = served["socket"], served["names"]
    dest = tmp_path / "RECOVERYXLOG"
    nobody = restore(tmp_path / "none.sock", "--no-agent", "local", "pg", names[0], str(dest))
    assert nobody.returncode == 200
    assert "no restore service answers at" in nobody.stderr
    # -U names the user the service must run as: this one runs as the test user, not root
    wrong = restore(sock, "--no-agent", "local", "pg", names[0], str(dest), user="root")
    assert wrong.returncode == 200
    assert "not by the walvault user 'root'" in wrong.stderr
    assert not dest.exists()


def _raw(sock: Path, request: bytes, fds: list[int]) -> str:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(sock))
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
    client.sendmsg([request], rights if fds else [])
    answer = b""
    while chunk := client.recv(4096):
        answer += chunk
    client.close()
    return answer.decode()


def test_requests_need_one_writable_regular_file(served: dict[str, Any], tmp_path: Path) -> None:
    sock, names = served["socket"], served["names"]
    request = f"FETCH pg {names[0]} 0\n".encode()
    assert "takes one descriptor, not 0" in _raw(sock, request, [])
    target = tmp_path / "target"
    target.write_bytes(b"")
    with open(target, "rb") as read_only:
        answer = _raw(sock, request, [read_only.fileno()])
    assert "not open for writing" in answer and answer.endswith("EXIT 200\n")
    assert target.read_bytes() == b""
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert "not a regular file" in _raw(sock, request, [directory])
    finally:
        os.close(directory)
    assert "malformed request" in _raw(sock, b"FETCH pg ../../etc/passwd 0\n", [])
    with open(target, "wb") as one, open(tmp_path / "two", "wb") as two:
        assert "takes one descriptor, not 2" in _raw(sock, request, [one.fileno(), two.fileno()])
    with open(target, "wb") as writable:
        answer = _raw(sock, request, [writable.fileno()])
    assert answer == "EXIT 0\n"
    assert target.stat().st_size == served["streamed"].joinpath(names[0]).stat().st_size


def test_a_second_service_on_the_same_socket_is_refused(
    served: dict[str, Any], tmp_path: Path
) -> None:
    second = served["wv"].run("restore-service", "--socket", str(served["socket"]))
    assert second.returncode == 1
    assert "a restore service already answers at" in second.stderr
    start = time.monotonic()
    ready = restore(served["socket"], "-t", "local", "pg", "DUMMY", "DUMMY")
    assert ready.returncode == 0, ready.stderr  # the first one still serves
    assert time.monotonic() - start < 30


def test_systemd_socket_activation(served: dict[str, Any], tmp_path: Path) -> None:
    """contrib/walvault-restore.socket: systemd binds the socket and starts the service with
    it as descriptor 3 (LISTEN_PID, LISTEN_FDS); the service serves it and unlinks nothing."""
    wv, names = served["wv"], served["names"]
    path = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    command = [sys.executable, "-m", "walvault.cli.main", "-c", str(wv.conf), "restore-service"]
    script = 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"'
    fd = listener.fileno()
    proc = subprocess.Popen(
        ["/bin/sh", "-c", script, "sh", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        close_fds=False,
        preexec_fn=lambda: os.dup2(fd, 3),
    )
    try:
        dest = tmp_path / "RECOVERYXLOG"

        def answered() -> subprocess.CompletedProcess[str] | None:
            done = restore(path, "--no-agent", "local", "pg", names[0], str(dest))
            return done if done.returncode == 0 or proc.poll() is not None else None

        got = wait_for(answered, what="the activated service answering")
        assert got.returncode == 0, (got.stderr, proc.poll())
        assert dest.read_bytes() == (served["streamed"] / names[0]).read_bytes()
    finally:
        stop_process(proc)
        listener.close()
    assert path.exists()  # systemd's socket: the service leaves it in place
    out = proc.stdout.read() if proc.stdout else ""
    assert "listening on the socket systemd passed" in out, out
