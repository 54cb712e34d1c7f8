"""``get-wal``: send one WAL file of a server to stdout or a directory (for restore_command)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from walvault.cli.context import Context
from walvault.errors import ABORT_RECOVERY, WalvaultError
from walvault.wal.names import validate_wal_name

if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("walvault")


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(
        "get-wal",
        help="send a WAL file from the archive (stdout or -o DIR), decompressed on the fly",
    )
    p.add_argument("server_name")
    p.add_argument("wal_name")
    p.add_argument(
        "-o", "--output-directory", metavar="DIR", help="write DIR/<wal_name> instead of stdout"
    )
    p.add_argument(
        "-P", "--partial", action="store_true", help="also look for .partial files (streaming)"
    )
    p.add_argument(
        "-z",
        "-x",
        "--gzip",
        dest="compression",
        action="store_const",
        const="gzip",
        help="send gzip-compressed data",
    )
    p.add_argument(
        "-j",
        "--bzip2",
        dest="compression",
        action="store_const",
        const="bzip2",
        help="send bzip2-compressed data",
    )
    p.add_argument(
        "--keep-compression", action="store_true", help="send the file as stored (no decoding)"
    )
    p.add_argument(
        "-p",
        "--peek",
        type=int,
        metavar="N",
        help="list up to N available WAL names from WAL_NAME on, instead of sending",
    )
    p.add_argument("-t", "--test", action="store_true", help="only check the server is usable")
    # Every failure but "no such WAL" (1) and a malformed name (3) exits 200: restore_command
    # clients pass get-wal's status through (barman-wal-restore does), and PostgreSQL takes
    # 1-125 for "no such file" and ends the recovery.
    p.set_defaults(func=get_wal, prepare=prepare, failure_exit_code=ABORT_RECOVERY)


def prepare(ctx: Context, args: argparse.Namespace) -> None:
    """Checks made before the configuration is even read: a bad name reads nothing (exit 3)."""
    ctx.check_conninfo = False  # get-wal never connects: skip libpq's conninfo parsing
    if args.test:
        return
    validate_wal_name(args.wal_name)
    if args.keep_compression and args.compression:
        raise WalvaultError(
            f"argument `{args.compression}` not allowed with argument `keep-compression`"
        )
    if args.peek is not None and args.peek < 1:
        raise WalvaultError(f"--peek must be a positive number, not {args.peek}")


def get_wal(ctx: Context, args: argparse.Namespace) -> int:
    """Send the file (exit 0), or say it is not found (exit 1)."""
    server = ctx.server(args.server_name)  # inactive servers are fine; disabled are not
    if args.test:
        ctx.result(f"Ready to retrieve WAL files from the server {server.name}")
        return 0
    from walvault.archive import retrieve

    if args.peek is not None:
        for name in retrieve.peek(server, args.wal_name, args.peek):
            ctx.result(name)
        return 0
    found = retrieve.open_wal(server, args.wal_name, partial=args.partial, warn=ctx.warn)
    with found:
        log.info(
            "Sending WAL '%s' for server '%s' from '%s'", args.wal_name, server.name, found.path
        )
        options = {"compression": args.compression, "keep_compression": args.keep_compression}
        if args.output_directory is None:
            retrieve.send(found, sys.stdout.buffer, **options)
            return 0
        dest = os.path.join(args.output_directory, args.wal_name)
        ctx.info(f"Sending WAL '{args.wal_name}' for server '{server.name}' into '{dest}' file")
        _write_file(found, dest, options)
    return 0


def _write_file(found: Any, dest: str, options: dict[str, Any]) -> None:
    """Write ``dest`` durably (temporary file, fsync, rename, fsync of the directory)."""
    from walvault import fs
    from walvault.archive import retrieve

    def writer(handle: Any) -> None:
        retrieve.send(found, handle, **options)

    try:
        fs.durable_write_from(dest, writer)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and exc.filename != dest else ""
        raise WalvaultError(
            f"Unable to open '{dest}' file{where}: {exc.strerror}", exit_code=3
        ) from None
