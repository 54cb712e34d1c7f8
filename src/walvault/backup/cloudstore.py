"""Base backups in object storage: barman-cloud's layout, and the one place naming its keys.

With ``basebackups_directory = s3://BUCKET[/PATH]`` a backup is, relative to PATH::

    <server>/base/<backup id>/data.tar[.ext]       PGDATA (barman-cloud rolls over to
                                                   data_0001.tar[.ext]... past 100 GB)
    <server>/base/<backup id>/<oid>.tar[.ext]      one per tablespace (<oid>_0001.tar...)
    <server>/base/<backup id>/backup.info          written LAST, after every tar is complete
    <server>/walvault-meta/backups/<id>/backup_manifest   the backup's manifest, which an
                                                   incremental backup on it reads (outside
                                                   base/, where barman-cloud never looks)

``.ext`` is barman-cloud's (``.gz .bz2 .xz .zst .lz4``; ``.snappy`` is recognised and
refused: walvault has no snappy codec), the same names as the WAL side
(:data:`walvault.compression.EXTENSIONS`).  So barman-cloud-backup-list lists
walvault's backups, barman-cloud-restore restores them, and walvault lists and recovers what
barman-cloud-backup wrote in the same bucket.

Where a backup's ``backup.info`` lives (:mod:`walvault.backup.info` asks this module):

* while the tars are being uploaded (STARTED), and when that upload failed (FAILED), only
  in the server's local ``meta/<id>-backup.info``: a backup without ``backup.info`` in the
  bucket is invisible to every lister, so a half-uploaded backup is never listed as usable;
* once every tar is complete, in the bucket (WAITING_FOR_WALS, then DONE or FAILED), and
  the local file is removed.  Barman's tools read the bucket's.

A backup killed while uploading leaves its local STARTED record: cron's check of abandoned
backups (:func:`walvault.backup.walcheck.check_waiting_backups`) marks it FAILED and
:meth:`CloudBackups.remove` aborts its incomplete multipart uploads and deletes what it
completed.  Only prefixes walvault recorded as its own are ever cleaned: a barman-cloud-backup
running meanwhile in the same bucket has no ``backup.info`` yet either, and must not be
touched.

Deleting a backup deletes every tar, then ``backup.info``, in one DeleteObjects request
(a backup has a few objects; more than ``cloud_delete_batch_size`` go in ordered batches,
``backup.info`` in the last): a crash leaves either the whole backup or nothing listed, or,
past one batch, a listed backup whose tars are partly gone -- which recover refuses (its
tars are listed before anything is written) and a second ``delete`` finishes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from walvault.compression import BY_EXTENSION, EXTENSIONS
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.storage.base import ObjectInfo, Storage

INFO_NAME = "backup.info"
_ID_RE = re.compile(r"\d{8}T\d{6}")
_TAR_RE = re.compile(
    r"(?P<name>data|[1-9][0-9]{0,9})(?:_(?P<part>[0-9]{4}))?\.tar(?P<ext>\.(?!gpg$)\w+)?"
    r"(?P<gpg>\.gpg)?"
)


@dataclass(frozen=True)
class BackupFile:
    """One tar of a backup: ``name`` is "data" or a tablespace oid, ``part`` its roll-over
    number (0 for ``data.tar``), ``compression`` the codec its extension names."""

    key: str
    name: str
    part: int
    compression: str | None
    size: int
    #: a ``.gpg`` name: gpg(compressed tar), as Barman's ``encryption = gpg`` writes tars
    encrypted: bool = False


def open_backup_storage(server: ServerConfig) -> Storage:
    """The store of ``server``'s base backups (its ``basebackups_directory`` bucket)."""
    from walvault.storage.s3 import S3Storage

    return S3Storage.from_options(server.basebackups_directory, dict(server.storage_options))


def backup_compression(server: ServerConfig) -> str | None:
    """The codec of new backup tars: ``backup_compression``, else ``compression``."""
    chosen = server.backup_compression
    if chosen == "none":
        return None
    return chosen or server.compression


class CloudBackups:
    """``server``'s base backups in its bucket (see the module docstring)."""

    def __init__(self, server: ServerConfig, storage: Storage | None = None) -> None:
        self.server = server
        self.storage = storage if storage is not None else open_backup_storage(server)
        self.base = f"{server.name}/base/"

    def __repr__(self) -> str:
        return f"CloudBackups({self.server.name!r}, {self.storage.url()!r})"

    # ---------------------------------------------------------------- naming

    def prefix(self, backup_id: str) -> str:
        """``<server>/base/<id>/``."""
        if not _ID_RE.fullmatch(backup_id):
            raise ValueError(f"'{backup_id}' is not a backup id (YYYYMMDDTHHMMSS)")
        return f"{self.base}{backup_id}/"

    def info_key(self, backup_id: str) -> str:
        return self.prefix(backup_id) + INFO_NAME

    def manifest_key(self, backup_id: str) -> str:
        """``<server>/walvault-meta/backups/<id>/backup_manifest``."""
        self.prefix(backup_id)  # validates the id
        return f"{self.server.name}/walvault-meta/backups/{backup_id}/backup_manifest"

    def write_manifest(self, backup_id: str, text: str) -> None:
        """Store the backup's manifest (before its ``backup.info``: create-only)."""
        self.storage.put(self.manifest_key(backup_id), text.encode(), create_only=True)

    def read_manifest(self, backup_id: str) -> bytes | None:
        """The backup's manifest, None when it has none (barman-cloud's backups)."""
        reader = self.storage.open(self.manifest_key(backup_id))
        if reader is None:
            return None
        with reader:
            return reader.read()

    def tar_key(
        self,
        backup_id: str,
        name: str,
        compression: str | None,
        part: int = 0,
        *,
        encrypted: bool = False,
    ) -> str:
        """The key of the tar of PGDATA (``name`` "data") or of tablespace ``name`` (an oid);
        ``.gpg`` after the codec's extension when encrypted (Barman's tar backups' names)."""
        if not _TAR_RE.fullmatch(f"{name}.tar"):
            raise ValueError(f"'{name}' is no tar name of a backup (data or an oid)")
        roll = f"_{part:04d}" if part else ""
        gpg = ".gpg" if encrypted else ""
        return f"{self.prefix(backup_id)}{name}{roll}.tar{EXTENSIONS[compression]}{gpg}"

    def url(self, backup_id: str = "") -> str:
        """``s3://BUCKET/PATH/<server>/base/<id>`` (or the store itself), for messages."""
        if not backup_id:
            return self.storage.url()
        return self.storage.url(self.prefix(backup_id).rstrip("/"))

    # ---------------------------------------------------------------- backup.info

    def read_info(self, backup_id: str) -> str | None:
        """The text of the backup's ``backup.info`` in the bucket, None when there is none."""
        reader = self.storage.open(self.info_key(backup_id))
        if reader is None:
            return None
        with reader:
            data = reader.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise WalvaultError(
                f"{self.storage.url(self.info_key(backup_id))}: malformed: not UTF-8 text"
            ) from None

    def write_info(self, backup_id: str, text: str) -> None:
        """Store ``backup.info`` (replacing the previous one: a status change)."""
        self.storage.put(self.info_key(backup_id), text.encode(), create_only=False)

    # ---------------------------------------------------------------- listing

    def listing(self) -> dict[str, list[ObjectInfo]]:
        """Every object under ``<server>/base/``, per backup id, in one paginated LIST."""
        found: dict[str, list[ObjectInfo]] = {}
        for info in self.storage.list(self.base):
            backup_id, _, rest = info.key[len(self.base) :].partition("/")
            if _ID_RE.fullmatch(backup_id) and rest:
                found.setdefault(backup_id, []).append(info)
        return found

    def listed_ids(self) -> list[str]:
        """The ids whose ``backup.info`` is in the bucket, oldest first."""
        return sorted(
            backup_id
            for backup_id, objects in self.listing().items()
            if any(o.key.endswith("/" + INFO_NAME) for o in objects)
        )

    def exists(self, backup_id: str) -> bool:
        """Whether anything at all is stored under the backup's prefix."""
        return any(True for _ in self.storage.list(self.prefix(backup_id)))

    def files(self, backup_id: str) -> list[BackupFile]:
        """The backup's tars, "data" first then tablespaces by oid, each in part order.

        Raises :class:`WalvaultError` for an object that is no tar walvault can read (an
        unknown extension, ``.snappy``) and when there is no ``data`` tar.
        """
        prefix = self.prefix(backup_id)
        found: list[BackupFile] = []
        for info in self.storage.list(prefix):
            name = info.key[len(prefix) :]
            if name == INFO_NAME or "/" in name:
                continue
            match = _TAR_RE.fullmatch(name)
            ext = match.group("ext") if match else None
            if match is None or (ext is not None and ext not in BY_EXTENSION):
                raise WalvaultError(
                    f"{self.storage.url(info.key)}: not a backup file walvault can read "
                    "(accepted: data[_NNNN].tar and <oid>[_NNNN].tar, uncompressed or "
                    f"with one of {', '.join(sorted(BY_EXTENSION))})"
                )
            part = int(match.group("part") or 0)
            codec = BY_EXTENSION[ext] if ext else None
            encrypted = match.group("gpg") is not None
            found.append(
                BackupFile(info.key, match.group("name"), part, codec, info.size, encrypted)
            )
        if not any(f.name == "data" for f in found):
            raise WalvaultError(
                f"backup {backup_id} has no data.tar in {self.url(backup_id)}: incomplete or "
                "partly deleted"
            )
        found.sort(key=lambda f: (f.name != "data", int(f.name) if f.name != "data" else 0, f.part))
        return found

    # ---------------------------------------------------------------- removing

    def remove(self, backup_id: str) -> int:
        """Abort the backup's incomplete uploads, delete its tars and then its ``backup.info``
        (see the module docstring); return the number of objects deleted."""
        prefix = self.prefix(backup_id)
        self.storage.abort_incomplete(prefix)
        keys = [info.key for info in self.storage.list(prefix)]
        info_key = self.info_key(backup_id)
        manifest = self.manifest_key(backup_id)
        ordered = [k for k in keys if k != info_key] + [manifest]
        ordered += [k for k in keys if k == info_key]
        self.storage.delete(ordered)  # the manifest's key may not exist: S3 says nothing
        return len(keys)
