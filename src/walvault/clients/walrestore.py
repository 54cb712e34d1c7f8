"""walvault-wal-restore: PostgreSQL's restore_command, fetching WAL from walvault (ssh or local).

    restore_command = 'walvault-wal-restore -P -c /etc/walvault.conf local pg %f %p'
    restore_command = 'walvault-wal-restore -P -p 4 -U walvault backuphost pg %f %p'

WALVAULT_HOST ``local`` reads the archive on this host in-process (no ssh, no second
interpreter); any other value runs ``walvault get-wal`` there over ssh.  Exit codes, for
PostgreSQL: 0 restored, 1 not found (end of recovery), 2 could not ask (connection,
configuration, I/O, interrupted), 3 bad arguments.  Never a status above 125 or a death by
signal for an ordinary failure: PostgreSQL would abort the recovery.

Start-up is kept lean (the restore_command runs once per segment): the configuration is
read only in local mode when the spool cannot answer, and psycopg is never imported.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from walvault import __version__

if TYPE_CHECKING:
    from walvault.clients.spool import Spool
    from walvault.clients.transport import Source

DEFAULT_USER = "walvault"
DEFAULT_SPOOL_DIR = "/var/tmp/walrestore"
CONNECTION = 2


def build_parser() -> argparse.ArgumentParser:
    """The command line, option for option like barman-wal-restore (plus --ssh-command)."""
    p = argparse.ArgumentParser(
        prog="walvault-wal-restore",
        description="Fetch a WAL file from walvault for PostgreSQL's restore_command. "
        "WALVAULT_HOST 'local' reads the archive on this host without ssh.",
    )
    p.add_argument("-V", "--version", action="version", version=f"walvault {__version__}")
    p.add_argument(
        "-U", "--user", default=DEFAULT_USER, help=f"ssh user (default: {DEFAULT_USER})"
    )
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
    p.add_argument("-t", "--test", action="store_true", help="test the connection and exit")
    p.add_argument("walvault_host", metavar="WALVAULT_HOST", help="ssh host, or 'local'")
    p.add_argument("server_name", metavar="SERVER_NAME")
    p.add_argument("wal_name", metavar="WAL_NAME", help="%%f")
    p.add_argument("wal_dest", metavar="WAL_DEST", help="%%p")
    return p


def make_source(args: argparse.Namespace) -> Source:
    """Local (in-process) or ssh, from WALVAULT_HOST."""
    from walvault.clients.transport import LOCAL_HOST, LocalSource, SshSource

    if args.walvault_host == LOCAL_HOST:
        return LocalSource(args.config)
    return SshSource(
        args.walvault_host,
        user=args.user,
        port=args.port,
        config=args.config,
        ssh_command=args.ssh_command,
        compression=args.compression,
    )


def _open_spool(args: argparse.Namespace, source: Source) -> Spool | None:
    from walvault.clients.spool import Spool, SpoolError, spool_key

    try:
        return Spool(args.spool_dir, spool_key(args.server_name, source.label))
    except (SpoolError, OSError) as exc:
        print(f"WARNING: prefetch disabled: {exc}", file=sys.stderr, flush=True)
        return None


def restore(args: argparse.Namespace) -> int:
    """Bring WAL_NAME to WAL_DEST: from the spool when possible, else from the source."""
    from walvault.clients.transport import BAD_ARGS, OK, error
    from walvault.errors import InvalidWalName
    from walvault.wal.names import is_segment, validate_wal_name

    source = make_source(args)
    if args.compression:
        print("WARNING: -z/-j are deprecated", file=sys.stderr, flush=True)
    if args.test:
        return source.test(args.server_name)
    if os.path.isdir(args.wal_dest):
        error(f"WAL_DEST cannot be a directory: {args.wal_dest}")
        return BAD_ARGS
    try:
        name = validate_wal_name(args.wal_name)
    except InvalidWalName as exc:
        error(exc.message)
        return BAD_ARGS
    spool = _open_spool(args, source) if args.parallel > 0 and is_segment(name) else None
    if spool is not None:
        state = spool.take(name, args.wal_dest)
        if state is not None:
            _note_progress(spool, name, state.system_identifier, state.segment_size)
            return OK
    code = source.fetch(args.server_name, name, args.wal_dest, partial=args.partial)
    if code == OK and spool is not None:
        fresh = spool.record(name, args.wal_dest)
        if fresh is not None:
            _note_progress(spool, name, fresh.system_identifier, fresh.segment_size)
            from walvault.clients import prefetch

            prefetch.start(spool, source, args.server_name, args.parallel)
    return code


def _note_progress(spool: Spool, name: str, sysid: int, seg_size: int) -> None:
    """Tell the prefetcher where recovery is (a failure only costs prefetching)."""
    from walvault.clients.spool import SpoolState

    try:
        spool.write_state(SpoolState(name, sysid, seg_size))
    except OSError as exc:
        print(f"WARNING: cannot update the spool state: {exc}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code for PostgreSQL."""
    args = build_parser().parse_args(argv)
    try:
        code = restore(args)
    except KeyboardInterrupt:
        code = CONNECTION
    except Exception as exc:  # PostgreSQL must see 2, never a traceback's status
        print(f"ERROR: unexpected {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        code = CONNECTION
    if code != 0 and args.sleep > 0:
        time.sleep(args.sleep)
    return code


if __name__ == "__main__":
    sys.exit(main())
