"""``meta/<id>-backup.info``: a backup's metadata in Barman's ``key=value`` format.

Barman writes Python-ish values: ``None`` for missing, datetimes as ``str(datetime)`` (e.g.
``2026-11-25 16:00:39.347679+00:00``). Unknown keys from Barman files are kept as they are.

A file is validated when read and never half-used: every line ``key=value``, a known
``status``, numbers, times and WAL names where they belong, and a ``backup_id`` (when the file
has one) equal to the id in its file name.  A file that fails is a
:class:`~walvault.errors.StateFileError`: :func:`scan_backups` returns it beside the good
backups, so listings name it, ``check`` fails on it, and WAL removal waits until it is fixed
(the WAL of a backup whose metadata cannot be read must not be judged unneeded).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import TYPE_CHECKING

from walvault.config import ServerConfig
from walvault.errors import StateFileError, WalvaultError, describe_os_error
from walvault.fs import durable_replace_bytes, remove_durably
from walvault.wal.names import is_segment

if TYPE_CHECKING:
    from walvault.backup.cloudstore import CloudBackups

STARTED = "STARTED"
WAITING_FOR_WALS = "WAITING_FOR_WALS"
DONE = "DONE"
FAILED = "FAILED"
#: Every status Barman writes (EMPTY and SYNCING are Barman's own).
STATUSES = frozenset({"EMPTY", STARTED, WAITING_FOR_WALS, DONE, FAILED, "SYNCING"})
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
    tablespaces: str | None = None  # Barman's repr: [('t', 16385, '/x')]
    size: int | None = None
    error: str | None = None
    #: Barman 3.11+'s fields for PostgreSQL 17 incremental backups (``on``/``off``, the
    #: parent's id, the children's ids comma-separated, pg_database_size's sum at the start)
    data_checksums: str | None = None
    summarize_wal: str | None = None
    parent_backup_id: str | None = None
    children_backup_ids: str | None = None
    cluster_size: int | None = None
    extra: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def with_(self, **changes: object) -> BackupInfo:
        """A copy with ``changes``."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def is_incremental(self) -> bool:
        """Taken with ``pg_basebackup --incremental`` on a parent (Barman's rule)."""
        return self.parent_backup_id is not None

    @property
    def backup_type(self) -> str:
        """``full`` or ``incremental`` (Barman's ``backup_type`` for postgres backups)."""
        return "incremental" if self.is_incremental else "full"

    @property
    def children(self) -> list[str]:
        """The ids in ``children_backup_ids``."""
        return self.children_backup_ids.split(",") if self.children_backup_ids else []


_INTS = {
    "begin_offset",
    "end_offset",
    "timeline",
    "xlog_segment_size",
    "version",
    "size",
    "cluster_size",
}
_TIMES = {"begin_time", "end_time"}
_KNOWN = {f.name for f in fields(BackupInfo)} - {"extra"}
_EXPLAINED = {"status", "begin_wal", "end_wal", "parent_backup_id", "children_backup_ids"}


@dataclass(frozen=True)
class Tablespace:
    """A tablespace of the backed-up cluster (copied to ``base/<id>/<oid>``)."""

    name: str
    oid: int
    location: str


_QUOTED = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_TABLESPACE_RE = re.compile(rf"Tablespace\(name={_QUOTED}, oid=(\d+), location={_QUOTED}\)")


def format_tablespaces(items: list[Tablespace]) -> str | None:
    """Barman's ``tablespaces=`` value, None when there are none: the repr of a list of
    ``(name, oid, location)`` tuples, which Barman reads back with ``ast.literal_eval``."""
    if not items:
        return None
    return repr([(t.name, t.oid, t.location) for t in items])


def parse_tablespaces(text: str | None) -> list[Tablespace]:
    """The tablespaces recorded by :func:`format_tablespaces` or by Barman -- and the
    ``[Tablespace(name=..., oid=..., location=...)]`` spelling older walvault wrote."""
    import ast

    if not text or text == "None":
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return [
            Tablespace(ast.literal_eval(m.group(1)), int(m.group(2)), ast.literal_eval(m.group(3)))
            for m in _TABLESPACE_RE.finditer(text)
        ]
    spaces = []
    for item in value if isinstance(value, list | tuple) else ():
        if isinstance(item, list | tuple) and len(item) >= 3:
            name, oid, location = item[0], item[1], item[2]
            if isinstance(name, str) and isinstance(oid, int) and isinstance(location, str):
                spaces.append(Tablespace(name, oid, location))
    return spaces


def info_path(server: ServerConfig, backup_id: str) -> str:
    """``<backup_directory>/meta/<id>-backup.info``."""
    if not BACKUP_ID_RE.fullmatch(backup_id):
        raise ValueError(f"'{backup_id}' is not a backup id (YYYYMMDDTHHMMSS)")
    return os.path.join(server.meta_directory, f"{backup_id}-backup.info")


def data_dir(server: ServerConfig, backup_id: str) -> str:
    """``<basebackups_directory>/<id>/data``: the copy of PGDATA (local backups only)."""
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


def _decode(key: str, raw: str) -> object:
    """The typed value of one known key (ValueError when it is not one)."""
    if raw == "None" or raw == "":
        return None
    if key in _INTS:
        value = int(raw)
        if value < 0:
            raise ValueError("negative")
        return value
    if key in _TIMES:
        return datetime.fromisoformat(raw)
    if key == "status" and raw not in STATUSES:
        raise ValueError("unknown status")
    if key in ("begin_wal", "end_wal") and not is_segment(raw):
        raise ValueError("not a WAL segment name")
    if key == "parent_backup_id" and not BACKUP_ID_RE.fullmatch(raw):
        raise ValueError("not a backup id")
    if key == "children_backup_ids" and not all(
        BACKUP_ID_RE.fullmatch(part) for part in raw.split(",")
    ):
        raise ValueError("not backup ids separated by commas")
    return raw


def loads(text: str, backup_id: str, server_name: str) -> BackupInfo:
    """Parse the file content (unknown keys go to ``extra``); ValueError says what is wrong."""
    values: dict[str, object] = {"backup_id": backup_id, "server_name": server_name}
    extra = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, raw = line.partition("=")
        if not sep:
            raise ValueError(f"line {number} is not 'key=value'")
        key = key.strip()
        if key not in _KNOWN:
            extra.append((key, raw))
            continue
        try:
            values[key] = _decode(key, raw)
        except ValueError as exc:
            reason = str(exc) if key in _EXPLAINED else "not valid"
            raise ValueError(f"line {number}: {key}: {reason}") from None
    if values["backup_id"] != backup_id:
        shown = values["backup_id"]
        shown = shown if isinstance(shown, str) and BACKUP_ID_RE.fullmatch(shown) else "another id"
        raise ValueError(
            f"it is the metadata of backup {shown}, not of {backup_id} as its file name says"
        )
    if values.get("status") is None:
        raise ValueError("it has no status line")
    return BackupInfo(**values, extra=tuple(extra))  # type: ignore[arg-type]


def _cloud(server: ServerConfig) -> CloudBackups | None:
    """The bucket holding the server's backups, None when they are on local disk."""
    if not server.basebackups_in_object_storage:
        return None
    from walvault.backup.cloudstore import CloudBackups

    return CloudBackups(server)


def save(server: ServerConfig, info: BackupInfo) -> None:
    """Write the metadata durably (temp file, fsync, rename, fsync directory).

    Backups in object storage (:mod:`walvault.backup.cloudstore`): a STARTED backup, and a
    FAILED one whose record is still local, are recorded locally; every other state goes to
    the bucket's ``backup.info`` (a single PUT, durable when acknowledged), and then the
    local record is removed.
    """
    path = info_path(server, info.backup_id)
    cloud = _cloud(server)
    if cloud is not None and not (
        info.status == STARTED or (info.status == FAILED and os.path.exists(path))
    ):
        cloud.write_info(info.backup_id, dumps(info))
        remove_durably(path, missing_ok=True)
        return
    os.makedirs(server.meta_directory, exist_ok=True)
    durable_replace_bytes(path, dumps(info).encode())


def remove(server: ServerConfig, backup_id: str) -> None:
    """Remove the backup's metadata, local and (object storage) in the bucket.

    For a backup in object storage this is part of :meth:`CloudBackups.remove`, which
    deletes ``backup.info`` after the tars; here only the local record is left.
    """
    remove_durably(info_path(server, backup_id), missing_ok=True)


def _load_cloud(server: ServerConfig, cloud: CloudBackups, backup_id: str) -> BackupInfo:
    where = cloud.storage.url(cloud.info_key(backup_id))
    try:
        text = cloud.read_info(backup_id)
    except WalvaultError as exc:
        raise StateFileError(where, exc.message) from None
    if text is None:
        raise FileNotFoundError(where)
    try:
        return loads(text, backup_id, server.name)
    except ValueError as exc:
        raise StateFileError(where, f"malformed: {exc}") from None


def load(server: ServerConfig, backup_id: str) -> BackupInfo:
    """Read one backup's metadata (FileNotFoundError when there is none, StateFileError when
    it cannot be read or is malformed)."""
    path = info_path(server, backup_id)
    cloud = _cloud(server)
    if cloud is not None and not os.path.exists(path):
        return _load_cloud(server, cloud, backup_id)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StateFileError(path, f"unreadable: {describe_os_error(exc)}") from None
    except UnicodeDecodeError:
        raise StateFileError(path, "malformed: not UTF-8 text") from None
    try:
        return loads(text, backup_id, server.name)
    except ValueError as exc:
        raise StateFileError(path, f"malformed: {exc}") from None


def scan_backups(server: ServerConfig) -> tuple[list[BackupInfo], list[StateFileError]]:
    """Every backup of the server, oldest first (ids sort by time), and every
    ``*-backup.info`` that cannot be used.  A ``meta/`` that cannot be listed raises."""
    good: list[BackupInfo] = []
    bad: list[StateFileError] = []
    cloud = _cloud(server)
    if cloud is not None:
        for backup_id in cloud.listed_ids():
            try:
                good.append(_load_cloud(server, cloud, backup_id))
            except FileNotFoundError:
                continue  # deleted meanwhile
            except StateFileError as exc:
                bad.append(exc)
    try:
        names = sorted(os.listdir(server.meta_directory))
    except FileNotFoundError:
        return good, bad
    in_bucket = {b.backup_id for b in good}
    for name in names:
        if not name.endswith("-backup.info"):
            continue
        backup_id = name[:-12]
        if not BACKUP_ID_RE.fullmatch(backup_id):
            path = os.path.join(server.meta_directory, name)
            bad.append(StateFileError(path, "malformed: not named <YYYYMMDDTHHMMSS>-backup.info"))
            continue
        if backup_id in in_bucket:
            continue  # the bucket's record is the backup's (the local one is a leftover)
        try:
            good.append(load(server, backup_id))
        except FileNotFoundError:
            continue  # deleted meanwhile
        except StateFileError as exc:
            bad.append(exc)
    good.sort(key=lambda b: b.backup_id)
    return good, bad


def iter_backups(server: ServerConfig) -> Iterator[BackupInfo]:
    """Every usable backup of the server, oldest first (see :func:`scan_backups` for the
    others)."""
    yield from scan_backups(server)[0]


def no_completed_backup(server: ServerConfig, backups: list[BackupInfo]) -> str:
    """Why ``latest``/``oldest`` name nothing: the backups there are, and what each waits for."""
    if not backups:
        return f"server '{server.name}' has no backup"
    said = []
    for backup in reversed(backups[-3:]):
        if backup.status == WAITING_FOR_WALS:
            said.append(
                f"{backup.backup_id} is WAITING_FOR_WALS (its WAL up to {backup.end_wal} is not "
                f"all archived yet: 'walvault check-backup {server.name} {backup.backup_id}', "
                "or cron, marks it DONE once it is)"
            )
        else:
            said.append(f"{backup.backup_id} is {backup.status}")
    more = f" and {len(backups) - 3} older" if len(backups) > 3 else ""
    return f"server '{server.name}' has no completed backup: " + "; ".join(said) + more


def resolve_backup_id(server: ServerConfig, wanted: str) -> BackupInfo:
    """``latest``/``last``, ``oldest``/``first``, a backup id or a backup name -> its info."""
    from walvault.errors import WalvaultError

    every = list(iter_backups(server))
    done = [b for b in every if b.status == DONE]
    if wanted in ("latest", "last", "oldest", "first") and not done:
        raise WalvaultError(no_completed_backup(server, every))
    if wanted in ("latest", "last"):
        return done[-1]
    if wanted in ("oldest", "first"):
        return done[0]
    backups, problems = scan_backups(server)
    for backup in backups:
        if wanted in (backup.backup_id, backup.backup_name):
            return backup
    for problem in problems:
        if os.path.basename(problem.path) == f"{wanted}-backup.info":
            raise problem
    raise WalvaultError(
        f"unknown backup '{wanted}' for server '{server.name}' (accepted: a backup id "
        "YYYYMMDDTHHMMSS, a backup name, latest, last, oldest, first)"
    )
