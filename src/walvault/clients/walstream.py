"""The put-wal tar stream of one or more WAL files, and sending it to a put-wal command.

The stream is Barman's: each WAL file under its base name (compressed first with
``-z/-j/--xz/--zstd/--lz4``), then ``SHA256SUMS`` (``MD5SUMS`` with ``--md5``) with one
``<hex> *<name>`` line per file over the bytes actually sent, then the end of the archive.
walvault-wal-archive sends one file per stream; its archive agent up to
:data:`walvault.clients.archagent.BATCH_MAX` (put-wal, walvault's and Barman's, takes
several and answers for the stream as a whole).

While a file is sent, the SHA-256 of its content as read from pg_wal (before compression)
is computed too: :class:`Sent` is what an acknowledgement (:mod:`walvault.clients.acks`)
records, so that only that exact content can later be taken as archived.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO, BinaryIO

from walvault.clients.common import CONNECTION, SEND_FAILED, SSH_FAILED

#: a compressed payload larger than this is spooled to a temporary file, not kept in memory
MEMORY_SPOOL_MAX = 64 << 20
_CHUNK = 1 << 20
_BLOCK = 512  # tar block


class Options:
    """How the files are sent: the codec and level (None: as they are), MD5SUMS or not."""

    def __init__(
        self, compression: str | None = None, level: str | None = None, md5: bool = False
    ) -> None:
        self.compression = compression
        self.level = level
        self.md5 = md5


class Sent:
    """One file as it was put into the stream: its name, size and content digest."""

    __slots__ = ("name", "sha256", "size")

    def __init__(self, name: str, size: int, sha256: str) -> None:
        self.name, self.size, self.sha256 = name, size, sha256


def exit_status(code: int, local: bool) -> tuple[int, str | None]:
    """archive_command's status for the receiver's exit status, and the line to print."""
    if code == 0:
        return 0, None
    if code == SSH_FAILED and not local:
        return CONNECTION, "Connection problem with ssh"
    if code < 0:
        return SEND_FAILED, f"'walvault put-wal' was killed by signal {-code}"
    where = "Local" if local else "Remote"
    return (code if code <= 125 else SEND_FAILED), f"{where} 'walvault put-wal' command has failed!"


class _HashingReader:
    """A file read through ``readinto``/``read`` with every byte hashed on the way (what
    the compressor reads is what the digest covers)."""

    def __init__(self, handle: io.BufferedReader, digest: hashlib._Hash) -> None:
        self._handle = handle
        self._digest = digest
        self.name = handle.name
        self.count = 0

    def seekable(self) -> bool:
        return self._handle.seekable()

    def tell(self) -> int:
        return self._handle.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def readinto(self, buffer: memoryview) -> int:
        count = self._handle.readinto(buffer)
        self._digest.update(buffer[:count])
        self.count += count
        return count

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._digest.update(data)
        self.count += len(data)
        return data


def _payload(
    options: Options, handle: io.BufferedReader, raw: hashlib._Hash
) -> tuple[BinaryIO, int, int] | None:
    """The compressed bytes to send for the open WAL file, their size and the size of the
    content they hold (``raw`` gets the content's digest); None when the file is sent as
    it is."""
    if options.compression is None:
        return None
    from typing import cast

    from walvault.compression import compress_stream

    size = os.fstat(handle.fileno()).st_size
    if size <= MEMORY_SPOOL_MAX:
        spool: BinaryIO = io.BytesIO()
    else:
        import tempfile

        spool = tempfile.TemporaryFile()  # noqa: SIM115 (returned open)
    reader = _HashingReader(handle, raw)
    written = compress_stream(options.compression, options.level, cast("BinaryIO", reader), spool)
    spool.seek(0)
    return spool, written, reader.count


def _header(name: str, size: int, mtime: float) -> bytes:
    """The PAX header block(s) of a regular member (tarfile's encoder)."""
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o600
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return bytes(-size % _BLOCK)


def _write_member(
    options: Options, path: str, handle: io.BufferedReader, out: IO[bytes], sums: list[str]
) -> Sent:
    """One WAL file's header and data; its checksum line goes to ``sums``."""
    name = os.path.basename(path)
    info = os.fstat(handle.fileno())
    sums_digest = hashlib.new("md5" if options.md5 else "sha256", usedforsecurity=False)
    raw = sums_digest if not options.md5 and options.compression is None else hashlib.sha256()
    compressed = _payload(options, handle, raw)
    payload, size, raw_size = compressed or (handle, info.st_size, info.st_size)
    out.write(_header(name, size, info.st_mtime))
    left = size
    while left:
        chunk = payload.read(min(_CHUNK, left))
        if not chunk:
            raise OSError(f"'{path}' became shorter while it was being sent")
        sums_digest.update(chunk)
        if raw is not sums_digest and compressed is None:
            raw.update(chunk)
        out.write(chunk)
        left -= len(chunk)
    out.write(_padding(size))
    sums.append(f"{sums_digest.hexdigest()} *{name}\n")
    return Sent(name, raw_size, raw.hexdigest())


def write_stream(
    options: Options,
    files: Sequence[tuple[str, io.BufferedReader]],
    out: IO[bytes],
    sent: list[Sent] | None = None,
) -> list[Sent]:
    """Write the tar stream of ``files`` ((path, open file) pairs) into ``out``; return
    what was sent (also appended to ``sent`` file by file, as they go).

    Assembled here around tarfile's header encoder, so the data goes from the file to the
    pipe in large pieces, hashed on the way (tarfile's stream writer copies 16 KiB at a
    time through a buffer it keeps re-slicing).
    """
    import time

    sums: list[str] = []
    done = [] if sent is None else sent
    for path, handle in files:
        done.append(_write_member(options, path, handle, out, sums))
    data = "".join(sums).encode()
    sums_name = "MD5SUMS" if options.md5 else "SHA256SUMS"
    out.write(_header(sums_name, len(data), time.time()) + data)
    out.write(_padding(len(data)) + bytes(2 * _BLOCK))
    return done


class Shipment:
    """What one put-wal run answered: archive_command's status and the files it covers."""

    def __init__(self, code: int, sent: list[Sent]) -> None:
        self.code = code
        self.sent = sent


def ship(
    options: Options,
    command: list[str],
    paths: Sequence[str],
    say: Callable[[str], None],
    *,
    local: bool,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    capture: bool = False,
) -> Shipment:
    """Send the WAL files at ``paths`` in one stream into ``command`` (put-wal, locally or
    through ssh); return archive_command's status.

    ``say`` gets every line for PostgreSQL's log (``ERROR: ...``): ours, and with
    ``capture`` put-wal's own stderr (else put-wal writes to our stderr itself).  The
    status is 0 only when put-wal exited 0 after reading the whole stream: it makes every
    file durable before it answers.
    """
    handles: list[tuple[str, io.BufferedReader]] = []
    try:
        for path in paths:
            if os.path.isdir(path):
                say(f"ERROR: WAL_PATH cannot be a directory: {path}")
                return Shipment(SEND_FAILED, [])
            try:
                handles.append((path, open(path, "rb")))  # noqa: SIM115 (closed below)
            except OSError as exc:
                say(f"ERROR: Cannot read '{path}' (WAL_PATH): {exc.strerror}")
                return Shipment(SEND_FAILED, [])
        return _run(options, command, handles, say, local, env, cwd, capture)
    finally:
        for _, handle in handles:
            handle.close()


def _run(
    options: Options,
    command: list[str],
    handles: list[tuple[str, io.BufferedReader]],
    say: Callable[[str], None],
    local: bool,
    env: dict[str, str] | None,
    cwd: str | None,
    capture: bool,
) -> Shipment:
    pipe = subprocess.PIPE if capture else None
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL if capture else None,
            stderr=pipe,
            env=env,
            cwd=cwd,
        )
    except OSError as exc:
        say(f"ERROR: cannot run '{command[0]}': {exc.strerror}")
        return Shipment(SEND_FAILED, [])
    relay = None
    if proc.stderr is not None:
        errors = proc.stderr

        def read_errors() -> None:
            for raw in errors:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if line:
                    say(line)

        relay = threading.Thread(target=read_errors, daemon=True)
        relay.start()
    assert proc.stdin is not None
    problem: str | None = None
    sent: list[Sent] = []
    try:
        write_stream(options, handles, proc.stdin, sent)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the receiver stopped reading: its exit status says why
    except (OSError, ValueError) as exc:  # a local read or compression failure
        problem = f"cannot send '{handles[len(sent)][0]}': {exc}"
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # on a local failure, the receiver sees a truncated stream
    code = proc.wait()
    if relay is not None:
        relay.join()
    if problem is not None:
        say(f"ERROR: {problem}")
        return Shipment(SEND_FAILED, [])
    status, message = exit_status(code, local)
    if message is not None:
        say(f"ERROR: {message}")
    return Shipment(status, sent if status == 0 else [])
