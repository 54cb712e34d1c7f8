"""Acknowledgements in the archive spool: "this exact content is durable in the archive".

The archive agent (:mod:`walvault.clients.archagent`) writes ``<spool>/<WAL name>.ack``
once put-wal has answered success for a stream that carried the file: one line, ``<size>
<sha256 of the content>``, written durably (:func:`walvault.fs.durable_replace_bytes`:
temporary file, fsync, rename, fsync of the directory).  walvault-wal-archive takes an ack
(:func:`take`) only when the file PostgreSQL hands it *now* has that size and that SHA-256:
a name reused for other bytes (another cluster's or timeline's segment in the same pg_wal,
a spool restored from elsewhere) never passes for archived.  An ack that does not match, or
that is older than :data:`ACK_MAX_AGE`, is removed and the file is shipped again (put-wal
finds an identical copy already safe and answers success, or refuses a different one).

Only built-in modules and hashlib: the thin client reads acks on every call.
"""

from __future__ import annotations

import os
import sys
import time

SUFFIX = ".ack"
#: an ack older than this (seconds) is not trusted: the file is shipped again
ACK_MAX_AGE = 600.0
_CHUNK = 1 << 20


def ack_path(spool_path: str, name: str) -> str:
    """Where the ack of WAL file ``name`` lives."""
    return os.path.join(spool_path, name + SUFFIX)


def fingerprint(fd: int) -> tuple[int, str]:
    """(size, SHA-256 hex) of the open file ``fd``, read from its start."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        digest.update(chunk)
        size += len(chunk)
        offset += len(chunk)
    return size, digest.hexdigest()


def read(spool_path: str, name: str) -> tuple[int, str, float] | None:
    """(size, digest, mtime) recorded by the ack of ``name``, or None (none, unreadable,
    malformed)."""
    try:
        fd = os.open(ack_path(spool_path, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        mtime = os.fstat(fd).st_mtime
        words = os.read(fd, 200).decode("ascii", "replace").split()
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(words) != 2 or not words[0].isdigit() or len(words[1]) != 64:
        return None
    return int(words[0]), words[1], mtime


def remove(spool_path: str, name: str) -> None:
    """Delete the ack of ``name`` if there is one."""
    try:  # noqa: SIM105 - contextlib would cost the thin client its import
        os.unlink(ack_path(spool_path, name))
    except OSError:
        pass


def take(spool_path: str, name: str, wal_path: str) -> bool:
    """True when the ack of ``name`` matches the file at ``wal_path`` as it is now (the ack
    is then removed: PostgreSQL is about to mark the file done).  An ack that does not match
    or is too old is removed, with a WARNING for the former."""
    recorded = read(spool_path, name)
    if recorded is None:
        return False
    size, digest, mtime = recorded
    if time.time() - mtime > ACK_MAX_AGE:
        remove(spool_path, name)
        return False
    try:
        fd = os.open(wal_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # the shipment path says why
    try:
        now = fingerprint(fd) if os.fstat(fd).st_size == size else None
    except OSError:
        return False
    finally:
        os.close(fd)
    remove(spool_path, name)
    if now == (size, digest):
        return True
    print(
        f"WARNING: not taking the acknowledgement of '{name}' in the spool: it was for "
        "other content (same name, other bytes); sending the file",
        file=sys.stderr,
        flush=True,
    )
    return False


def write(spool_path: str, name: str, size: int, digest: str) -> None:
    """Record durably that ``name`` with this size and SHA-256 is in the archive."""
    from walvault import fs

    fs.durable_replace_bytes(ack_path(spool_path, name), f"{size} {digest}\n".encode("ascii"))


def names(spool_path: str) -> list[str]:
    """The WAL names that have an ack in the spool."""
    try:
        entries = os.listdir(spool_path)
    except OSError:
        return []
    return [e[: -len(SUFFIX)] for e in entries if e.endswith(SUFFIX) and not e.startswith(".")]
