"""put-wal's engine: read Barman's tar stream (WAL files plus SHA256SUMS or MD5SUMS) into incoming/.

The stream is read once, in order, through :class:`walvault.archive.instream.BoundedInput`
(an idle timeout, ``put_wal_timeout``, and a byte budget).  Every WAL member is written to
a temporary dot file in ``incoming/`` (invisible to archive-wal) while its checksum is
computed; nothing becomes visible until the whole stream was read and every check passed:

1. members: regular files only, plain names (a leading ``./`` is dropped, no other ``/``),
   valid WAL names, each once, at most :data:`MAX_WAL_FILES`; ``SHA256SUMS``/``MD5SUMS``
   supply ``<hex> *<name>`` lines.  Sizes are refused before a byte is copied: a member
   larger than its name allows (:func:`walvault.archive.admission.stored_limit`: about one
   segment for a segment or ``.partial``, 1 MiB for a ``.history``, 64 KiB for a
   ``.backup``), a checksum file over :data:`MAX_SUMS_SIZE`, a tar header extension (PAX
   or GNU long name) over :data:`MAX_TAR_META`, a stream over its budget;
2. every file has a matching checksum and every checksum a file (Barman's messages);
3. contents: compressed data must decode completely (and to no more than its name
   allows); then :func:`walvault.archive.admission.judge` (segment headers, ``.partial``,
   ``.history`` and ``.backup`` contents).  A refused file is kept once in
   ``errors/<name>.<stamp>.invalid`` (``.foreign`` for another cluster's segment), so that
   ``check`` shows it while PostgreSQL keeps retrying;
4. landing, per file: an identical copy already in the archive or in ``incoming/`` (same
   decompressed bytes) is success; a different one sends the new file to
   ``errors/<name>.<stamp>.duplicate`` (once: a retry finding the same copy there does not
   add another) and fails; otherwise fsync, a no-replace link to ``incoming/<name>``, fsync
   of the directory.

Temporary files are removed on every failure; those of a killed put-wal are removed by a
later one once their writer is gone (:func:`walvault.fs.cleanup_stale_temps`).  Every
message is one line: names and lines from the stream are shown escaped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, NoReturn, Self, cast

from walvault import fs
from walvault.archive import admission, errors_dir, ingest
from walvault.archive.instream import BoundedInput, InputRefused
from walvault.archive.walstore import ArchivedFile, WalArchive
from walvault.compression import CompressionError, identify, iter_decompressed
from walvault.config import ServerConfig
from walvault.errors import InvalidWalName, WalvaultError
from walvault.storage.base import StorageError
from walvault.wal.header import LONG_HEADER_SIZE
from walvault.wal.names import WalKind, classify, shown_name, validate_wal_name

log = logging.getLogger("walvault.putwal")

#: checksum file name -> hashlib algorithm
SUMS_FILES: dict[str, str] = {"SHA256SUMS": "sha256", "MD5SUMS": "md5"}
#: a checksum line is ~100 bytes; barman-wal-archive and walvault-wal-archive send one
MAX_SUMS_SIZE = 64 << 10
#: WAL files in one stream (the clients send one; Barman's put-wal takes several)
MAX_WAL_FILES = 16
#: a stream carries at most this many segments' worth of bytes (see :func:`stream_budget`)
STREAM_SEGMENTS = 4
#: a PAX header or GNU long name: a few hundred bytes in practice (tarfile reads it whole)
MAX_TAR_META = 64 << 10
#: bad checksum lines warned about one by one; the rest are counted
MAX_LINE_WARNINGS = 5
#: temporary files of dead put-wal processes older than this are removed
STALE_TEMP_AGE = 300.0
#: read granularity: small enough that a slow sender's bytes reach the temporary file early
_CHUNK = 256 << 10
_SUM_SPLIT = re.compile(r" [* ]")
_HEX = re.compile(r"[0-9a-fA-F]+")
_TYPE_NAMES = {
    tarfile.DIRTYPE: "directory",
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
    tarfile.GNUTYPE_SPARSE: "sparse file",
}
_META_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)

Warn = Callable[[str], None]


class PutWalError(WalvaultError):
    """put-wal refused (part of) the stream; nothing refused was left in incoming/."""


def ssh_suffix(environ: Mapping[str, str] | None = None) -> str:
    """`` (SSH host: <client ip>)`` when run through ssh (``SSH_CONNECTION``), else ""."""
    words = (os.environ if environ is None else environ).get("SSH_CONNECTION", "").split()
    return f" (SSH host: {shown_name(words[0])})" if words else ""


def check_accepting(server: ServerConfig) -> None:
    """Refuse when files put into incoming/ would never be archived, or cannot be written."""
    if not server.archiver:
        raise PutWalError(
            f"server '{server.name}' has archiver = off: archive-wal would never process "
            "what put-wal puts into incoming/ (set archiver = on to use archive_command)"
        )
    incoming = server.incoming_wals_directory
    if os.path.isdir(incoming) and not os.access(incoming, os.W_OK | os.X_OK):
        raise PutWalError(f"cannot write into '{incoming}' (incoming WALs directory)")


class _CheckedTarInfo(tarfile.TarInfo):
    """tarfile's header parser, refusing what it would otherwise read whole into memory."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _META_TYPES and info.size > MAX_TAR_META:
            raise InputRefused(
                f"Tar header extension of {info.size} bytes (at most {MAX_TAR_META})"
            )
        if info.type == tarfile.GNUTYPE_SPARSE:  # its extension blocks come next
            raise InputRefused(
                f"Unsupported file type 'sparse file' for file '{shown_name(info.name)}'"
            )
        return info


@dataclass
class Received:
    """One WAL file of the stream, held in a temporary file beside its final name."""

    name: str
    tmp: Path
    size: int
    mtime: float
    digests: dict[str, str] = field(default_factory=dict)
    compression: str | None = None

    def staged(self) -> ingest.Staged:
        """The view archive-wal's comparison helpers take."""
        return ingest.Staged(self.name, str(self.tmp), self.size, self.mtime, self.compression)


@dataclass
class PutResult:
    """What a put-wal did: files landed, and files already safe (name -> where)."""

    landed: list[str] = field(default_factory=list)
    present: dict[str, str] = field(default_factory=dict)


def stream_budget(segment_size: int | None) -> int:
    """The most bytes one stream may carry: :data:`STREAM_SEGMENTS` segments (as sent, see
    :func:`walvault.archive.admission.stored_limit`), the checksum file and tar headers."""
    segment = admission.stored_limit(WalKind.SEGMENT, segment_size)
    headers = (MAX_WAL_FILES + 2) * (MAX_TAR_META + 2048)
    return STREAM_SEGMENTS * segment + MAX_SUMS_SIZE + headers


def put_wal(
    server: ServerConfig, stream: BinaryIO, *, suffix: str = "", warn: Warn | None = None
) -> PutResult:
    """Receive one tar stream for ``server``; PutWalError (exit 1) when anything is refused.

    ``warn`` gets the warnings (default: the log); ``suffix`` ends every message.  A
    stream silent for ``server.put_wal_timeout`` seconds is refused.
    """
    session = _Session(server, suffix, warn or (lambda text: log.warning("%s", text)))
    try:
        return session.run(stream)
    finally:
        session.discard()


def _archived_digest(archive: WalArchive, twin: ArchivedFile, algorithm: str | None) -> str:
    """The checksum of an archived file's stored bytes (for the mismatch message)."""
    digest = hashlib.new(algorithm or "sha256", usedforsecurity=False)
    try:
        reader = archive.storage.open(twin.key)
        if reader is None:
            return "(gone)"
        with reader:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
    except StorageError:
        return "(unreadable)"
    return digest.hexdigest()


def _file_digest(path: str | Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _one_line(text: str) -> str:
    """``text`` (an exception's message) without line breaks."""
    return " ".join(text.split())


class _Session:
    """One put-wal stream: the received files, the checksums, and their fate."""

    def __init__(self, server: ServerConfig, suffix: str, warn: Warn) -> None:
        self.server = server
        self.suffix = suffix
        self.where = f" in put-wal for server '{server.name}'{suffix}"
        self.warn = warn
        self.files: dict[str, Received] = {}
        self.sums: dict[str, str] = {}
        self.sums_algorithm: str | None = None
        self.segment_size = ingest.archived_segment_size(server)
        self._sysid: int | None = None
        self._sysid_read = False

    def fail(self, text: str) -> PutWalError:
        """The error to raise (the CLI prints and logs it)."""
        return PutWalError(text + self.where)

    def discard(self) -> None:
        """Remove every temporary file still held (refused, duplicate or failed)."""
        for received in self.files.values():
            with contextlib.suppress(OSError):
                received.tmp.unlink()
        self.files.clear()

    def run(self, stream: BinaryIO) -> PutResult:
        incoming = str(fs.ensure_dir(self.server.incoming_wals_directory))
        self._read(stream, incoming)
        self._verify_checksums()
        for received in list(self.files.values()):
            self._check_content(received)
        result = PutResult()
        problems: list[str] = []
        for name in sorted(self.files):
            try:
                where = self._land(self.files[name], incoming)
            except PutWalError as exc:
                problems.append(exc.message)
                continue
            if where is None:
                result.landed.append(name)
                log.info("Received WAL file %s%s", name, self.where)
            else:
                result.present[name] = where
                log.info("WAL file %s already in the %s%s: nothing to do", name, where, self.where)
        with contextlib.suppress(OSError):
            fs.cleanup_stale_temps(incoming, older_than=STALE_TEMP_AGE)
        if problems:
            raise PutWalError("\n".join(problems))
        return result

    # ------------------------------------------------------------------ reading

    def _read(self, stream: BinaryIO, incoming: str) -> None:
        source = BoundedInput(
            stream, timeout=self.server.put_wal_timeout, budget=stream_budget(self.segment_size)
        )
        try:
            with tarfile.open(
                fileobj=cast("IO[bytes]", source),  # only read() is used in "r|" mode
                mode="r|",
                bufsize=64 << 10,
                tarinfo=_CheckedTarInfo,
            ) as tar:
                for member in tar:
                    self._member(tar, member, incoming)
        except InputRefused as exc:
            raise self.fail(f"{exc.message}; nothing was kept") from None
        except (tarfile.TarError, EOFError, ValueError, UnicodeError, OverflowError) as exc:
            # truncated, or not a tar stream at all
            raise self.fail(f"Invalid tar stream ({_one_line(str(exc))})") from None
        except OSError as exc:
            raise self.fail(f"Cannot write into '{incoming}': {exc.strerror}") from None
        if not self.files:
            raise self.fail("No WAL file received")

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, incoming: str) -> None:
        shown = shown_name(member.name)
        name = member.name[2:] if member.name.startswith("./") else member.name
        if not member.isreg() or member.issparse():
            what = _TYPE_NAMES.get(member.type, repr(member.type.decode(errors="replace")))
            if member.issparse():
                what = _TYPE_NAMES[tarfile.GNUTYPE_SPARSE]
            raise self.fail(f"Unsupported file type '{what}' for file '{shown}'")
        if "/" in name:
            raise self.fail(f"Unsupported filename '{shown}'")
        data = tar.extractfile(member)
        assert data is not None  # a regular member always has data
        if name in SUMS_FILES:
            self._read_sums(name, data, member.size)
            return
        try:
            kind = classify(validate_wal_name(name))
        except InvalidWalName:
            raise self.fail(f"'{shown_name(name)}' is not a valid WAL file name") from None
        assert kind is not None
        if name in self.files:
            raise self.fail(f"File '{name}' sent twice")
        if len(self.files) >= MAX_WAL_FILES:
            raise self.fail(f"More than {MAX_WAL_FILES} WAL files in one stream")
        limit = admission.stored_limit(kind, self.segment_size)
        if member.size > limit:
            raise self.fail(
                f"'{name}' is {member.size} bytes long: a {kind.value} file can be at most "
                f"{limit} bytes{self._size_source(kind)}; nothing was kept"
            )
        algorithms = [self.sums_algorithm or "sha256"]
        hashers = [hashlib.new(a, usedforsecurity=False) for a in algorithms]

        def writer(handle: BinaryIO) -> None:
            while chunk := data.read(_CHUNK):
                for hasher in hashers:
                    hasher.update(chunk)
                handle.write(chunk)

        tmp, size = fs.write_temp(os.path.join(incoming, name), writer, mtime=member.mtime)
        received = Received(name, tmp, size, float(member.mtime))
        received.digests = {a: h.hexdigest() for a, h in zip(algorithms, hashers, strict=True)}
        self.files[name] = received

    def _size_source(self, kind: WalKind) -> str:
        if kind not in (WalKind.SEGMENT, WalKind.PARTIAL):
            return ""
        if self.segment_size is None:
            return " (a segment of PostgreSQL's largest size, 1 GiB, and room for compression)"
        return " (a segment of this archive, and room for compression)"

    def _read_sums(self, name: str, data: IO[bytes], size: int) -> None:
        if self.sums_algorithm is not None:
            raise self.fail(f"More than one checksum file ('{name}')")
        if size > MAX_SUMS_SIZE:
            raise self.fail(
                f"Checksum file '{name}' is too large ({size} bytes, at most {MAX_SUMS_SIZE})"
            )
        self.sums_algorithm = SUMS_FILES[name]
        bad = 0
        for line in data.read().decode("utf-8", "replace").splitlines():
            if not line.strip():
                continue
            parts = _SUM_SPLIT.split(line, maxsplit=1)
            if len(parts) != 2 or not _HEX.fullmatch(parts[0]):
                bad += 1
                if bad <= MAX_LINE_WARNINGS:
                    self.warn(f"Bad checksum line '{shown_name(line)}' found{self.where}")
                continue
            target = parts[1][2:] if parts[1].startswith("./") else parts[1]
            self.sums[target] = parts[0].lower()
        if bad > MAX_LINE_WARNINGS:
            self.warn(f"{bad - MAX_LINE_WARNINGS} more bad checksum lines found{self.where}")

    # ------------------------------------------------------------------ checks

    def _digest(self, received: Received, algorithm: str) -> str:
        if algorithm not in received.digests:  # MD5SUMS came after the file: read it again
            received.digests[algorithm] = _file_digest(received.tmp, algorithm)
        return received.digests[algorithm]

    def _verify_checksums(self) -> None:
        for name in self.sums:
            if name not in self.files:
                raise self.fail(f"Checksum without corresponding file '{shown_name(name)}'")
        for name, received in self.files.items():
            expected = self.sums.get(name)
            if expected is None or self.sums_algorithm is None:
                raise self.fail(f"Missing checksum for file '{name}'")
            actual = self._digest(received, self.sums_algorithm)
            if actual != expected:
                raise self.fail(
                    f"Bad file checksum '{actual}' (should be {shown_name(expected)}) "
                    f"for file '{name}'"
                )

    def _system_identifier(self) -> int | None:
        if not self._sysid_read:
            from walvault.identity import stored_system_identifier

            self._sysid = stored_system_identifier(self.server)
            self._sysid_read = True
        return self._sysid

    def _judge(self, received: Received) -> admission.Judgement:
        """The verdict on the (decompressed) content, read up to what the name allows."""
        kind = classify(received.name)
        assert kind is not None
        limit = admission.content_limit(kind, self.segment_size)
        keep_text = kind in (WalKind.HISTORY, WalKind.BACKUP)
        with open(received.tmp, "rb") as handle:
            received.compression = identify(handle.read(LONG_HEADER_SIZE))
            handle.seek(0)
            try:
                pieces = iter_decompressed(handle, received.compression)
                content = admission.read_content(
                    pieces, limit, keep_text=keep_text, scan_zeros=kind is WalKind.PARTIAL
                )
            except CompressionError as exc:
                problem = f"it cannot be decompressed: {_one_line(exc.message)}"
                return admission.Judgement(errors_dir.INVALID, problem)
        return admission.judge(
            received.name,
            content,
            system_identifier=self._system_identifier(),
            segment_size=self.segment_size,
        )

    def _check_content(self, received: Received) -> None:
        found = self._judge(received)
        if found.kind is None:
            return
        kept = self._keep_refused(received, found.kind)
        if found.kind == errors_dir.FOREIGN:
            text = (
                f"WAL file '{received.name}' belongs to another PostgreSQL cluster: "
                f"{found.problem} (from {self.server.identity_path})"
            )
        else:
            text = f"'{received.name}' is not a valid WAL file for its name ({found.problem})"
        raise self.fail(f"{text}; it is NOT archived, {kept}")

    def _keep_refused(self, received: Received, kind: str) -> str:
        """Keep a refused file in errors/, once (a retry brings the same bytes); say where."""
        kept = self._kept_copy(received, kind)
        if kept is not None:
            return f"an identical copy is already in the errors directory ({kept})"
        try:
            kept = errors_dir.move_to_errors(
                self.server, str(received.tmp), kind, name=received.name
            )
        except OSError as exc:
            return f"and it could not be kept in the errors directory: {exc.strerror}"
        del self.files[received.name]
        return f"a copy is kept in the errors directory ({kept})"

    # ------------------------------------------------------------------ landing

    def _land(self, received: Received, incoming: str) -> str | None:
        """Make ``received`` safe; return None when landed, or where an identical copy is."""
        target = os.path.join(incoming, received.name)
        archive = WalArchive(self.server)
        for _attempt in range(5):
            try:
                twin = archive.find(received.name)
                if twin is not None:
                    self._compare_archived(archive, twin, received)
                    return "archive"
                if fs.commit_new(received.tmp, target):
                    del self.files[received.name]
                    return None
                self._compare(target, received)
                return "incoming directory"
            except FileNotFoundError:
                continue  # archive-wal moved the twin meanwhile: look again
            except StorageError as exc:
                raise self.fail(f"Cannot look up '{received.name}' in the archive: {exc}") from None
            except OSError as exc:
                raise self.fail(
                    f"Cannot store '{received.name}': {exc.strerror} ({exc.filename})"
                ) from None
        raise self.fail(f"'{received.name}' kept moving in the archive while put-wal looked")

    def _compare_archived(
        self, archive: WalArchive, twin: ArchivedFile, received: Received
    ) -> None:
        """Return when the archived ``twin`` holds the same content; else PutWalError."""
        try:
            same, why = ingest.same_as_archived(archive, twin, received.staged()), ""
        except ingest.UnreadableArchive as exc:
            same, why = False, f" (the existing copy cannot be decompressed: {exc})"
        if same:
            if not archive.cloud:  # it may have been linked into place a moment ago
                path = os.path.join(self.server.wals_directory, twin.key)
                fs.fsync_file(path)
                fs.fsync_dir(os.path.dirname(path))
            return
        self._mismatch(_archived_digest(archive, twin, self.sums_algorithm), received, why)

    def _compare(self, existing: str, received: Received) -> None:
        """Return when the local file ``existing`` holds the same content (made durable);
        else PutWalError."""
        try:
            same, why = ingest.same_content(ingest.file_pieces(existing), received.staged()), ""
        except ingest.UnreadableArchive as exc:
            same, why = False, f" (the existing copy cannot be decompressed: {exc})"
        if same:
            fs.fsync_file(existing)  # it may have been renamed into place a moment ago
            fs.fsync_dir(os.path.dirname(existing))
            return
        self._mismatch(_file_digest(existing, self.sums_algorithm or "sha256"), received, why)

    def _mismatch(self, theirs: str, received: Received, why: str) -> NoReturn:
        """Keep the received file in errors/ and refuse it (a different file, same name)."""
        algorithm = self.sums_algorithm or "sha256"
        ours = self._digest(received, algorithm)
        kept = self._kept_copy(received, errors_dir.DUPLICATE)
        if kept is None:
            kept = errors_dir.move_to_errors(
                self.server, str(received.tmp), errors_dir.DUPLICATE, name=received.name
            )
            del self.files[received.name]
            moved = "The file has been moved to the errors directory"
        else:
            moved = "An identical copy of the file is already in the errors directory"
        raise PutWalError(
            "Duplicate Files Detected with Mismatched Checksums. File "
            f"{received.name} already exists on server {self.server.name} with checksum "
            f"{theirs}, but the checksum of the incoming file is {ours}{why}. {moved} "
            f"({kept}). It is NOT archived: check which copy is right{self.suffix}"
        )

    def _kept_copy(self, received: Received, kind: str) -> str | None:
        """An earlier attempt's copy of this very file in errors/ as ``kind``, if any: the
        same decompressed content for a duplicate, the same bytes for a refused file (which
        may not decompress at all)."""
        directory = self.server.errors_directory
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return None
        prefix, suffix = received.name + ".", "." + kind
        algorithm = self.sums_algorithm or "sha256"
        for entry in sorted(names):
            if entry.startswith(prefix) and entry.endswith(suffix):
                path = os.path.join(directory, entry)
                with contextlib.suppress(OSError, ingest.UnreadableArchive):
                    if kind != errors_dir.DUPLICATE:
                        if os.path.getsize(path) == received.size and _file_digest(
                            path, algorithm
                        ) == self._digest(received, algorithm):
                            return path
                    elif ingest.same_content(ingest.file_pieces(path), received.staged()):
                        return path
        return None
