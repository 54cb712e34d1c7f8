"""The tar streams of base backups: watched on the way up, checked and unpacked on the way down.

Up (:class:`TarWatcher`): pg_basebackup's tar output goes straight to the bucket; on the way
the watcher walks the 512-byte headers (ustar, and GNU/pax extension records skipped) and
keeps the few members the backup's metadata comes from -- ``backup_label``,
``backup_manifest`` (up to :data:`MANIFEST_LIMIT`) and the head of ``global/pg_control``
-- and checks that the archive is whole: its last member complete and its end-of-archive
blocks there.  A stream that ends anywhere else is refused, so a truncated tar is never
completed as an object.

Down (:func:`unpack`): a backup's tar is read as a stream with :mod:`tarfile` (``r|``) and
every member is checked *before it is written*:

* its name is relative, without ``..``, NUL or an empty component, and nothing is written
  through a symbolic link (each member's parent directory must be itself, not a link);
* only regular files, directories, symbolic links and hard links: devices, FIFOs and
  anything else are refused;
* a symbolic link is ``pg_tblspc/<oid>`` (a tablespace: re-pointed at the location chosen
  for that tablespace, never at the original server's path) or relative and inside the
  destination; a hard link names a file already unpacked from the same tar;
* a file is created, never overwritten (a second member with the same name is refused),
  with its permissions (at most 0o777, and readable and writable by the owner) and mtime.

The stream is also walked by a :class:`TarWatcher`, so an archive that stops before its
end-of-archive blocks (or has anything but zeros after them) is refused too: tarfile alone
would accept it.  A refused member stops the unpack with one ``ERROR:`` line naming it;
the caller removes what it had unpacked into the new (or empty) destination it was given.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Callable, Mapping
from typing import IO

from walvault.errors import WalvaultError

BLOCK = 512
#: the longest backup_manifest kept whole (one line per file of PGDATA: ~25 MiB for 100,000
#: files); past it the end position comes from pg_basebackup's own report
MANIFEST_LIMIT = 64 << 20
WATCHED = {"backup_label": 1 << 20, "backup_manifest": MANIFEST_LIMIT, "global/pg_control": 8192}
_TABLESPACE_LINK = re.compile(r"pg_tblspc/([1-9][0-9]{0,9})")
_COPY_CHUNK = 1 << 20


class TarError(WalvaultError):
    """A tar stream that is not a whole, safe backup archive."""


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        value = int.from_bytes(field[1:], "big")
        return value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    return int(text, 8) if text else 0


class TarWatcher:
    """Fed the tar stream in pieces of any size (see the module docstring)."""

    def __init__(self) -> None:
        self.members: dict[str, bytes] = {}
        self.oversized: set[str] = set()
        self.count = 0
        self.size = 0
        self._pending = bytearray()
        self._left = 0  # bytes of the current member's data (with padding) still to come
        self._keep: tuple[str, int, bytearray] | None = None
        self._zero_blocks = 0
        self.ended = False

    def feed(self, data: bytes | memoryview) -> None:
        """Account for the next bytes of the stream."""
        view = memoryview(data).cast("B")
        self.size += len(view)
        while view:
            if self.ended:
                if any(view):
                    raise TarError("data after the end of the tar archive")
                return
            if self._left:
                take = min(self._left, len(view))
                if self._keep is not None:
                    _name, limit, buffer = self._keep
                    room = limit - len(buffer)
                    if room > 0:
                        buffer += view[: min(take, room)]
                self._left -= take
                view = view[take:]
                if not self._left and self._keep is not None:
                    name, _limit, buffer = self._keep
                    if name not in self.oversized:
                        self.members[name] = bytes(buffer)
                    self._keep = None
                continue
            need = BLOCK - len(self._pending)
            self._pending += view[:need]
            view = view[need:]
            if len(self._pending) == BLOCK:
                block, self._pending = bytes(self._pending), bytearray()
                self._header(block)

    def _header(self, block: bytes) -> None:
        if not any(block):
            self._zero_blocks += 1
            if self._zero_blocks == 2:
                self.ended = True
            return
        if self._zero_blocks:
            raise TarError("a zero block inside the tar archive")
        checksum = _octal(block[148:156])
        computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
        if checksum != computed:
            raise TarError(f"bad tar header checksum at byte {self.size - BLOCK}")
        name = block[0:100].split(b"\0", 1)[0]
        if block[257:262] == b"ustar":
            prefix = block[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        size = _octal(block[124:136])
        kind = block[156:157]
        self._left = (size + BLOCK - 1) // BLOCK * BLOCK
        text = name.decode("utf-8", "replace").removeprefix("./")
        if kind in (b"0", b"\0", b"7") and text in WATCHED:
            self._keep = (text, min(WATCHED[text], size), bytearray())
            if size > WATCHED[text] and text != "global/pg_control":
                self.oversized.add(text)
            if size == 0:
                self.members[text] = b""
                self._keep = None
        if kind not in (b"x", b"g", b"L", b"K"):
            self.count += 1

    def finish(self) -> None:
        """Raise :class:`TarError` unless the stream ended exactly at the archive's end."""
        if self._left or self._pending or not self.ended:
            raise TarError(
                f"the tar stream ended after {self.size} bytes, before the end of the archive "
                "(truncated)"
            )


def _safe_name(name: str) -> str:
    text = name.removeprefix("./").rstrip("/")
    parts = text.split("/")
    if (
        not text
        or text.startswith("/")
        or "\0" in text
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise TarError(f"unsafe member name {name!r}: accepted: relative paths without '..'")
    return text


def _inside(link_dir: str, target: str) -> bool:
    """Whether relative ``target`` seen from ``link_dir`` (relative) stays inside the root."""
    if os.path.isabs(target):
        return False
    resolved = os.path.normpath(os.path.join(link_dir, target))
    return resolved != ".." and not resolved.startswith("../")


def unpack(
    stream: IO[bytes],
    destination: str,
    *,
    what: str,
    tablespace_links: Mapping[str, str] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> int:
    """Unpack the tar read from ``stream`` into ``destination`` (see the module docstring).

    ``tablespace_links`` maps a tablespace oid to where its ``pg_tblspc/<oid>`` link must
    point.  ``what`` names the archive in messages.  Returns the number of members.
    """
    root = os.path.realpath(destination)
    links = dict(tablespace_links or {})
    unpacked_files: set[str] = set()
    count = 0
    watched = _Watched(stream)
    try:
        # bufsize: tarfile's stream reads are that large (10 KiB by default: slow)
        with tarfile.open(fileobj=watched, mode="r|", bufsize=_COPY_CHUNK) as tar:  # type: ignore[call-overload]
            for member in tar:
                count += 1
                _one(tar, member, root, links, unpacked_files, what, on_bytes)
        while watched.read(_COPY_CHUNK):  # the end-of-archive blocks tarfile did not read
            pass
        watched.watcher.finish()
    except tarfile.TarError as exc:
        raise TarError(f"{what}: not a valid tar archive: {exc}") from None
    except TarError as exc:
        if exc.message.startswith(what):
            raise
        raise TarError(f"{what}: {exc.message}") from None
    return count


class _Watched:
    """The stream tarfile reads, also walked by a :class:`TarWatcher`: tarfile accepts an
    archive that just stops, the watcher does not (a truncated tar is refused)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.watcher = TarWatcher()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if data:
            self.watcher.feed(data)
        return data


def _one(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    root: str,
    links: dict[str, str],
    unpacked: set[str],
    what: str,
    on_bytes: Callable[[int], None] | None,
) -> None:
    if member.isdir() and member.name.rstrip("/") in (".", ""):
        return  # the archive's root (barman-cloud's tars have one): the destination itself
    try:
        name = _safe_name(member.name)
    except TarError as exc:
        raise TarError(f"{what}: {exc.message}") from None
    path = os.path.join(root, name)
    parent = os.path.dirname(path)
    if os.path.realpath(parent) != parent:
        raise TarError(f"{what}: member {name!r} would be written through a symbolic link")
    mode = (member.mode & 0o777) | 0o600
    if member.isdir():
        os.makedirs(path, mode=0o700, exist_ok=True)
        if os.path.islink(path):
            raise TarError(f"{what}: directory {name!r} is a symbolic link")
        os.chmod(path, mode | 0o100)
        return
    os.makedirs(parent, mode=0o700, exist_ok=True)
    if member.issym():
        tablespace = _TABLESPACE_LINK.fullmatch(name)
        if tablespace is not None and tablespace.group(1) in links:
            os.symlink(links[tablespace.group(1)], path)
            return
        if not _inside(os.path.dirname(name), member.linkname):
            raise TarError(
                f"{what}: symbolic link {name!r} -> {member.linkname!r} points outside the "
                "destination"
            )
        os.symlink(member.linkname, path)
        return
    if member.islnk():
        target = member.linkname.removeprefix("./")
        if target not in unpacked:
            raise TarError(
                f"{what}: hard link {name!r} -> {member.linkname!r} names no file unpacked "
                "before it"
            )
        os.link(os.path.join(root, target), path)
        return
    if not member.isreg():
        raise TarError(f"{what}: member {name!r} is a device, FIFO or other special file: refused")
    source = tar.extractfile(member)
    assert source is not None
    try:
        handle = open(path, "xb")  # noqa: SIM115 - closed by the with below
    except FileExistsError:
        raise TarError(f"{what}: member {name!r} appears twice") from None
    written = 0
    with handle:
        os.fchmod(handle.fileno(), mode)
        while chunk := source.read(_COPY_CHUNK):
            written += handle.write(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    if written != member.size:
        raise TarError(f"{what}: member {name!r} is truncated ({written} of {member.size} bytes)")
    os.utime(path, (member.mtime, member.mtime))
    unpacked.add(name)
