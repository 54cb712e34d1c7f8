"""The restore service's wire protocol (import-free: the restore client loads it per segment).

One request per connection on a Unix stream socket, in ASCII lines:

* ``TEST <server>``: may this peer use the server?  (``walvault-wal-restore -t``)
* ``FETCH <server> <WAL name> <0|1: also the streamed .partial>``, sent with exactly one
  file descriptor (``SCM_RIGHTS``): the destination, opened for writing by the client.

The service never opens a path the client names: it writes the verified WAL into the
descriptor it was given, so PostgreSQL's user keeps its own files and walvault's user its
archive.  The answer is zero or more ``LOG <text>`` lines (messages for PostgreSQL's log) and
one ``EXIT <restore_command status>`` (0 written, 1 not in the archive, 200 anything else) --
the restore agent's answer format (:mod:`walvault.clients.agent`).
"""

from __future__ import annotations

#: the longest request line accepted (server names are at most 64, WAL names 40 characters)
MAX_REQUEST = 256
FETCH, TEST = "FETCH", "TEST"
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class RequestError(ValueError):
    """A request line that is not one of the two forms."""


def fetch_request(server: str, name: str, *, partial: bool) -> bytes:
    """The ``FETCH`` line."""
    return f"{FETCH} {server} {name} {1 if partial else 0}\n".encode("ascii", "replace")


def test_request(server: str) -> bytes:
    """The ``TEST`` line."""
    return f"{TEST} {server}\n".encode("ascii", "replace")


def parse_request(line: bytes) -> tuple[str, str, str | None, bool]:
    """``(verb, server, name or None, partial)``; RequestError for anything else.

    Only the characters of server and WAL names pass (the service validates both strictly
    again before using them).
    """
    if len(line) > MAX_REQUEST or not line.endswith(b"\n"):
        raise RequestError("the request is not one line of at most 256 bytes")
    try:
        words = line[:-1].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise RequestError("the request is not ASCII") from None
    if any(not word or not set(word) <= _SAFE for word in words):
        raise RequestError("the request holds characters no server or WAL name has")
    if words[0] == TEST and len(words) == 2:
        return TEST, words[1], None, False
    if words[0] == FETCH and len(words) == 4 and words[3] in ("0", "1"):
        return FETCH, words[1], words[2], words[3] == "1"
    raise RequestError(f"unknown request '{words[0]}' (accepted: {FETCH}, {TEST})")


def reply(lines: list[str], code: int) -> bytes:
    """The answer: ``LOG`` lines, then ``EXIT <code>``."""
    text = "".join(f"LOG {line}\n" for line in lines) + f"EXIT {code}\n"
    return text.encode("utf-8", "replace")
