"""``backup``: a base backup with pg_basebackup over the streaming connection, in Barman's layout.

Steps, under the server's ``.<server>-backup.lock``:

1. check the source: ``conninfo`` and ``streaming_conninfo`` reach one cluster, the one in
   ``identity.json`` (recorded on first contact); find a compatible pg_basebackup;
2. pick the id (local time ``%Y%m%dT%H%M%S``), take ``.<server>-<id>.lock``, record STARTED;
3. run pg_basebackup into ``base/<id>/data`` (without WAL: streaming archives it) -- or, with
   ``basebackups_directory = s3://...``, stream its tar output into the bucket
   (:mod:`walvault.backup.cloudbackup`); on failure record FAILED with the reason and remove
   the partial copy (aborting the incomplete upload);
4. read begin/end LSN and timeline from ``backup_label`` and ``backup_manifest``; record
   WAITING_FOR_WALS with every field;
5. ``pg_create_restore_point('walvault_<id>')`` and ``pg_switch_wal()``, so the last WAL the
   backup needs is closed and streamed now (a warning when not allowed);
6. check-backup (DONE once every WAL from begin to end is archived); with ``--wait``, run
   archive-wal until then.

No WAL is ever removed here: that is retention's job.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg

from walvault import locks
from walvault.backup import chain
from walvault.backup import info as binfo
from walvault.backup.info import (
    DEFAULT_WAIT_TIMEOUT,
    FAILED,
    STARTED,
    WAITING_FOR_WALS,
    BackupInfo,
    Tablespace,
)
from walvault.backup.label import backup_position, parse_backup_label, parse_manifest_ranges
from walvault.backup.pgbasebackup import BASEBACKUP_NAMES, build_basebackup_command, run_basebackup
from walvault.backup.progress import Progress
from walvault.backup.tarbackup import tar_format
from walvault.backup.walcheck import check_backup, id_lock, remove_backup_data
from walvault.config import ServerConfig
from walvault.errors import LockBusy, WalvaultError
from walvault.fs import tree_size
from walvault.humanize import pretty_duration, pretty_size
from walvault.postgres.connection import (
    ConnectionFailed,
    connect,
    connect_replication,
    describe_error,
)
from walvault.postgres.status import ServerInfo
from walvault.wal.names import format_lsn

log = logging.getLogger("walvault.backup")
Echo = Callable[[str], None]
RESERVED_NAMES = ("latest", "last", "oldest", "first")


@dataclass(frozen=True)
class SourceFacts:
    """What the server told us before the copy."""

    info: ServerInfo
    pgdata: str | None
    config_file: str | None
    hba_file: str | None
    ident_file: str | None
    tablespaces: list[Tablespace]
    data_checksums: str | None = None
    summarize_wal: str | None = None  # None before PostgreSQL 17
    cluster_size: int | None = None


def _setting(conn: psycopg.Connection[tuple[object, ...]], name: str) -> str | None:
    try:
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    except psycopg.Error:  # needs pg_read_all_settings: only informative
        return None
    return str(row[0]) if row and row[0] is not None else None


def inspect_source(server: ServerConfig) -> SourceFacts:
    """Read the server's facts over ``conninfo`` and check its identity (recorded at first).

    ``streaming_conninfo``, which pg_basebackup will use, must reach the same cluster: it
    is asked with IDENTIFY_SYSTEM before anything is copied.  (The copy's own
    ``global/pg_control`` is checked against the same identity afterwards as well.)
    """
    from walvault.postgres.replication import SystemIdentity, identify_system
    from walvault.postgres.sources import WalSource, check_or_record_identity
    from walvault.postgres.status import server_info

    assert server.conninfo
    with connect(server.conninfo, timeout=server.check_timeout or 10) as conn:
        info = server_info(conn)
        names = ["data_directory", "config_file", "hba_file", "ident_file", "data_checksums"]
        if info.version_num >= chain.INCREMENTAL_SINCE:
            names.append("summarize_wal")
        settings = {key: _setting(conn, key) for key in names}
        cluster_size = _cluster_size(conn)
        rows = conn.execute(
            "SELECT spcname::text, oid::bigint, pg_tablespace_location(oid) FROM pg_tablespace "
            "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid"
        ).fetchall()
    assert server.streaming_conninfo
    try:
        with connect_replication(
            server.streaming_conninfo,
            application_name=server.streaming_backup_name,
            timeout=server.check_timeout or 10,
        ) as conn:
            streamed: str | None = identify_system(conn).system_identifier
    except (ConnectionFailed, psycopg.Error) as exc:  # pg_basebackup fails too, saying why
        log.debug("cannot check streaming_conninfo before the copy: %s", exc)
        streamed = None
    if streamed is not None and streamed != info.system_identifier:
        raise WalvaultError(
            f"streaming_conninfo of server '{server.name}' reaches system {streamed} but "
            f"conninfo reaches system {info.system_identifier}: pg_basebackup would copy "
            "another cluster (they must point at the same cluster); nothing was copied"
        )
    identity = SystemIdentity(info.system_identifier, info.timeline, info.current_lsn or 0)
    check_or_record_identity(server, WalSource(identity, info, None))
    spaces = [Tablespace(str(r[0]), int(str(r[1])), str(r[2])) for r in rows]
    return SourceFacts(
        info,
        settings["data_directory"],
        settings["config_file"],
        settings["hba_file"],
        settings["ident_file"],
        spaces,
        settings["data_checksums"],
        settings.get("summarize_wal"),
        cluster_size,
    )


def _cluster_size(conn: psycopg.Connection[tuple[object, ...]]) -> int | None:
    """The sum of pg_database_size (Barman's ``cluster_size``; None when not allowed)."""
    try:
        row = conn.execute(
            "SELECT sum(pg_database_size(oid))::bigint FROM pg_database WHERE datallowconn"
        ).fetchone()
    except psycopg.Error:
        return None
    return int(str(row[0])) if row and row[0] is not None else None


def copied_system_identifier(data: str) -> str | None:
    """The system identifier in the copy's ``global/pg_control`` (its first 8 bytes)."""
    try:
        with open(os.path.join(data, "global", "pg_control"), "rb") as handle:
            head = handle.read(8)
    except FileNotFoundError:
        return None
    return str(struct.unpack("=Q", head)[0]) if len(head) == 8 else None


def validate_name(server: ServerConfig, name: str) -> str:
    """A ``--name`` must not look like an id or a keyword, and must be unique."""
    text = name.strip()
    if not text or "\n" in text or "\0" in text:
        raise WalvaultError("a backup name must be non-empty text on one line")
    if binfo.BACKUP_ID_RE.fullmatch(text) or text in RESERVED_NAMES:
        raise WalvaultError(
            f"'{text}' cannot be a backup name: it looks like a backup id or is one of "
            f"{', '.join(RESERVED_NAMES)}"
        )
    if any(b.backup_name == text for b in binfo.iter_backups(server)):
        raise WalvaultError(f"another backup of server '{server.name}' is named '{text}'")
    return text


def _new_backup(server: ServerConfig) -> tuple[str, locks.ServerLock]:
    """A fresh id (waiting a second while the current one is taken) and its held lock."""
    while True:
        backup_id = time.strftime("%Y%m%dT%H%M%S")
        taken = os.path.exists(binfo.info_path(server, backup_id))
        if not taken and server.basebackups_in_object_storage:
            from walvault.backup.cloudstore import CloudBackups

            taken = CloudBackups(server).exists(backup_id)
        elif not taken:
            taken = os.path.lexists(os.path.dirname(binfo.data_dir(server, backup_id)))
        if not taken:
            lock = id_lock(server, backup_id)
            try:
                return backup_id, lock.acquire()
            except LockBusy:
                pass
        time.sleep(1)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _finish_info(
    info: BackupInfo, backup_dir: str, seg_size: int, end_hint: int | None
) -> BackupInfo:
    """Fill begin/end WAL and LSN from the copied ``backup_label`` and ``backup_manifest``."""
    data = os.path.join(backup_dir, "data")
    return position_info(
        info,
        copied_id=copied_system_identifier(data),
        label_text=_read(os.path.join(data, "backup_label")),
        manifest_text=_read(os.path.join(data, "backup_manifest")),
        seg_size=seg_size,
        end_hint=end_hint,
        size=tree_size(backup_dir),
        where=data,
    )


def position_info(
    info: BackupInfo,
    *,
    copied_id: str | None,
    label_text: str | None,
    manifest_text: str | None,
    seg_size: int,
    end_hint: int | None,
    size: int,
    where: str,
) -> BackupInfo:
    """``info`` with the copy's positions, from its ``backup_label`` and ``backup_manifest``
    (files of a plain copy, or members of the tar stream), after checking that the copy's
    ``pg_control`` is of the expected system."""
    if copied_id != info.systemid:
        raise WalvaultError(
            f"the copy is of system {copied_id}, not of system {info.systemid} (conninfo): "
            "conninfo and streaming_conninfo must reach the same cluster"
        )
    if label_text is None:
        raise WalvaultError(f"pg_basebackup left no backup_label in {where}")
    label = parse_backup_label(label_text)
    ranges = parse_manifest_ranges(manifest_text) if manifest_text else None
    pos = backup_position(label, ranges, seg_size, end_hint)
    return info.with_(
        end_time=datetime.now().astimezone(),
        begin_xlog=format_lsn(pos.begin_lsn),
        end_xlog=format_lsn(pos.end_lsn),
        begin_wal=pos.begin_wal,
        end_wal=pos.end_wal,
        begin_offset=pos.begin_offset,
        end_offset=pos.end_offset,
        timeline=pos.begin_timeline,
        size=size,
    )


def _lsn_line(what: str, lsn: str | None, wal: str | None, offset: int | None) -> str:
    return f"Backup {what} at LSN: {lsn} ({wal}, {offset or 0:08X})"


def mark_end(server: ServerConfig, backup_id: str, warn: Echo) -> None:
    """Restore point ``walvault_<id>`` and a WAL switch; warn (never fail) when refused."""
    from walvault.postgres import switch

    assert server.conninfo
    later = (
        "the backup's last WAL file reaches the archive at the next natural WAL switch "
        "(--wait waits until then)"
    )
    try:
        conn = connect(server.conninfo, timeout=server.check_timeout or 10)
    except ConnectionFailed as exc:
        warn(f"cannot connect to server '{server.name}' to switch WAL: {exc.message}; {later}")
        return
    with conn:
        if switch.is_in_recovery(conn):
            warn(
                f"server '{server.name}' is a standby: no restore point and no WAL switch; {later}"
            )
            return
        try:
            conn.execute("SELECT pg_create_restore_point(%s)", (f"walvault_{backup_id}",))
        except psycopg.Error as exc:
            warn(
                f"cannot create the restore point 'walvault_{backup_id}': "
                f"{describe_error(exc, server.conninfo)} (grant EXECUTE on "
                "pg_create_restore_point(text) to the conninfo user)"
            )
        try:
            switch.switch_wal(conn)
        except WalvaultError as exc:
            warn(f"cannot switch WAL on server '{server.name}': {exc.message}; {later}")


def _fail(server: ServerConfig, info: BackupInfo, reason: str) -> None:
    binfo.save(
        server, info.with_(status=FAILED, error=reason, end_time=datetime.now().astimezone())
    )
    remove_backup_data(server, info.backup_id)
    log.error("backup %s of server %s FAILED: %s", info.backup_id, server.name, reason)


def _copy_tars(
    server: ServerConfig,
    info: BackupInfo,
    facts: SourceFacts,
    program: str,
    echo: Echo,
    debug: Echo,
    progress: Progress,
    parent_manifest: str | None = None,
) -> BackupInfo:
    """Stream pg_basebackup's tar, compressed (and encrypted), into the bucket
    (:mod:`walvault.backup.cloudbackup`) or into local tars (:mod:`walvault.backup.tarbackup`),
    then keep its manifest (before ``backup.info``, which makes the backup visible)."""
    from walvault.archive.archiver import encryption_for
    from walvault.backup import cloudbackup
    from walvault.backup.cloudstore import backup_compression
    from walvault.backup.tarbackup import local_target

    encrypt = encryption_for(server, "nothing was backed up")  # the key, before pg_basebackup
    encrypted = encrypt is not None
    if server.basebackups_in_object_storage:
        target = cloudbackup.bucket_target(server, info.backup_id, encrypted)
    else:
        target = local_target(server, info.backup_id, encrypted)
    where = target.where
    echo(f"Starting backup using postgres method for server {server.name} in {where}")
    echo(f"Starting backup copy via pg_basebackup for {info.backup_id}")
    started = time.monotonic()
    command = cloudbackup.stream_command(server, program, parent_manifest)
    try:
        if facts.tablespaces:  # one tar per tablespace: through a bounded local spool
            from walvault.backup.tarspool import spool_tars

            watcher, run, stored, manifest = spool_tars(
                server, info.backup_id, target, command, debug, progress, encrypt=encrypt
            )
        else:
            watcher, run, stored = cloudbackup.stream_tar(
                server, target, command, debug, progress, encrypt
            )
            manifest = None
    except cloudbackup.CopyFailed as exc:
        raise _Failed(exc.message) from None
    finally:
        progress.close()
    elapsed = time.monotonic() - started
    rate = pretty_size(int(watcher.size / elapsed)) if elapsed > 0 else "-"
    echo(
        f"Copy done (time: {pretty_duration(elapsed)}, {pretty_size(watcher.size)} read, "
        f"{pretty_size(stored)} stored, {rate}/s)"
    )
    label, streamed_manifest, control = cloudbackup.backup_position_texts(watcher)
    manifest = manifest or streamed_manifest
    copied = str(struct.unpack("=Q", control[:8])[0]) if control and len(control) >= 8 else None
    try:
        done = position_info(
            info,
            copied_id=copied,
            label_text=label,
            manifest_text=manifest,
            seg_size=facts.info.wal_segment_size,
            end_hint=run.end_lsn,
            size=stored,
            where=where,
        )
    except ValueError as exc:
        raise _Failed(f"cannot read the backup's WAL position: {exc}") from None
    if manifest:
        target.keep_manifest(manifest)
    return cloudbackup.cloud_info_fields(done, backup_compression(server), encrypted)


def _copy(
    server: ServerConfig,
    info: BackupInfo,
    facts: SourceFacts,
    program: str,
    echo: Echo,
    debug: Echo,
    progress: Progress,
    parent_manifest: str | None = None,
) -> BackupInfo:
    """Run pg_basebackup and read where the copy starts and ends (raises on failure)."""
    if server.basebackups_in_object_storage or tar_format(server):
        return _copy_tars(server, info, facts, program, echo, debug, progress, parent_manifest)
    backup_dir = os.path.dirname(binfo.data_dir(server, info.backup_id))
    echo(f"Starting backup using postgres method for server {server.name} in {backup_dir}")
    command = build_basebackup_command(
        server, program, backup_dir, facts.tablespaces, parent_manifest, progress.shown
    )
    os.makedirs(backup_dir, mode=0o700, exist_ok=True)
    echo(f"Starting backup copy via pg_basebackup for {info.backup_id}")
    started = time.monotonic()
    try:
        run = run_basebackup(server, command, debug, progress)
    finally:
        progress.close()
    if run.returncode != 0:
        raise _Failed(run.failure())
    echo(f"Copy done (time: {pretty_duration(time.monotonic() - started)})")
    try:
        return _finish_info(info, backup_dir, facts.info.wal_segment_size, run.end_lsn)
    except ValueError as exc:
        raise _Failed(f"cannot read the backup's WAL position: {exc}") from None


class _Failed(WalvaultError):
    """The copy failed: the reason recorded in backup.info."""


def copy_backup(
    server: ServerConfig,
    name: str | None,
    echo: Echo,
    debug: Echo,
    progress: Progress | None = None,
    incremental: str | None = None,
) -> BackupInfo:
    """Steps 1-4 (see the module docstring); the caller holds the server's backup lock.

    ``incremental`` names the parent (``--incremental``): the copy holds only what changed
    since it (:mod:`walvault.backup.chain`)."""
    from walvault.postgres.programs import find_program, require_compatible

    progress = progress or Progress("Backup", None, enabled=False)
    facts = inspect_source(server)
    parent, manifest = (None, None)
    if incremental is not None:
        parent, manifest = chain.parent_for(
            server,
            incremental,
            facts.info.version_num,
            facts.summarize_wal,
            facts.info.system_identifier,
        )

    program = find_program(BASEBACKUP_NAMES, server.search_path)
    require_compatible(program, "pg_basebackup", facts.info.version_num)
    assert program is not None
    backup_id, lock = _new_backup(server)
    try:
        info = BackupInfo(
            backup_id,
            server.name,
            status=STARTED,
            backup_name=name,
            begin_time=datetime.now().astimezone(),
            timeline=facts.info.timeline,
            xlog_segment_size=facts.info.wal_segment_size,
            systemid=facts.info.system_identifier,
            version=facts.info.version_num,
            pgdata=facts.pgdata,
            config_file=facts.config_file,
            hba_file=facts.hba_file,
            ident_file=facts.ident_file,
            tablespaces=binfo.format_tablespaces(facts.tablespaces),
            data_checksums=facts.data_checksums,
            summarize_wal=facts.summarize_wal,
            cluster_size=facts.cluster_size,
            parent_backup_id=parent.backup_id if parent else None,
        )
        binfo.save(server, info)
        try:
            info = _copy(server, info, facts, program.path, echo, debug, progress, manifest)
        except WalvaultError as exc:
            _fail(server, info, exc.message)
            raise WalvaultError(
                f"Backup {backup_id} of server {server.name} FAILED: {exc.message}"
            ) from None
        except BaseException as exc:
            _fail(server, info, f"interrupted ({type(exc).__name__}: {exc})")
            raise
        info = info.with_(status=WAITING_FOR_WALS)
        if not server.basebackups_in_object_storage:
            chain.keep_manifest(server, backup_id)
        binfo.save(server, info)
        if parent is not None:
            chain.add_child(server, parent.backup_id, backup_id)
            echo(f"Incremental backup of {parent.backup_id} ({parent.backup_type})")
    finally:
        lock.release()
    echo(_lsn_line("start", info.begin_xlog, info.begin_wal, info.begin_offset))
    echo(f"Backup size: {pretty_size(info.size or 0)}")
    echo(_lsn_line("end", info.end_xlog, info.end_wal, info.end_offset))
    return info


def warn_without_receiver(server: ServerConfig, warn: Echo) -> None:
    """A streaming-only server without receive-wal never gets the backup's WAL: say so."""
    streaming_only = server.streaming_archiver and not server.archiver
    if streaming_only and not locks.lock_holder(
        server.lock_directory, server.name, locks.RECEIVE_WAL
    ):
        warn(
            f"receive-wal is not running for server '{server.name}': the backup's WAL "
            "reaches the archive only through it (start it with "
            f"'walvault receive-wal {server.name}' or let 'walvault cron' do it)"
        )


def wait_for_backup(
    server: ServerConfig, info: BackupInfo, timeout: float, echo: Echo, warn: Echo
) -> BackupInfo:
    """Run archive-wal until the backup's last WAL is archived, then check the backup."""
    from walvault.archive.wait import wait_for_wal

    assert info.end_wal
    limit = f" (max: {timeout:g} seconds)" if timeout else ""
    echo(f"Waiting for the WAL file {info.end_wal} from server '{server.name}'{limit}")
    arrived = wait_for_wal(server, info.end_wal, timeout, echo, warn, interval=0.5)
    info = check_backup(server, info.backup_id, wait=30)
    if info.status == WAITING_FOR_WALS and not arrived:
        raise WalvaultError(
            f"The WAL file {info.end_wal} has not been received in {timeout:g} seconds: backup "
            f"{info.backup_id} stays WAITING_FOR_WALS ('walvault cron' completes it once the "
            "WAL is archived)"
        )
    return info


def take_backup(
    server: ServerConfig,
    echo: Echo,
    warn: Echo,
    debug: Echo,
    *,
    name: str | None = None,
    wait: bool = False,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    progress: Progress | None = None,
    incremental: str | None = None,
) -> BackupInfo:
    """The whole ``backup`` command for one server; returns the final metadata.

    Raises :class:`WalvaultError` when the backup cannot start, when it FAILED, and (with
    ``wait``) when the WAL did not arrive in ``wait_timeout`` seconds (0: no limit).
    """
    if server.backup_method != "postgres":
        raise WalvaultError(
            f"backup_method = {server.backup_method} is not supported by walvault for server "
            f"'{server.name}': only 'postgres' (pg_basebackup over the streaming connection)"
        )
    if not server.conninfo or not server.streaming_conninfo:
        raise WalvaultError(f"server '{server.name}' needs conninfo and streaming_conninfo")
    if name is not None:
        name = validate_name(server, name)
    local_tars = not server.basebackups_in_object_storage and tar_format(server)
    local_plain = not server.basebackups_in_object_storage and (
        server.backup_compression_format == "plain"
    )
    if server.encryption == "gpg" and local_plain:
        raise WalvaultError(
            f"server '{server.name}': encryption = gpg needs tar-format backups, and "
            "backup_compression_format is 'plain' (accepted with encryption: tar, the default)"
        )
    if incremental is not None and local_tars:
        raise WalvaultError(
            f"--incremental: server '{server.name}' writes tar-format backups (backup_compression "
            "or encryption = gpg), and an incremental backup is combined from plain copies: "
            "unset backup_compression (and encryption) for incremental backups on local disk"
        )
    os.makedirs(server.lock_directory, exist_ok=True)
    lock = locks.ServerLock(server.lock_directory, server.name, locks.BACKUP, wait=False)
    try:
        lock.acquire()
    except LockBusy as exc:
        raise WalvaultError(
            f"Another backup process is already running on server {server.name} ({exc.message})"
        ) from None
    try:
        started = time.monotonic()
        info = copy_backup(server, name, echo, debug, progress, incremental)
        mark_end(server, info.backup_id, warn)
        warn_without_receiver(server, warn)
        info = check_backup(server, info.backup_id, wait=30)
        begin = info.begin_time.strftime("%Y-%m-%d %H:%M:%S.%f") if info.begin_time else "?"
        elapsed = pretty_duration(time.monotonic() - started)
        echo(f"Backup completed (start time: {begin}, elapsed time: {elapsed})")
        if wait and info.status == WAITING_FOR_WALS:
            info = wait_for_backup(server, info, wait_timeout, echo, warn)
    finally:
        lock.release()
    if info.status == FAILED:
        raise WalvaultError(f"Backup {info.backup_id} of server {server.name} FAILED: {info.error}")
    return info
