"""``recover``: a backup copied to a local directory, configured to replay WAL from walvault.

A backup in object storage is downloaded and unpacked in a stream instead of copied
(:mod:`walvault.backup.cloudrecover`); everything else here is the same for both.

PostgreSQL 12+ style: ``recovery.signal`` (or ``standby.signal``) and settings appended to
``postgresql.auto.conf``. With get-wal, ``restore_command`` names absolute paths (command and
configuration file) so it works from the postmaster's environment; without it, the WAL —
including the streamed ``.partial`` tail — is copied into the destination.

The copy never stays a standby by accident: a backup taken from a standby carries its
``standby.signal`` and ``primary_conninfo``; both are removed (the settings commented out, as
``archive_command`` is) unless ``--standby-mode`` asks for a standby.

Every argument written into ``restore_command`` and ``recovery_end_command`` is quoted for
the shell PostgreSQL runs them with, and its ``%`` doubled (PostgreSQL replaces ``%f``, ``%p``,
``%r``), so a path with a space, a quote or ``$(...)`` is a path, never a command.

The destination (and each tablespace location) may not be inside walvault's own home or any
server's directories, nor contain them: checked before anything is copied.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from walvault.backup.info import DONE, BackupInfo, data_dir, parse_tablespaces
from walvault.backup.tarbackup import recover_tar_backup, tar_files
from walvault.backup.targets import RecoveryTarget, conf_quote
from walvault.backup.walcopy import archived_timelines, copy_wal, needed_wal
from walvault.config import ServerConfig
from walvault.errors import WalvaultError

Echo = Callable[[str], None]
WAL_STAGING = "walvault_wal"
MARK = "#WALVAULT#"


@dataclass(frozen=True)
class RecoverOptions:
    """What the user asked for."""

    destination: str
    target: RecoveryTarget
    get_wal: bool
    standby_mode: bool = False
    port: int | None = None
    config_file: str | None = None
    #: ``--tablespace NAME:LOCATION`` rules, as given
    tablespaces: tuple[str, ...] = ()
    #: walvault's own directories (home, locks, every server's): never recovered into
    protected: tuple[str, ...] = ()
    #: parallel downloads of a backup in object storage
    jobs: int = 4
    #: where the progress display goes (a terminal only; None: nowhere)
    progress_stream: TextIO | None = None
    #: (socket, walvault user, PostgreSQL's user) of the restore service restore_command
    #: asks, when PostgreSQL runs as another OS user than walvault (``--recovery-owner``)
    service: tuple[str, str, str] | None = None


def _check_destination(path: str) -> None:
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise WalvaultError(f"destination '{path}' exists and is not a directory")
        if os.listdir(path):
            raise WalvaultError(
                f"destination directory '{path}' is not empty: recover only into a new or "
                "empty directory"
            )


def _check_target(server: ServerConfig, backup: BackupInfo, target: RecoveryTarget) -> int:
    """Refuse impossible targets; return the highest timeline recovery may follow."""
    known = archived_timelines(server) | {backup.timeline or 1}
    tli = target.tli
    if tli is None or tli == "latest":
        max_tli = max(known)
    elif tli == "current":
        max_tli = backup.timeline or 1
    else:
        max_tli = int(tli)
        if max_tli not in known:
            raise WalvaultError(
                f"timeline {max_tli} is not in the archive of server '{server.name}' "
                f"(it has {', '.join(str(t) for t in sorted(known))})"
            )
        if max_tli < (backup.timeline or 1):
            raise WalvaultError(
                f"timeline {max_tli} is older than the backup's timeline {backup.timeline}"
            )
    if target.time is not None and backup.end_time is not None:
        end = backup.end_time if backup.end_time.tzinfo else backup.end_time.astimezone()
        if target.time < end:
            raise WalvaultError(
                f"The requested target time {target.time} is before the backup end time {end}"
            )
    if target.lsn is not None and backup.end_xlog:
        from walvault.wal.names import parse_lsn

        if target.lsn < parse_lsn(backup.end_xlog):
            raise WalvaultError(
                f"The requested target LSN is before the backup end LSN {backup.end_xlog}"
            )
    return max_tli


def shell_arg(value: str) -> str:
    """One argument of a command PostgreSQL runs: shell-quoted, ``%`` written ``%%``."""
    return shlex.quote(value).replace("%", "%%")


def restore_command(server: ServerConfig, options: RecoverOptions) -> str:
    """The get-wal restore_command: the lean client in local mode, by absolute paths.

    ``walvault-wal-restore -P -c CONF local SERVER %f %p`` reads the archive in-process (no
    ssh); with a restore service (PostgreSQL runs as another OS user) ``-U WALVAULT_USER
    --service SOCKET`` replaces ``-c CONF``: the service reads the archive, PostgreSQL's user
    needs neither the configuration nor the archive.  ``-P`` serves the streamed ``.partial``
    unless this is a standby; ``-p N`` prefetches when ``parallel_jobs`` > 1.
    """
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    client = os.path.join(bindir, "walvault-wal-restore")
    if os.path.exists(client):
        parts = [shell_arg(client)]
    else:
        parts = [shell_arg(sys.executable), "-m", "walvault.clients.walrestore"]
    if not options.standby_mode:
        parts.append("-P")
    if server.parallel_jobs > 1:
        parts.append(f"-p {server.parallel_jobs}")
    if options.service is not None:
        socket_path, user, owner = options.service
        parts.append(f"-U {shell_arg(user)} --service {shell_arg(socket_path)}")
        # the default spool directory may already be walvault's own (its restores), and the
        # agent refuses another user's: PostgreSQL's user gets a spool of its own
        from walvault.clients.walrestore import DEFAULT_SPOOL_DIR

        parts.append(f"--spool-dir {shell_arg(DEFAULT_SPOOL_DIR + '-' + owner)}")
    elif options.config_file:
        parts.append(f"-c {shell_arg(options.config_file)}")
    parts += ["local", shell_arg(server.name), "%f", '"%p"']
    return " ".join(parts)


def staged_restore_command(staging: str) -> str:
    """restore_command for WAL copied into the destination (``--no-get-wal``).

    A file that is not there exits 1 without a word: PostgreSQL asks for the segment after
    the last one and for the next timeline's history file at the end of every recovery, and
    ``cp: cannot stat ...`` in its log on every normal recovery alarmed people.  A file that
    is there but cannot be copied exits 200, so PostgreSQL stops instead of ending the
    recovery early (1-125 would mean "no such file" and promote it).
    """
    source = f"{shell_arg(staging)}/%f"
    return f'if [ -f {source} ]; then cp {source} "%p" || exit 200; else exit 1; fi'


def _setting_name(line: str) -> str:
    """The parameter a configuration line sets (``name = value`` or ``name value``), lower-cased."""
    text = line.strip()
    end = 0
    while end < len(text) and not (text[end].isspace() or text[end] == "="):
        end += 1
    return text[:end].lower()


def _comment_out(data: str, names: tuple[str, ...], prefixes: tuple[str, ...] = ()) -> None:
    """Comment out (Barman's marker) every line setting one of ``names``, in both files."""
    for name in ("postgresql.conf", "postgresql.auto.conf"):
        path = os.path.join(data, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
        changed = False
        for i, line in enumerate(lines):
            key = _setting_name(line)
            if key in names or (prefixes and key.startswith(prefixes)):
                lines[i] = MARK + line
                changed = True
        if changed:
            if not os.path.exists(path + ".origin"):
                shutil.copy2(path, path + ".origin")
            with open(path, "w", encoding="utf-8") as handle:
                handle.writelines(lines)


def _disable_archiving(data: str) -> None:
    """Comment out archive_command (Barman's marker) and turn archive_mode off."""
    _comment_out(data, ("archive_command", "archive_mode", "archive_library"), ("recovery_target",))


def _end_standby(data: str, echo: Echo) -> None:
    """A backup of a standby: no ``standby.signal``, no ``primary_conninfo`` in the copy."""
    for signal_file in ("standby.signal", "recovery.signal"):
        path = os.path.join(data, signal_file)
        if os.path.exists(path):
            os.unlink(path)
            if signal_file == "standby.signal":
                echo("Removed the backup's standby.signal (it was taken from a standby)")
    _comment_out(data, ("primary_conninfo", "primary_slot_name"))


def check_not_walvault(path: str, protected: tuple[str, ...], what: str) -> None:
    """Refuse ``path`` inside one of walvault's directories, or containing one."""
    for directory in protected:
        if _inside(path, directory) or _inside(directory, path):
            raise WalvaultError(
                f"{what} '{path}' overlaps walvault's own directory '{directory}': recover "
                "outside walvault_home and every server's directories"
            )


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def tablespace_locations(
    server: ServerConfig,
    backup: BackupInfo,
    destination: str,
    rules: tuple[str, ...],
    protected: tuple[str, ...] = (),
) -> dict[str, str]:
    """``--tablespace NAME:LOCATION`` rules as ``{oid: location}``, checked before copying.

    NAME must be a tablespace of the backup, LOCATION an absolute path to a new or empty
    directory, outside the destination and outside the server's backups, and used once.
    """
    spaces = {t.name: t for t in parse_tablespaces(backup.tablespaces)}
    locations: dict[str, str] = {}
    for rule in rules:
        name, sep, location = rule.partition(":")
        if not (sep and name and location):
            raise WalvaultError(f"invalid --tablespace '{rule}': accepted: NAME:LOCATION")
        if name not in spaces:
            known = ", ".join(sorted(spaces)) or "none"
            raise WalvaultError(
                f"invalid --tablespace '{rule}': backup {backup.backup_id} has no tablespace "
                f"'{name}' (its tablespaces: {known})"
            )
        oid = str(spaces[name].oid)
        if oid in locations:
            raise WalvaultError(f"invalid --tablespace '{rule}': '{name}' is relocated twice")
        if not os.path.isabs(location):
            raise WalvaultError(f"invalid --tablespace '{rule}': LOCATION must be absolute")
        location = os.path.normpath(location)
        if _inside(location, destination) or _inside(destination, location):
            raise WalvaultError(
                f"invalid --tablespace '{rule}': LOCATION and the destination must not "
                "contain each other"
            )
        local_backups = not server.basebackups_in_object_storage
        if local_backups and _inside(location, server.basebackups_directory):
            raise WalvaultError(
                f"invalid --tablespace '{rule}': LOCATION is inside the server's backups"
            )
        if location in locations.values():
            raise WalvaultError(f"invalid --tablespace '{rule}': {location} is used twice")
        check_not_walvault(location, protected, f"invalid --tablespace '{rule}': LOCATION")
        _check_destination(location)
        locations[oid] = location
    return locations


def _copy_tablespaces(
    destination: str,
    echo: Echo,
    locations: dict[str, str],
    copy: Callable[[str, str], object] = shutil.copy2,
) -> None:
    """Give the copy its own tablespaces: never leave links into the backup itself.

    ``pg_tblspc/<oid>`` links of the backup point at the backup's copy of each tablespace;
    a server started on them would write into the backup. Each is copied to its
    ``--tablespace`` location, else next to the destination
    (``<destination>_tablespaces/<oid>``), and the link re-pointed there.
    """
    links = os.path.join(destination, "pg_tblspc")
    if not os.path.isdir(links):
        return
    for oid in sorted(os.listdir(links)):
        link = os.path.join(links, oid)
        if not os.path.islink(link):
            continue
        target = os.path.realpath(link)
        new = locations.get(oid) or os.path.join(f"{destination}_tablespaces", oid)
        _check_destination(new)
        shutil.copytree(target, new, symlinks=True, dirs_exist_ok=True, copy_function=copy)
        os.unlink(link)
        os.symlink(new, link)
        echo(f"Tablespace {oid} restored to {new}")


def recover(
    server: ServerConfig, backup: BackupInfo, options: RecoverOptions, echo: Echo, warn: Echo
) -> int:
    """Copy the backup and write its recovery configuration. Returns the exit code."""
    started = time.monotonic()
    if backup.status != DONE:
        raise WalvaultError(f"backup {backup.backup_id} is {backup.status}, not DONE")
    max_tli = _check_target(server, backup, options.target)
    destination = os.path.abspath(options.destination)
    check_not_walvault(destination, options.protected, "destination")
    _check_destination(destination)
    locations = tablespace_locations(
        server, backup, destination, options.tablespaces, options.protected
    )
    cloud = server.basebackups_in_object_storage
    source = "" if cloud else data_dir(server, backup.backup_id)
    if not cloud and not os.path.isdir(source):
        raise WalvaultError(f"the data of backup {backup.backup_id} is missing: {source}")
    if cloud:
        from walvault.backup.cloudrecover import plan

        plan(server, backup, destination, locations)  # every check before anything is written
    echo(f"Starting local restore for server {server.name} using backup {backup.backup_id}")
    echo(f"Destination directory: {destination}")
    if options.target.is_pitr:
        echo("Doing PITR." + "".join(f" {k}: {v}" for k, v in options.target.settings()[:1]))
    try:
        from walvault.archive.archiver import archive_wal

        archive_wal(server, lambda _line: None, verbose=False)
    except WalvaultError as exc:
        warn(f"archive-wal before the restore failed ({exc}); using what is archived")
    os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
    if backup.is_incremental:
        from walvault.backup.combine import combine_backup

        combine_backup(
            server,
            backup,
            destination,
            locations,
            echo,
            options.progress_stream,
            jobs=options.jobs,
        )
    elif cloud:
        from walvault.backup.cloudrecover import unpack_backup
        from walvault.backup.progress import Progress

        echo(f"Downloading and unpacking the base backup ({options.jobs} parallel downloads).")
        progress = Progress("Recover", options.progress_stream)
        unpack_backup(
            server, backup, destination, locations, echo, jobs=options.jobs, progress=progress
        )
    elif (tars := tar_files(source)) is not None:  # Barman's backup_compression_format = tar
        recover_tar_backup(
            server, backup, source, tars, destination, locations, echo, options.progress_stream
        )
    else:
        from walvault.backup.progress import Progress

        echo("Copying the base backup.")
        progress = Progress("Recover", options.progress_stream, total=backup.size)
        try:
            shutil.copytree(
                source, destination, symlinks=True, dirs_exist_ok=True, copy_function=progress.copy
            )
            _copy_tablespaces(destination, echo, locations, progress.copy)
        finally:
            progress.close()
    os.chmod(destination, 0o700)
    for stale in ("postmaster.pid", "postmaster.opts"):
        if os.path.exists(os.path.join(destination, stale)):
            os.unlink(os.path.join(destination, stale))
    settings: list[tuple[str, str]] = []
    if options.get_wal:
        settings.append(("restore_command", conf_quote(restore_command(server, options))))
    else:
        staging = os.path.join(destination, WAL_STAGING)
        sources = needed_wal(server, backup.begin_wal or "", max_tli)
        tail = [s for s in sources if s.partial]
        echo(f"Copying required WAL segments: {len(sources)} files")
        if tail:
            echo("Including the streamed tail: " + ", ".join(s.path for s in tail))
        copy_wal(server, sources, staging)
        settings.append(("restore_command", conf_quote(staged_restore_command(staging))))
        if not options.standby_mode:
            end = f"rm -rf {shell_arg(staging)}"
            settings.append(("recovery_end_command", conf_quote(end)))
    settings += options.target.settings()
    settings.append(("archive_mode", "off"))
    if options.port is not None:
        settings.append(("port", str(options.port)))
    echo("Generating recovery configuration")
    _disable_archiving(destination)
    if not options.standby_mode:
        _end_standby(destination, echo)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(os.path.join(destination, "postgresql.auto.conf"), "a", encoding="utf-8") as auto:
        auto.write(
            f"\n# walvault recover of backup {backup.backup_id} of server {server.name}, {stamp}\n"
        )
        auto.writelines(f"{key} = {value}\n" for key, value in settings)
    signal_file = "standby.signal" if options.standby_mode else "recovery.signal"
    open(os.path.join(destination, signal_file), "w").close()
    elapsed = time.monotonic() - started
    echo(f"Recovery completed (elapsed time: {elapsed:.1f} seconds)")
    echo("Your PostgreSQL server has been successfully prepared for recovery!")
    if options.port is None:
        warn(
            "the restored configuration keeps the original 'port' setting: on the same host "
            "as the original server, start it with another port (recover --port N, or "
            "pg_ctl -o '-p N')"
        )
    if options.get_wal and options.service is not None:
        echo(
            f"restore_command asks walvault's restore service at {options.service[0]}: keep "
            "it running while PostgreSQL recovers"
        )
    elif options.get_wal:
        warn(
            "'restore_command' runs walvault as the PostgreSQL OS user: make sure that user "
            "can execute it and read the configuration file and the archive (when it is "
            "another user than walvault's: recover --recovery-owner USER)"
        )
    return 0
