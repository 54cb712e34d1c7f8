"""Barman's tar-format backups on local disk, recovered as they are.

With ``backup_compression`` and ``backup_compression_format = tar``, Barman runs
``pg_basebackup --format=tar`` with compression into ``base/<id>/data/``::

    base.tar[.gz|.lz4|.zst]       PGDATA
    <oid>.tar[.gz|.lz4|.zst]      one per tablespace
    backup_manifest               plain

and with ``encryption = gpg`` it encrypts every tar afterwards: ``base.tar.gz.gpg``, the
``.tar*`` removed.  walvault writes the same files (:func:`tar_format`, :func:`tar_name`),
but never a plaintext tar beside an encrypted one: pg_basebackup's tar stream is
compressed and encrypted on its way into ``base.tar.<ext>.gpg`` (through
:func:`walvault.backup.cloudbackup.stream_tar`, as into a bucket; with tablespaces,
through the bounded spool of :mod:`walvault.backup.tarspool`).  A data directory holding
a ``base.tar*`` and no ``PG_VERSION`` is one of these.  Recovery streams each file, decrypted
(gpg, with ``encryption_passphrase_command``) and decompressed on the way, through the same
checked unpacker as a backup in object storage (:func:`walvault.backup.cloudrecover.
unpack_files`): no plaintext tar is ever written, and a failure removes what was unpacked.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from walvault.backup.cloudstore import BackupFile
from walvault.backup.info import BackupInfo, parse_tablespaces
from walvault.compression import BY_EXTENSION, EXTENSIONS
from walvault.config import ServerConfig
from walvault.errors import WalvaultError

if TYPE_CHECKING:
    from walvault.backup.cloudbackup import TarTarget


def tar_format(server: ServerConfig) -> bool:
    """Whether a new local backup of ``server`` is tar-format: ``backup_compression`` set
    (``none`` too: uncompressed tars) with ``backup_compression_format = tar`` (Barman's
    default), or ``encryption = gpg`` (only tars can be encrypted)."""
    if server.encryption == "gpg":
        return True
    return server.backup_compression is not None and server.backup_compression_format == "tar"


def tar_name(what: str, codec: str | None, encrypted: bool) -> str:
    """``base.tar[.ext][.gpg]`` for "data", ``<oid>.tar[.ext][.gpg]`` for a tablespace."""
    stem = "base" if what == "data" else what
    return f"{stem}.tar{EXTENSIONS[codec]}" + (".gpg" if encrypted else "")


def local_target(server: ServerConfig, backup_id: str, encrypted: bool) -> TarTarget:
    """``base/<id>/data/`` (created durably) as the target of a tar-format backup: Barman's
    names, the manifest plain beside the tars."""
    from walvault.backup import info as binfo
    from walvault.backup.cloudbackup import TarTarget
    from walvault.backup.cloudstore import backup_compression
    from walvault.fs import ensure_dir
    from walvault.storage.posix import PosixStorage

    where = str(ensure_dir(binfo.data_dir(server, backup_id)))
    storage = PosixStorage(where)
    codec = backup_compression(server)

    def keep_manifest(text: str) -> None:
        storage.put("backup_manifest", text.encode())

    return TarTarget(storage, lambda what: tar_name(what, codec, encrypted), where, keep_manifest)


_TAR_RE = re.compile(r"(?P<name>base|[1-9][0-9]{0,9})\.tar(?P<ext>\.(?!gpg$)\w+)?(?P<gpg>\.gpg)?")


def tar_files(data: str) -> list[BackupFile] | None:
    """The tars of a tar-format backup in ``data`` (``base`` first, as "data"), None for a
    plain copy.  Raises for a tar walvault cannot read (an unknown extension)."""
    names = os.listdir(data)
    if "PG_VERSION" in names or not any(n.startswith("base.tar") for n in names):
        return None
    found = []
    for name in sorted(names):
        match = _TAR_RE.fullmatch(name)
        if match is None:
            continue
        ext = match.group("ext")
        if ext is not None and ext not in BY_EXTENSION:
            raise WalvaultError(
                f"{os.path.join(data, name)}: not a tar walvault can read (accepted: .tar, "
                f"uncompressed or with one of {', '.join(sorted(BY_EXTENSION))}, and .gpg)"
            )
        what = "data" if match.group("name") == "base" else match.group("name")
        size = os.path.getsize(os.path.join(data, name))
        codec = BY_EXTENSION[ext] if ext else None
        found.append(BackupFile(name, what, 0, codec, size, match.group("gpg") is not None))
    found.sort(key=lambda f: (f.name != "data", int(f.name) if f.name != "data" else 0))
    return found


def recover_tar_backup(
    server: ServerConfig,
    backup: BackupInfo,
    data: str,
    files: list[BackupFile],
    destination: str,
    locations: dict[str, str],
    echo: Callable[[str], None],
    progress_stream: TextIO | None = None,
) -> None:
    """Unpack the tar-format backup in ``data`` into ``destination`` and its tablespaces."""
    from walvault.backup.cloudrecover import check_empty, unpack_files
    from walvault.backup.progress import Progress
    from walvault.storage.posix import PosixStorage

    spaces = {str(t.oid) for t in parse_tablespaces(backup.tablespaces)}
    tars = {f.name for f in files if f.name != "data"}
    if tars != spaces:
        odd = sorted(tars ^ spaces)[0]
        raise WalvaultError(
            f"backup {backup.backup_id}: the tablespace tars in {data} ({sorted(tars)}) are not "
            f"its tablespaces ({sorted(spaces)}; first difference: {odd})"
        )
    links = {oid: locations.get(oid) or f"{destination}_tablespaces/{oid}" for oid in spaces}
    for target in links.values():
        check_empty(target)
    encrypted = " and decrypting" if any(f.encrypted for f in files) else ""
    echo(f"Unpacking{encrypted} the tar-format backup ({', '.join(f.key for f in files)}).")
    progress = Progress("Recover", progress_stream)
    unpack_files(
        server, PosixStorage(data), files, destination, links, echo, jobs=1, progress=progress
    )
    manifest = os.path.join(data, "backup_manifest")
    if os.path.isfile(manifest):  # where a plain copy has it
        shutil.copyfile(manifest, os.path.join(destination, "backup_manifest"))
