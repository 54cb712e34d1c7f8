"""The wire of ``walvault stream-wal``: many WAL files over one ssh session, import-free.

The restore agent fetching over ssh pays, per file, for an ssh session and a new remote
interpreter running ``walvault get-wal`` (~0.1-0.3 s, most of a serial call).  Instead it
keeps one ``ssh ... walvault stream-wal SERVER`` running per fetching thread and asks it for
file after file.  Both directions are lines of ASCII, then raw bytes:

* the server greets once: ``WALVAULT-STREAM 1`` (anything else -- Barman on the other end, an
  older walvault -- and the client falls back to one ``get-wal`` per file);
* a request is ``GET <name> <0|1>`` (1: also look for ``.partial`` files, get-wal's ``-P``);
* the answer is ``NOTFOUND <message>`` (get-wal's exit 1, the only answer that may end a
  recovery), ``ERROR <message>`` (anything else: exit 200 for restore_command), or
  ``DATA`` followed by chunks ``<hex length>\\n<bytes>``, a ``0`` chunk, then ``OK`` or
  ``ERROR <message>`` (a file found corrupt while it was sent: the client discards what it
  wrote, as it does for get-wal's non-zero exit).

Names are validated by the server as get-wal validates them; messages are one line.
"""

from __future__ import annotations

from typing import IO

GREETING = b"WALVAULT-STREAM 1\n"
MAX_LINE = 4096
MAX_CHUNK = 1 << 24


class WireError(Exception):
    """The other side broke the protocol or went away."""


def read_line(stream: IO[bytes]) -> bytes:
    """One line without its newline; WireError at the end of the stream or on a long line."""
    line = stream.readline(MAX_LINE + 1)
    if not line.endswith(b"\n"):
        raise WireError("the stream ended" if not line else "a line too long")
    return line[:-1]


def write_chunk(out: IO[bytes], data: bytes | memoryview) -> None:
    out.write(b"%x\n" % len(data))
    out.write(data)


def read_chunks(stream: IO[bytes], write: object) -> None:
    """Copy every chunk of a ``DATA`` answer through ``write(bytes)`` until the ``0`` chunk."""
    while True:
        head = read_line(stream)
        try:
            size = int(head, 16)
        except ValueError:
            raise WireError(f"not a chunk length: {head[:40]!r}") from None
        if size == 0:
            return
        if not 0 < size <= MAX_CHUNK:
            raise WireError(f"a chunk of {size} bytes")
        data = stream.read(size)
        if len(data) != size:
            raise WireError("the stream ended inside a chunk")
        write(data)  # type: ignore[operator]


def one_line(text: str) -> bytes:
    """A message for the wire: one line, ASCII-safe."""
    return " ".join(text.split()).encode("utf-8", "replace")[: MAX_LINE - 16]
