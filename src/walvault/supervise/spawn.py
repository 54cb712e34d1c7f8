"""Starting walvault sub-commands detached from the caller (cron's background workers)."""

from __future__ import annotations

import subprocess
import sys
import time

from walvault import locks


def spawn_walvault(config_path: str, *args: str) -> subprocess.Popen[bytes]:
    """Start ``walvault -c CONFIG -q ARGS`` in its own session, detached from our terminal.

    Its output is not kept here: walvault logs to ``log_file`` and receive-wal keeps its
    evidence in the server's state file.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "walvault.cli.main", "-c", config_path, "-q", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
    )


def wait_for_lock_or_exit(
    proc: subprocess.Popen[bytes], lock_dir: str, server: str, task: str, timeout: float = 15.0
) -> bool:
    """Wait until ``proc`` holds the task's lock (True) or has exited (False).

    cron holds its own lock meanwhile, so a second cron cannot start a second worker in the
    window between our spawn and the worker taking its lock.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if locks.lock_holder(lock_dir, server, task) == proc.pid:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return proc.poll() is None
