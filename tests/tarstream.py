"""put-wal tar streams for tests: well-formed ones like barman-wal-archive's, and broken ones."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Mapping, Sequence


def sums_text(files: Mapping[str, bytes], algorithm: str = "sha256") -> bytes:
    """``<hex> *<name>`` lines for ``files``."""
    lines = [
        f"{hashlib.new(algorithm, data).hexdigest()} *{name}\n" for name, data in files.items()
    ]
    return "".join(lines).encode()


def tar_stream(
    files: Mapping[str, bytes],
    *,
    sums: str | None = "SHA256SUMS",
    sums_data: bytes | None = None,
    sums_first: bool = False,
    extra: Sequence[tarfile.TarInfo] = (),
    mtime: float = 1_700_000_000,
) -> bytes:
    """A PAX tar of ``files`` plus a checksum file (computed unless ``sums_data`` is given)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        members: list[tuple[str, bytes]] = list(files.items())
        if sums is not None:
            algorithm = "md5" if sums == "MD5SUMS" else "sha256"
            text = sums_data if sums_data is not None else sums_text(files, algorithm)
            members.insert(0 if sums_first else len(members), (sums, text))
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o600
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return out.getvalue()


def symlink_member(name: str, target: str) -> tarfile.TarInfo:
    """A symbolic link member."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info
