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
#: archive_command exit codes besides 0 (archived) and put-wal's own failure code (1),
#: passed through: SEND_FAILED, the file could not be sent (unreadable, a program that does
#: not run, a receiver killed, interrupted); CONNECTION, ssh could not connect (its 255).
#: Never above 125: PostgreSQL's archiver takes those, like a signal, as fatal.
SEND_FAILED, CONNECTION = 2, 3
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


#: how long an agent's shared ssh master connection outlives its last use (seconds)
SHARE_PERSIST = 60


def chooses_own_master(ssh_command: str) -> bool:
    """True when the ``--ssh-command`` already sets ControlPath/ControlMaster: the user's
    choice wins over an agent's shared connection."""
    lowered = ssh_command.lower()
    return "controlpath" in lowered or "controlmaster" in lowered


def master_options(control_path: str) -> list[str]:
    """The ssh options that send every session through one OpenSSH master connection at
    ``control_path`` (started by the first session, kept :data:`SHARE_PERSIST` seconds)."""
    return [
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={control_path}",
        "-o",
        f"ControlPersist={SHARE_PERSIST}",
    ]


def stop_master(ssh: list[str], user: str, host: str, port: str | None) -> None:
    """Ask the master connection that ``ssh`` (with :func:`master_options`) uses to exit."""
    import contextlib
    import subprocess

    argv = [*ssh, "-O", "exit"]
    if port:
        argv += ["-p", str(port)]
    argv.append(f"{user}@{host}")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
