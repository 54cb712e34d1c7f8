"""Faults seen from the command line: one ``ERROR:`` line naming the path and the errno, never a
traceback; a log file that cannot be written says so once; duplicate configuration lines."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

import pytest

from fakewal import write_config
from walvault.cli import main as cli_main
from walvault.cli.context import LogFile

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def record(text: str) -> logging.LogRecord:
    return logging.LogRecord("walvault", logging.INFO, __file__, 1, text, None, None)


def test_a_new_log_file_is_private_and_an_existing_one_keeps_its_mode(tmp_path: Path) -> None:
    """Before: walvault.log was created 0644 though it holds hosts, paths and errors."""
    old = os.umask(0o022)
    try:
        handler = LogFile(str(tmp_path / "new.log"))
        handler.emit(record("hello"))
        handler.close()
        assert stat.S_IMODE(os.stat(tmp_path / "new.log").st_mode) == 0o600
        shared = tmp_path / "shared.log"
        shared.write_text("")
        shared.chmod(0o640)
        handler = LogFile(str(shared))
        handler.emit(record("hello"))
        handler.close()
        assert stat.S_IMODE(os.stat(shared).st_mode) == 0o640
        assert shared.read_text() == "hello\n"
    finally:
        os.umask(old)


def test_a_full_log_disk_is_said_once_never_as_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: logging printed '--- Logging error ---' and a traceback for every record; and
    a record the kernel took only in part was glued to the next one."""
    path = tmp_path / "walvault.log"
    handler = LogFile(str(path))
    real_write = os.write
    calls = {"n": 0}

    def full_disk(fd: int, data: bytes | memoryview) -> int:
        if fd != handler._fd:
            return real_write(fd, data)
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:4])  # the kernel takes a piece, then...
        if calls["n"] <= 4:
            raise ENOSPC
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    for text in ("first record", "second", "third", "fourth"):
        handler.emit(record(text))
    handler.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Logging error" not in err and "Traceback" not in err
    assert err.startswith(f"WARNING: cannot write to log_file '{path}' (No space left on device")
    assert "(ENOSPC)" in err and "log lines are lost" in err
    assert path.read_text() == "firs\nfourth\n"  # the torn piece stays on its own line


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device", "/srv/walvault/pg/wals/x"),
        PermissionError(errno.EACCES, "Permission denied", "/srv/walvault/pg/streaming"),
    ],
)
def test_an_os_error_is_one_error_line_with_the_path_and_errno(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: OSError,
) -> None:
    """Before: 'ERROR: unexpected OSError: [Errno 28] ...' and a traceback in the log."""
    conf = write_config(tmp_path / "home")

    def broken(*_args: object, **_kwargs: object) -> None:
        raise exc

    monkeypatch.setattr("walvault.archive.archiver.archive_wal", broken)
    code = cli_main.main(["-c", str(conf), "archive-wal", "pg"])
    err = capsys.readouterr().err
    name = errno.errorcode[exc.errno or 0]
    assert code == 1
    assert err == f"ERROR: {exc.filename}: {exc.strerror} ({name})\n"


def test_get_wal_reads_an_os_error_as_could_not_ask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 from get-wal means "no such WAL" to PostgreSQL: an I/O error is 200 (stop)."""
    conf = write_config(tmp_path / "home")

    def broken(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error", "/srv/x")

    monkeypatch.setattr("walvault.cli.get_wal.get_wal", broken)
    assert cli_main.main(["-c", str(conf), "get-wal", "pg", "000000010000000000000001"]) == 200
    assert capsys.readouterr().err == "ERROR: /srv/x: Input/output error (EIO)\n"


def test_cron_names_a_failing_server_in_an_error_line_even_with_q(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_config(tmp_path / "home")

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/srv/home/pg/x.json")

    monkeypatch.setattr("walvault.supervise.cron.cron_server", full)
    assert cli_main.main(["-q", "-c", str(conf), "cron"]) == 1
    assert capsys.readouterr().err == (
        "ERROR: Unable to run cron on server 'pg': /srv/home/pg/x.json: No space left on "
        "device (ENOSPC)\n"
    )


def test_list_backups_names_a_junk_backup_info_instead_of_hiding_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a junk backup.info made its backup vanish from list-backups without a word."""
    from walvault.backup import info as binfo
    from walvault.config import load_config

    conf = write_config(tmp_path / "home")
    server = load_config(str(conf)).servers["pg"]
    binfo.save(server, binfo.BackupInfo("20261120T000000", "pg", status=binfo.DONE))
    junk = Path(binfo.info_path(server, "20261121T000000"))
    junk.write_bytes(b"\x00garbage")
    assert cli_main.main(["-c", str(conf), "list-backups", "pg"]) == 0
    out, err = capsys.readouterr()
    assert out.count("20261120T000000") == 1 and "20261121T000000" not in out
    assert err == f"WARNING: backup not listed: {junk}: malformed: line 1 is not 'key=value'\n"
