"""A backup's files against its ``backup_manifest``, with PostgreSQL's own ``pg_verifybackup``.

pg_verifybackup checks the manifest's own checksum, that every file it lists is there with
its size and checksum, and that no other file is (``pg_wal``, ``postgresql.auto.conf``, the
signal files and the manifest are left out, as PostgreSQL's tool does).  Tablespaces, copied
to ``base/<id>/<oid>``, are reached through their ``pg_tblspc`` links.

A tar-format backup (Barman's or walvault's, ``base.tar...``) and a backup in object storage
are read through their tars instead (:mod:`walvault.verify.tarfiles`).

Its WAL parsing is turned off (``--no-parse-wal``): walvault's backups hold no WAL
(``--wal-method=none``), and verify walks the archived WAL itself, further than the backup's
own range (:mod:`walvault.verify.chain`).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from walvault.backup import info as binfo
from walvault.backup.cloudstore import BackupFile
from walvault.backup.info import BackupInfo
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.postgres.programs import find_program, require_compatible
from walvault.storage.base import Storage

VERIFYBACKUP_NAMES = ("pg_verifybackup",)
_SHOWN_ERRORS = 3


@dataclass(frozen=True)
class FilesVerdict:
    """What pg_verifybackup said about one backup."""

    ok: bool
    hint: str
    errors: tuple[str, ...] = ()  # its error lines (the first few)
    error_count: int = 0
    program: str | None = None


def _error_lines(output: str) -> list[str]:
    prefix = "pg_verifybackup: error: "
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]
    return errors or lines


def _tar_verdict(
    server: ServerConfig, storage: Storage, tars: list[BackupFile], raw: bytes, where: str
) -> FilesVerdict:
    """The tars against the manifest ``raw`` (:mod:`walvault.verify.tarfiles`)."""
    from walvault.verify.tarfiles import check_tars, parse_manifest

    try:
        manifest = parse_manifest(raw)
    except ValueError as exc:
        return FilesVerdict(False, f"{where}: {exc}", (str(exc),), 1)
    errors = check_tars(server, storage, tars, manifest)
    if not errors:
        names = ", ".join(t.key.rpartition("/")[2] for t in tars)
        return FilesVerdict(True, f"every file matches backup_manifest (read through {names})")
    return _failed("", errors, None)


def _verify_in_bucket(server: ServerConfig, info: BackupInfo) -> FilesVerdict:
    from walvault.backup.cloudstore import CloudBackups

    cloud = CloudBackups(server)
    raw = cloud.read_manifest(info.backup_id)
    if raw is None:
        return FilesVerdict(
            False, f"backup {info.backup_id} has no backup_manifest: its files cannot be checked"
        )
    tars = cloud.files(info.backup_id)
    return _tar_verdict(server, cloud.storage, tars, raw, cloud.url(info.backup_id))


def _failed(prefix: str, errors: list[str], program: str | None) -> FilesVerdict:
    shown = "; ".join(errors[:_SHOWN_ERRORS])
    more = f" (and {len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
    return FilesVerdict(
        False, f"{prefix}{shown}{more}", tuple(errors[:_SHOWN_ERRORS]), len(errors), program
    )


def verify_files(server: ServerConfig, info: BackupInfo) -> FilesVerdict:
    """Check the backup's files against its manifest: ``pg_verifybackup --no-parse-wal`` on
    a plain copy, the tars read through for a tar-format backup or one in object storage
    (never raises for what it finds: a missing program, manifest or copy is a verdict too)."""
    from walvault.backup.tarbackup import tar_files

    if server.basebackups_in_object_storage:
        return _verify_in_bucket(server, info)
    data = binfo.data_dir(server, info.backup_id)
    if not os.path.isdir(data):
        return FilesVerdict(False, f"the backup's copy {data} is missing")
    manifest = os.path.join(data, "backup_manifest")
    if not os.path.isfile(manifest):
        return FilesVerdict(
            False, f"{data} has no backup_manifest: its files cannot be checked (taken without one)"
        )
    try:
        tars = tar_files(data)
    except WalvaultError as exc:
        return FilesVerdict(False, exc.message)
    if tars is not None:
        from walvault.storage.posix import PosixStorage

        with open(manifest, "rb") as handle:
            raw = handle.read()
        return _tar_verdict(server, PosixStorage(data), tars, raw, manifest)
    program = find_program(VERIFYBACKUP_NAMES, server.search_path)
    try:
        require_compatible(program, "pg_verifybackup", (info.version or 0))
    except WalvaultError as exc:
        return FilesVerdict(False, f"{exc.message}: the backup's files were not checked")
    assert program is not None
    env = dict(os.environ, LC_MESSAGES="C", LC_ALL="C")
    try:
        run = subprocess.run(
            [program.path, "--no-parse-wal", data],
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            check=False,
        )
    except OSError as exc:
        return FilesVerdict(False, f"cannot run {program.path}: {exc.strerror or exc}")
    if run.returncode == 0:
        return FilesVerdict(
            True, "every file matches backup_manifest (pg_verifybackup)", program=program.path
        )
    errors = _error_lines(run.stderr + run.stdout) or [f"exit code {run.returncode}"]
    return _failed("pg_verifybackup: ", errors, program.path)
