"""``meta/<id>-backup.info``: a backup's metadata in Barman's ``key=value`` format.

Barman writes Python-ish values: ``None`` for missing, datetimes as ``str(datetime)`` (e.g.
``2026-11-25 16:00:39.347679+00:00``). Unknown keys from Barman files are kept as they are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import datetime

from walvault.config import ServerConfig
from walvault.fs import durable_replace_bytes

STARTED = "STARTED"
WAITING_FOR_WALS = "WAITING_FOR_WALS"
DONE = "DONE"
FAILED = "FAILED"
#: Seconds ``backup --wait`` waits for the WAL a backup needs (0 = no limit).
DEFAULT_WAIT_TIMEOUT = 300
BACKUP_ID_RE = re.compile(r"\d{8}T\d{6}")


@dataclass(frozen=True)
class BackupInfo:
    """The metadata walvault reads and writes; ``extra`` keeps other keys untouched."""

    backup_id: str
    server_name: str
    status: str = STARTED
    backup_name: str | None = None
    mode: str = "postgres"
    begin_time: datetime | None = None
    end_time: datetime | None = None
    begin_wal: str | None = None
    end_wal: str | None = None
    begin_xlog: str | None = None
    end_xlog: str | None = None
    begin_offset: int | None = None
    end_offset: int | None = None
    timeline: int | None = None
    xlog_segment_size: int | None = None
    systemid: str | None = None
    version: int | None = None
    pgdata: str | None = None
    config_file: str | None = None
    hba_file: str | None = None
    ident_file: str | None = None
    tablespaces: str | None = None  # Barman's repr: [Tablespace(name='t', oid=1, location='/x')]
    size: int | None = None
    error: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def with_(self, **changes: object) -> BackupInfo:
        """A copy with ``changes``."""
        return replace(self, **changes)  # type: ignore[arg-type]


_INTS = {"begin_offset", "end_offset", "timeline", "xlog_segment_size", "version", "size"}
_TIMES = {"begin_time", "end_time"}
_KNOWN = {f.name for f in fields(BackupInfo)} - {"extra"}


@dataclass(frozen=True)
class Tablespace:
    """A tablespace of the backed-up cluster (copied to ``base/<id>/<oid>``)."""

    name: str
    oid: int
    location: str


_QUOTED = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_TABLESPACE_RE = re.compile(rf"Tablespace\(name={_QUOTED}, oid=(\d+), location={_QUOTED}\)")


def format_tablespaces(items: list[Tablespace]) -> str | None:
    """Barman's ``tablespaces=`` value (a Python repr of namedtuples), None when there are none."""
    if not items:
        return None
    inner = ", ".join(
        f"Tablespace(name={t.name!r}, oid={t.oid}, location={t.location!r})" for t in items
    )
    return f"[{inner}]"


def parse_tablespaces(text: str | None) -> list[Tablespace]:
    """The tablespaces recorded by :func:`format_tablespaces` (or by Barman)."""
    import ast

    if not text:
        return []
    return [
        Tablespace(ast.literal_eval(m.group(1)), int(m.group(2)), ast.literal_eval(m.group(3)))
        for m in _TABLESPACE_RE.finditer(text)
    ]


def info_path(server: ServerConfig, backup_id: str) -> str:
    """``<backup_directory>/meta/<id>-backup.info``."""
    if not BACKUP_ID_RE.fullmatch(backup_id):
        raise ValueError(f"'{backup_id}' is not a backup id (YYYYMMDDTHHMMSS)")
    return os.path.join(server.meta_directory, f"{backup_id}-backup.info")


def data_dir(server: ServerConfig, backup_id: str) -> str:
    """``<basebackups_directory>/<id>/data``: the copy of PGDATA."""
    if not BACKUP_ID_RE.fullmatch(backup_id):
        raise ValueError(f"'{backup_id}' is not a backup id (YYYYMMDDTHHMMSS)")
    return os.path.join(server.basebackups_directory, backup_id, "data")


def _encode(value: object) -> str:
    if value is None:
        return "None"
    return str(value)


def dumps(info: BackupInfo) -> str:
    """The file content: sorted ``key=value`` lines."""
    pairs = {f.name: _encode(getattr(info, f.name)) for f in fields(info) if f.name != "extra"}
    pairs.update(dict(info.extra))
    return "".join(f"{key}={value}\n" for key, value in sorted(pairs.items()))


def loads(text: str, backup_id: str, server_name: str) -> BackupInfo:
    """Parse the file content (unknown keys go to ``extra``)."""
    values: dict[str, object] = {"backup_id": backup_id, "server_name": server_name}
    extra = []
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        if key not in _KNOWN:
            extra.append((key, raw))
            continue
        if raw == "None" or raw == "":
            values[key] = None
        elif key in _INTS:
            values[key] = int(raw)
        elif key in _TIMES:
            values[key] = datetime.fromisoformat(raw)
        else:
            values[key] = raw
    values.setdefault("status", FAILED)
    return BackupInfo(**values, extra=tuple(extra))  # type: ignore[arg-type]


def save(server: ServerConfig, info: BackupInfo) -> None:
    """Write the metadata durably (temp file, fsync, rename, fsync directory)."""
    os.makedirs(server.meta_directory, exist_ok=True)
    durable_replace_bytes(info_path(server, info.backup_id), dumps(info).encode())


def load(server: ServerConfig, backup_id: str) -> BackupInfo:
    """Read one backup's metadata."""
    with open(info_path(server, backup_id), encoding="utf-8") as handle:
        return loads(handle.read(), backup_id, server.name)


def iter_backups(server: ServerConfig) -> Iterator[BackupInfo]:
    """Every backup of the server, oldest first (ids sort by time)."""
    try:
        names = sorted(os.listdir(server.meta_directory))
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith("-backup.info") and BACKUP_ID_RE.fullmatch(name[:-12]):
            try:
                yield load(server, name[:-12])
            except (OSError, ValueError):
                continue


def resolve_backup_id(server: ServerConfig, wanted: str) -> BackupInfo:
    """``latest``/``last``, ``oldest``/``first``, a backup id or a backup name -> its info."""
    from walvault.errors import WalvaultError

    done = [b for b in iter_backups(server) if b.status == DONE]
    if wanted in ("latest", "last"):
        if not done:
            raise WalvaultError(f"server '{server.name}' has no completed backup")
        return done[-1]
    if wanted in ("oldest", "first"):
        if not done:
            raise WalvaultError(f"server '{server.name}' has no completed backup")
        return done[0]
    for backup in iter_backups(server):
        if wanted in (backup.backup_id, backup.backup_name):
            return backup
    raise WalvaultError(
        f"unknown backup '{wanted}' for server '{server.name}' (accepted: a backup id "
        "YYYYMMDDTHHMMSS, a backup name, latest, last, oldest, first)"
    )
