"""walvault-wal-archive: command lines, exit codes, and the stream it sends (local and ssh)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from walsupply import segment_name, synthetic_segment
from walvault.clients import walarchive
from walvault.compression import decompress_bytes
from walvault.config import ServerConfig, load_config

NAME = segment_name(1, 5)
SEGMENT = synthetic_segment(NAME)
WALVAULT = f"{sys.executable} -m walvault.cli.main"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "walvault.conf"
    path.write_text(
        f"[walvault]\nwalvault_home = {tmp_path / 'home'}\n\n"
        "[pg]\nconninfo = host=localhost\narchiver = on\n"
    )
    return path


@pytest.fixture
def wal(tmp_path: Path) -> Path:
    path = tmp_path / "pg_wal" / NAME
    path.parent.mkdir()
    path.write_bytes(SEGMENT)
    return path


def _server(conf: Path) -> ServerConfig:
    return load_config(str(conf), check_conninfo=False).servers["pg"]


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _args(*argv: str) -> Any:
    return walarchive.build_parser().parse_args(list(argv))


def test_ssh_command_line() -> None:
    args = _args("-U", "barman", "--port", "2222", "-c", "/etc/my conf", "bk", "pg", "p/" + NAME)
    assert walarchive.build_command(args) == [
        "ssh",
        "-p",
        "2222",
        "-q",
        "-T",
        "barman@bk",
        "walvault '-c' '/etc/my conf' 'put-wal' 'pg'",
    ]
    args = _args("-t", "--ssh-command", "ssh -i '/k ey'", "--walvault-command", "/o/w", "h", "p")
    assert walarchive.build_command(args) == [
        "ssh",
        "-i",
        "/k ey",
        "-q",
        "-T",
        "walvault@h",
        "/o/w 'put-wal' 'p' '--test'",
    ]


def test_local_command_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    args = _args("-c", "/etc/w.conf", "local", "pg", NAME)
    beside = _script(tmp_path, "walvault", "exit 0\n")
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "walvault-wal-archive")])
    assert walarchive.build_command(args) == [beside, "-c", "/etc/w.conf", "put-wal", "pg"]
    monkeypatch.setattr(sys, "argv", ["/nowhere/walvault-wal-archive"])
    assert walarchive.build_command(args)[0] == "walvault"
    args = _args("--walvault-command", "sudo -u walvault walvault", "local", "pg", NAME)
    assert walarchive.build_command(args)[:4] == ["sudo", "-u", "walvault", "walvault"]


@pytest.mark.parametrize(
    ("host", "code", "expected", "message"),
    [
        ("bk", 0, 0, None),
        ("bk", 1, 1, "Remote 'walvault put-wal' command has failed!"),
        ("bk", 255, 3, "Connection problem with ssh"),
        ("bk", 127, 2, "Remote 'walvault put-wal' command has failed!"),
        ("local", 255, 2, "Local 'walvault put-wal' command has failed!"),
        ("local", -9, 2, "'walvault put-wal' was killed by signal 9"),
    ],
)
def test_exit_codes(
    capsys: pytest.CaptureFixture[str], host: str, code: int, expected: int, message: str | None
) -> None:
    assert walarchive.result(_args(host, "pg", NAME), code) == expected
    err = capsys.readouterr().err
    assert (f"ERROR: {message}\n" in err) if message else err == ""


@pytest.mark.parametrize(
    ("options", "algorithm"), [([], None), (["--md5", "--zstd"], "zstd"), (["-j"], "bzip2")]
)
def test_local_mode_lands_the_file(
    conf: Path, wal: Path, options: list[str], algorithm: str | None
) -> None:
    argv = [*options, "-c", str(conf), "--walvault-command", WALVAULT, "local", "pg", str(wal)]
    assert walarchive.main(argv) == 0
    landed = Path(_server(conf).incoming_wals_directory, NAME)
    assert decompress_bytes(algorithm, landed.read_bytes()) == SEGMENT
    assert landed.stat().st_mtime == int(wal.stat().st_mtime)


def test_test_mode_and_refusals(conf: Path, wal: Path, capfd: pytest.CaptureFixture[str]) -> None:
    base = ["-c", str(conf), "--walvault-command", WALVAULT]
    assert walarchive.main([*base, "-t", "local", "pg"]) == 0
    assert capfd.readouterr().out == "Ready to accept WAL files for the server pg\n"
    assert walarchive.main([*base, "local", "nosuch", str(wal)]) == 1
    assert "unknown server 'nosuch'" in capfd.readouterr().err
    assert walarchive.main([*base, "local", "pg", str(wal.parent)]) == 2
    assert f"WAL_PATH cannot be a directory: {wal.parent}" in capfd.readouterr().err
    assert walarchive.main([*base, "local", "pg", str(wal) + "x"]) == 2
    assert "(WAL_PATH): No such file or directory" in capfd.readouterr().err
    with pytest.raises(SystemExit) as caught:
        walarchive.main([*base, "local", "pg"])
    assert caught.value.code == 2


def test_receivers_that_stop_reading_or_die(tmp_path: Path, wal: Path) -> None:
    quits = _script(tmp_path, "quits", "exit 1\n")
    killed = _script(tmp_path, "killed", "kill -9 $$\n")
    assert walarchive.main(["--walvault-command", quits, "local", "pg", str(wal)]) == 1
    assert walarchive.main(["--walvault-command", killed, "local", "pg", str(wal)]) == 2
    missing = str(tmp_path / "missing")
    assert walarchive.main(["--walvault-command", missing, "local", "pg", str(wal)]) == 2


def test_through_a_fake_ssh(
    tmp_path: Path, conf: Path, wal: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Drops the ssh options and runs the remote command with a shell, as sshd would.
    ssh = _script(
        tmp_path,
        "ssh",
        'while [ "$1" != "-T" ]; do shift; done\n'
        'export SSH_CONNECTION="192.0.2.7 4000 192.0.2.1 22"\n'
        'exec sh -c "$3"\n',
    )
    base = ["--ssh-command", ssh, "--walvault-command", WALVAULT, "-c", str(conf), "bk", "pg"]
    assert walarchive.main([*base, str(wal)]) == 0
    assert Path(_server(conf).incoming_wals_directory, NAME).read_bytes() == SEGMENT
    other = tmp_path / NAME
    other.write_bytes(synthetic_segment(NAME, filler=b"other"))
    assert walarchive.main([*base, str(other)]) == 1
    err = capfd.readouterr().err
    assert "Duplicate Files Detected with Mismatched Checksums" in err
    assert "(SSH host: 192.0.2.7)" in err
    assert "ERROR: Remote 'walvault put-wal' command has failed!" in err
    unreachable = _script(tmp_path, "unreachable", "exit 255\n")
    assert walarchive.main(["--ssh-command", unreachable, "bk", "pg", str(wal)]) == 3
    assert os.listdir(_server(conf).errors_directory) != []
