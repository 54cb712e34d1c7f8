"""``stream-wal``: the remote end of the restore agent's ssh session (many files, one process).

Run by ``walvault-wal-restore``'s agent as ``ssh ... walvault stream-wal SERVER``; speaks
:mod:`walvault.clients.streamwire` on stdin/stdout.  Each file goes through the archive's one
verified read path (:func:`walvault.archive.retrieve.open_wal`, ``verified_pieces``), exactly as
``get-wal`` sends it; a file found corrupt while being sent ends its answer with ``ERROR`` so
the client discards it.  Warnings go to stderr (the agent relays them to its log).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, BinaryIO

from walvault.cli.context import Context
from walvault.errors import ABORT_RECOVERY, WalvaultError

if TYPE_CHECKING:
    from typing import Any

    from walvault.config import ServerConfig

log = logging.getLogger("walvault")


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(
        "stream-wal",
        help="serve WAL files to walvault-wal-restore's agent over one ssh session",
    )
    p.add_argument("server_name")
    p.set_defaults(func=stream_wal, prepare=prepare, failure_exit_code=ABORT_RECOVERY)


def prepare(ctx: Context, args: argparse.Namespace) -> None:
    ctx.check_conninfo = False  # never connects to PostgreSQL


def stream_wal(ctx: Context, args: argparse.Namespace) -> int:
    """Answer requests until the client closes stdin (exit 0)."""
    from walvault.clients.streamwire import GREETING, WireError, read_line

    server = ctx.server(args.server_name)  # inactive servers are fine; disabled are not
    out, inp = sys.stdout.buffer, sys.stdin.buffer
    out.write(GREETING)
    out.flush()
    while True:
        try:
            request = read_line(inp)
        except WireError:
            return 0  # the agent is done (or gone)
        words = request.split(b" ")
        if len(words) != 3 or words[0] != b"GET" or words[2] not in (b"0", b"1"):
            _answer(out, b"ERROR", "bad request (accepted: GET <wal name> <0|1>)")
            return 2
        _serve(ctx, server, out, words[1].decode("ascii", "replace"), words[2] == b"1")


def _answer(out: BinaryIO, kind: bytes, message: str) -> None:
    from walvault.clients.streamwire import one_line

    out.write(kind + b" " + one_line(message) + b"\n")
    out.flush()


def _serve(ctx: Context, server: ServerConfig, out: BinaryIO, name: str, partial: bool) -> None:
    from walvault.archive import retrieve
    from walvault.clients.streamwire import write_chunk

    try:
        found = retrieve.open_wal(server, name, partial=partial, warn=ctx.warn)
    except retrieve.WalNotFound as exc:
        _answer(out, b"NOTFOUND", exc.message)
        return
    except WalvaultError as exc:
        _answer(out, b"ERROR", exc.message)
        return
    with found:
        log.info("Streaming WAL '%s' for server '%s' from '%s'", name, server.name, found.path)
        out.write(b"DATA\n")
        try:
            for piece in retrieve.verified_pieces(found):
                write_chunk(out, piece)
        except WalvaultError as exc:
            out.write(b"0\n")
            _answer(out, b"ERROR", exc.message)
            return
        out.write(b"0\nOK\n")
        out.flush()
