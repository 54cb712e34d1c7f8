"""What walvault-wal-archive and walvault-wal-restore share: WALVAULT_HOST, ssh, messages.

Free of imports: both clients run once per WAL segment and keep their start-up lean.
"""

from __future__ import annotations

import sys

from walvault.errors import ABORT_RECOVERY

#: WALVAULT_HOST that means "this host, no ssh".
LOCAL_HOST = "local"
#: ssh's own exit status for a connection problem.
SSH_FAILED = 255
#: restore_command exit codes.  OK: WAL_DEST written.  NOT_FOUND: the archive answered that
#: it has no such file -- PostgreSQL then ends recovery (or, as a standby, retries later).
#: ABORT: every other outcome (could not ask, unreadable or wrong content, bad arguments or
#: configuration): above 125, so PostgreSQL stops instead of promoting a server that lacks
#: WAL; started again once the fault is repaired, it resumes the recovery.
OK, NOT_FOUND, ABORT = 0, 1, ABORT_RECOVERY
#: What get-wal (walvault's or Barman's) prints on stderr, with exit 1, when it has no such
#: file: over ssh or a command, exit 1 alone may come from ssh, sudo or a broken install.
NOT_FOUND_MESSAGE = "not found in server"


def error(message: str) -> None:
    """One ``ERROR:`` line on stderr (PostgreSQL copies it into its log)."""
    print(f"ERROR: {message}", file=sys.stderr, flush=True)


def warning(message: str) -> None:
    """One ``WARNING:`` line on stderr."""
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def quote(arg: str) -> str:
    """Quote one argument for the remote POSIX shell."""
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def ssh_argv(
    ssh: list[str], user: str, host: str, port: str | None, remote: list[str]
) -> list[str]:
    """``<ssh> [-p PORT] -q -T USER@HOST '<remote words joined>'``: everything after the
    destination is one command line for the remote shell (``remote`` is already quoted)."""
    argv = [*ssh]
    if port:
        argv += ["-p", str(port)]
    argv += ["-q", "-T", f"{user}@{host}"]
    return [*argv, " ".join(remote)]


def source_label(host: str, user: str, port: str | None) -> str:
    """How a WAL source is named (spool keys, messages): ``local`` or ``user@host[:port]``."""
    if host == LOCAL_HOST:
        return LOCAL_HOST
    return f"{user}@{host}" + (f":{port}" if port else "")
