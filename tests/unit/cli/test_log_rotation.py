"""log_file follows logrotate: a moved or deleted file is reopened at the next record."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from walvault.cli.context import LogFile, reopen_logs_on_sighup


def _record(text: str) -> logging.LogRecord:
    return logging.LogRecord("walvault", logging.INFO, __file__, 1, text, None, None)


def test_a_rotated_log_is_reopened_at_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "walvault.log"
    handler = LogFile(str(path))
    try:
        handler.emit(_record("before"))
        path.rename(tmp_path / "walvault.log.1")  # logrotate's default: move, then create
        handler.emit(_record("after"))
        assert (tmp_path / "walvault.log.1").read_text() == "before\n"
        assert path.read_text() == "after\n"
        assert path.stat().st_mode & 0o777 == 0o600
        path.unlink()  # deleted: created again
        handler.emit(_record("again"))
        assert path.read_text() == "again\n"
    finally:
        handler.close()


def test_a_rotation_that_left_no_file_is_followed_into_logrotates_new_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "walvault.log"
    handler = LogFile(str(path))
    try:
        path.rename(tmp_path / "old")
        path.write_text("")  # logrotate 'create 0640 walvault adm' makes its own
        path.chmod(0o640)
        handler.emit(_record("into the new one"))
        assert path.read_text() == "into the new one\n"
        assert path.stat().st_mode & 0o777 == 0o640  # logrotate's mode is kept
        assert (tmp_path / "old").read_text() == ""
    finally:
        handler.close()


def test_sighup_reopens_in_a_detached_process(tmp_path: Path) -> None:
    """Without a terminal (stdio on /dev/null, as cron's detached receive-wal), SIGHUP asks
    every log_file handler to reopen at its next record; at a terminal it is not installed."""
    path = tmp_path / "walvault.log"
    handler = LogFile(str(path))
    logger = logging.getLogger("walvault")
    logger.addHandler(handler)
    pid = os.fork()
    if pid == 0:  # the child has no terminal: stdio to files
        code = 1
        try:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            import sys

            sys.stdin = open(os.devnull)  # noqa: SIM115
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115
            if reopen_logs_on_sighup():
                os.kill(os.getpid(), signal.SIGHUP)
                code = 0 if handler._reopen else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    logger.removeHandler(handler)
    handler.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_root_process_gives_a_log_it_creates_to_walvault_user(tmp_path: Path) -> None:
    """``owner`` only matters to root; anyone else creates its own file as before."""
    handler = LogFile(str(tmp_path / "x.log"), owner=(os.getuid(), os.getgid()))
    try:
        handler.emit(_record("line"))
        assert (tmp_path / "x.log").stat().st_uid == os.getuid()
    finally:
        handler.close()
