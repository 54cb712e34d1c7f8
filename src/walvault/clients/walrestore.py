"""walvault-wal-restore: PostgreSQL's restore_command, fetching WAL from walvault (ssh or local).

    restore_command = 'walvault-wal-restore -P -c /etc/walvault.conf local pg %f %p'
    restore_command = 'walvault-wal-restore -P -p 4 -U walvault backuphost pg %f %p'

WALVAULT_HOST ``local`` reads the archive on this host in-process (no ssh, no second
interpreter), asks walvault's restore service with ``--service SOCKET`` (PostgreSQL and
walvault as two OS users: :class:`walvault.clients.transport.ServiceSource`), or runs
``--walvault-command`` when given; any other value runs ``walvault get-wal`` there over ssh.
Exit codes, for PostgreSQL (clients/common.py): 0 restored; 1 only when the archive answered
that it has no such file (PostgreSQL then ends recovery); 200 for every other outcome --
could not ask, unreadable, corrupt or wrong content, bad arguments, configuration,
interrupted -- which makes PostgreSQL stop instead of promoting a server that lacks WAL
(started again once the fault is repaired, it resumes). A standby (``standby.signal`` in
PostgreSQL's data directory, the command's working directory) gets 1 instead of 200: a
standby never promotes on its own, and retries the archive after a few seconds rather than
shutting down.

Start-up is kept lean (the restore_command runs once per segment).  A segment served from
the prefetch spool imports only built-in modules (os, sys, struct, fcntl, errno, stat) and
this package's import-free modules (~2 ms over the interpreter's own start); the
configuration, the archive code and the codecs are imported only when the segment has to
be fetched; psycopg never is.
"""

from __future__ import annotations

import os
import sys
import time  # already loaded by the interpreter at start-up

from walvault import __version__
from walvault.clients.common import (
    ABORT,
    LOCAL_HOST,
    NOT_FOUND,
    OK,
    error,
    source_label,
    warning,
)

# ``typing`` costs ~5 ms (it imports re): mypy reads this name as typing.TYPE_CHECKING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import NoReturn

    from walvault.clients.fastargs import OptionTable
    from walvault.clients.spool import Spool
    from walvault.clients.transport import Source

DEFAULT_USER = "walvault"
DEFAULT_SPOOL_DIR = "/var/tmp/walrestore"


def build_parser() -> argparse.ArgumentParser:
    """The command line, option for option like barman-wal-restore (plus --ssh-command).

    A usage error exits 200, not argparse's 2: a mistyped restore_command must stop the
    recovery, not end it.
    """
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            self.print_usage(sys.stderr)
            self.exit(ABORT, f"ERROR: {self.prog}: {message}\n")

    p = Parser(
        prog="walvault-wal-restore",
        description="Fetch a WAL file from walvault for PostgreSQL's restore_command. "
        "WALVAULT_HOST 'local' reads the archive on this host without ssh.",
    )
    p.add_argument("-V", "--version", action="version", version=f"walvault {__version__}")
    p.add_argument("-U", "--user", default=DEFAULT_USER, help=f"ssh user (default: {DEFAULT_USER})")
    p.add_argument("--port", help="ssh port")
    p.add_argument(
        "-s", "--sleep", type=int, default=0, metavar="SECONDS", help="sleep before a failure exit"
    )
    p.add_argument(
        "-p",
        "--parallel",
        type=int,
        default=0,
        metavar="N",
        help="keep up to N segments prefetched ahead in the spool (0: no prefetch)",
    )
    p.add_argument(
        "--spool-dir",
        default=DEFAULT_SPOOL_DIR,
        metavar="DIR",
        help=f"prefetch spool (default: {DEFAULT_SPOOL_DIR})",
    )
    p.add_argument(
        "-P", "--partial", action="store_true", help="also serve the streamed .partial segment"
    )
    p.add_argument(
        "-z",
        "--gzip",
        dest="compression",
        action="store_const",
        const="gzip",
        help="deprecated: gzip the data on the wire (ssh only)",
    )
    p.add_argument(
        "-j",
        "--bzip2",
        dest="compression",
        action="store_const",
        const="bzip2",
        help="deprecated: bzip2 the data on the wire (ssh only)",
    )
    p.add_argument("-c", "--config", metavar="CONFIG", help="walvault configuration file")
    p.add_argument(
        "--ssh-command", default="ssh", metavar="CMD", help="ssh program and options (default: ssh)"
    )
    p.add_argument(
        "--walvault-command",
        metavar="CMD",
        help="the walvault program to run (remotely, or locally instead of in-process)",
    )
    p.add_argument(
        "--service",
        metavar="SOCKET",
        help="with WALVAULT_HOST 'local': ask walvault's restore service at SOCKET, run by "
        "the walvault user (-U), instead of reading the archive as this user",
    )
    p.add_argument(
        "--no-agent",
        dest="agent",
        action="store_false",
        help="fetch in this process: no restore agent, no prefetch",
    )
    p.add_argument("-t", "--test", action="store_true", help="test the connection and exit")
    p.add_argument("walvault_host", metavar="WALVAULT_HOST", help="ssh host, or 'local'")
    p.add_argument("server_name", metavar="SERVER_NAME")
    p.add_argument("wal_name", metavar="WAL_NAME", help="%%f")
    p.add_argument("wal_dest", metavar="WAL_DEST", help="%%p")
    return p


_FAST_OPTIONS: OptionTable = {
    "-U": ("user", str, None),
    "--user": ("user", str, None),
    "--port": ("port", str, None),
    "-s": ("sleep", int, None),
    "--sleep": ("sleep", int, None),
    "-p": ("parallel", int, None),
    "--parallel": ("parallel", int, None),
    "--spool-dir": ("spool_dir", str, None),
    "-P": ("partial", None, True),
    "--partial": ("partial", None, True),
    "-z": ("compression", None, "gzip"),
    "--gzip": ("compression", None, "gzip"),
    "-j": ("compression", None, "bzip2"),
    "--bzip2": ("compression", None, "bzip2"),
    "-c": ("config", str, None),
    "--config": ("config", str, None),
    "--ssh-command": ("ssh_command", str, None),
    "--walvault-command": ("walvault_command", str, None),
    "--service": ("service", str, None),
    "-t": ("test", None, True),
    "--test": ("test", None, True),
    "--no-agent": ("agent", None, False),
}
_DEFAULTS: dict[str, object] = {
    "user": DEFAULT_USER,
    "port": None,
    "sleep": 0,
    "parallel": 0,
    "spool_dir": DEFAULT_SPOOL_DIR,
    "partial": False,
    "compression": None,
    "config": None,
    "ssh_command": "ssh",
    "walvault_command": None,
    "service": None,
    "agent": True,
    "test": False,
}
_POSITIONALS = ("walvault_host", "server_name", "wal_name", "wal_dest")


def fast_parse(argv: Sequence[str]) -> argparse.Namespace | None:
    """The common command lines parsed without argparse (None: let argparse parse it)."""
    from walvault.clients.fastargs import fast_parse as parse

    return parse(argv, _FAST_OPTIONS, _DEFAULTS, _POSITIONALS)


def make_source(args: argparse.Namespace) -> Source:
    """In-process, the restore service, a local walvault command, or ssh, from WALVAULT_HOST."""
    from walvault.clients.transport import CommandSource, LocalSource, ServiceSource, SshSource

    if args.walvault_host == LOCAL_HOST:
        if args.service:
            return ServiceSource(args.service, args.user)
        if args.walvault_command:
            return CommandSource(config=args.config, walvault_command=args.walvault_command)
        return LocalSource(args.config)
    return SshSource(
        args.walvault_host,
        user=args.user,
        port=args.port,
        config=args.config,
        ssh_command=args.ssh_command,
        walvault_command=args.walvault_command,
        compression=args.compression,
    )


def _open_spool(args: argparse.Namespace) -> Spool | None:
    from walvault.clients.spool import Spool, SpoolError, spool_key

    label = source_label(args.walvault_host, args.user, args.port)
    try:
        return Spool(args.spool_dir, spool_key(args.server_name, label, args.config))
    except (SpoolError, OSError) as exc:
        warning(f"restore agent and prefetch disabled: {exc}")
        return None


def restore(args: argparse.Namespace) -> int:
    """Bring WAL_NAME to WAL_DEST: from the spool, else through the restore agent (started
    by the first call that finds none), else -- no agent can run -- in-process.

    The spool and the agent are tried before anything heavy is imported: a spool hit costs
    a rename and a few system calls, an agent's answer a socket round trip.
    """
    from walvault.clients.agentclient import plain_name
    from walvault.wal.pagecheck import is_segment_name

    if args.compression:
        warning("-z/-j are deprecated")
    if args.service and args.walvault_host != LOCAL_HOST:
        error("--service asks the restore service on this host: WALVAULT_HOST must be 'local'")
        return ABORT
    if args.test:
        return make_source(args).test(args.server_name)
    if os.path.isdir(args.wal_dest):
        error(f"WAL_DEST cannot be a directory: {args.wal_dest}")
        return ABORT
    name = args.wal_name
    dest = os.path.abspath(args.wal_dest)  # the agent does not share our working directory
    spool = _open_spool(args) if args.agent and plain_name(name) else None
    if spool is not None:
        if args.parallel > 0 and is_segment_name(name):
            current = spool.read_state()
            if current is not None:  # first: the agent's window moves past this segment
                _note_progress(spool, name, current.system_identifier, current.segment_size)
            if spool.take(name, dest) is not None:
                return OK
        code = _through_agent(spool, args, name, dest)
        if code is not None:
            return code
    from walvault.errors import InvalidWalName
    from walvault.wal.names import validate_wal_name

    try:
        validate_wal_name(name)
    except InvalidWalName as exc:
        error(exc.message)
        return ABORT
    return make_source(args).fetch(args.server_name, name, dest, partial=args.partial)


def _through_agent(spool: Spool, args: argparse.Namespace, name: str, dest: str) -> int | None:
    """The agent's answer for ``name`` (starting the agent when none runs), or None."""
    from walvault.clients.agentclient import ask_starting

    def start() -> None:
        from walvault.clients import agent

        agent.start(spool, make_source(args), args.server_name, args.parallel)

    code = ask_starting(spool.path, f"FETCH {name} {1 if args.partial else 0} {dest}", start)
    if code is None:
        warning("the restore agent did not answer: fetching this segment in-process")
    return code


def _note_progress(spool: Spool, name: str, sysid: int, seg_size: int) -> None:
    """Tell the agent where recovery is (a failure only costs prefetching)."""
    from walvault.clients.spool import SpoolState

    try:
        spool.write_state(SpoolState(name, sysid, seg_size))
    except OSError as exc:
        warning(f"cannot update the spool state: {exc}")


#: Present in PostgreSQL's data directory (restore_command's working directory) when it
#: runs as a standby.
STANDBY_SIGNAL = "standby.signal"


def for_postgresql(code: int) -> int:
    """The status to give PostgreSQL for a restore that ended with ``code``.

    A standby retries a failed restore_command after a few seconds and never promotes by
    itself, so for it an abort (which would shut it down) becomes "not yet available".
    """
    if code == ABORT and os.path.exists(STANDBY_SIGNAL):
        warning("PostgreSQL runs as a standby here: reporting 'not available' so it retries")
        return NOT_FOUND
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code for PostgreSQL."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = fast_parse(arguments) or build_parser().parse_args(arguments)
    try:
        code = restore(args)
    except KeyboardInterrupt:
        error("interrupted")
        code = ABORT
    except Exception as exc:  # PostgreSQL must see 200, never a traceback's status
        error(f"unexpected {type(exc).__name__}: {exc}")
        code = ABORT
    code = for_postgresql(code)
    if code != 0 and args.sleep > 0:
        time.sleep(args.sleep)
    return code


if __name__ == "__main__":
    sys.exit(main())
