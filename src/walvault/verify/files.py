"""A backup's files against its ``backup_manifest``, with PostgreSQL's own ``pg_verifybackup``.

pg_verifybackup checks the manifest's own checksum, that every file it lists is there with
its size and checksum, and that no other file is (``pg_wal``, ``postgresql.auto.conf``, the
signal files and the manifest are left out, as PostgreSQL's tool does).  Tablespaces, copied
to ``base/<id>/<oid>``, are reached through their ``pg_tblspc`` links.

Its WAL parsing is turned off (``--no-parse-wal``): walvault's backups hold no WAL
(``--wal-method=none``), and verify walks the archived WAL itself, further than the backup's
own range (:mod:`walvault.verify.chain`).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from walvault.backup import info as binfo
from walvault.backup.info import BackupInfo
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.postgres.programs import find_program, require_compatible

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


def verify_files(server: ServerConfig, info: BackupInfo) -> FilesVerdict:
    """Run ``pg_verifybackup --no-parse-wal`` on the backup's copy (never raises for what it
    finds: a missing program, manifest or copy is a verdict too)."""
    from walvault.backup.tarbackup import tar_files

    data = binfo.data_dir(server, info.backup_id)
    if not os.path.isdir(data):
        return FilesVerdict(False, f"the backup's copy {data} is missing")
    if tar_files(data) is not None:
        return FilesVerdict(
            False,
            f"{data} holds a tar-format backup: pg_verifybackup checks plain copies only, so "
            "its files were not checked (recover checks every tar member; verify --wal-only "
            "checks its WAL)",
        )
    if not os.path.isfile(os.path.join(data, "backup_manifest")):
        return FilesVerdict(
            False, f"{data} has no backup_manifest: its files cannot be checked (taken without one)"
        )
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
    shown = "; ".join(errors[:_SHOWN_ERRORS])
    more = f" (and {len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
    return FilesVerdict(
        False,
        f"pg_verifybackup: {shown}{more}",
        tuple(errors[:_SHOWN_ERRORS]),
        len(errors),
        program.path,
    )
