"""A tar-format backup's files against its ``backup_manifest``, read through its tars.

pg_verifybackup (before PostgreSQL 18) reads plain copies only, and no version of it reads
an encrypted tar.  For Barman's and walvault's tar-format backups on local disk
(``base.tar[.ext][.gpg]``, ``<oid>.tar...``) and for backups in object storage
(``data.tar...``), verify streams every tar as recover does -- decrypted by gpg and
decompressed on the way (:func:`walvault.backup.cloudrecover.tar_source`), nothing written
to disk -- and checks what pg_verifybackup checks:

* the manifest's own checksum (SHA-256 of its text up to ``"Manifest-Checksum"``);
* every file the manifest lists is in a tar (a tablespace's under ``pg_tblspc/<oid>/``),
  with its size and its checksum (the manifest's algorithm: CRC32C by default, which
  PostgreSQL writes as the four bytes of the value in little-endian order, or SHA-2);
* no other regular file is, but those PostgreSQL leaves out of every manifest.

Its WAL is not parsed here: verify walks the archived WAL itself.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Callable, Iterable
from typing import IO, Any

from walvault.backup.cloudstore import BackupFile
from walvault.compression import CompressionError, open_decompressed
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.storage.base import Storage

#: Files a backup may hold that no manifest lists (pg_verifybackup's own list).
UNLISTED = frozenset(
    {"backup_manifest", "postgresql.auto.conf", "recovery.signal", "standby.signal"}
)
_CHUNK = 1 << 20


class _Crc32c:
    def __init__(self) -> None:
        import crc32c

        self._crc = crc32c.CRC32CHash()

    def update(self, data: bytes) -> None:
        self._crc.update(data)

    def hexdigest(self) -> str:
        return int.from_bytes(self._crc.digest(), "big").to_bytes(4, "little").hex()


def _hasher(algorithm: str) -> Any:
    """A hasher for the manifest's ``Checksum-Algorithm``; None for NONE (sizes only)."""
    if algorithm == "CRC32C":
        return _Crc32c()
    if algorithm in ("SHA224", "SHA256", "SHA384", "SHA512"):
        return hashlib.new(algorithm.lower())
    if algorithm == "NONE":
        return None
    raise WalvaultError(
        f"checksum algorithm {algorithm!r} (accepted: CRC32C, SHA224, SHA256, SHA384, SHA512, NONE)"
    )


def parse_manifest(raw: bytes) -> dict[str, dict[str, Any]]:
    """``{path: entry}`` of a manifest, after checking its own checksum (ValueError)."""
    try:
        manifest = json.loads(raw)
        listed = manifest["Files"]
        stated = manifest["Manifest-Checksum"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a backup manifest ({exc})") from None
    cut = raw.rfind(b'"Manifest-Checksum"')
    if hashlib.sha256(raw[:cut]).hexdigest() != stated:
        raise ValueError("the manifest's own checksum does not match its text")
    files = {}
    for entry in listed:
        if "Path" in entry:
            path = entry["Path"]
        else:
            path = bytes.fromhex(entry["Encoded-Path"]).decode("utf-8", "surrogateescape")
        files[path] = entry
    return files


def _unlisted(path: str) -> bool:
    return path in UNLISTED or path.startswith("pg_wal/")


def check_tars(
    server: ServerConfig,
    storage: Storage,
    files: Iterable[BackupFile],
    manifest: dict[str, dict[str, Any]],
) -> list[str]:
    """Every problem found reading ``files`` (tars of ``storage``) against ``manifest``."""
    from walvault.backup.cloudrecover import tar_source
    from walvault.backup.progress import Progress

    problems: list[str] = []
    seen: set[str] = set()
    quiet = Progress("Verify", None, enabled=False)
    for item in files:
        prefix = "" if item.name == "data" else f"pg_tblspc/{item.name}/"
        where = storage.url(item.key)
        source = tar_source(server, storage, item, 1, quiet)
        stream = open_decompressed(item.compression, source)  # type: ignore[arg-type]
        try:
            _check_one(stream, prefix, manifest, seen, problems.append)
        except (tarfile.TarError, CompressionError, EOFError) as exc:
            problems.append(f"{where}: unreadable tar ({exc})")
        except WalvaultError as exc:
            problems.append(exc.message)
        finally:
            stream.close()
            source.close()
    problems += [
        f'"{p}" is in the manifest but not in the backup' for p in manifest if p not in seen
    ]
    return problems


def _check_one(
    stream: IO[bytes],
    prefix: str,
    manifest: dict[str, dict[str, Any]],
    seen: set[str],
    report: Callable[[str], None],
) -> None:
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            path = prefix + member.name.removeprefix("./")
            entry = manifest.get(path)
            if entry is None:
                if not _unlisted(path):
                    report(f'"{path}" is in the backup but not in the manifest')
                continue
            seen.add(path)
            if member.size != entry["Size"]:
                report(f'"{path}" has size {member.size}, the manifest says {entry["Size"]}')
                continue
            hasher = _hasher(entry.get("Checksum-Algorithm", "NONE"))
            if hasher is None:
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
            if hasher.hexdigest() != entry.get("Checksum"):
                report(f'"{path}": checksum mismatch')
