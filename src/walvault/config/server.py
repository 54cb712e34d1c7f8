"""The immutable, typed configuration of one server."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from walvault.config.parsers import RetentionPolicy

#: put-wal gives up on a stream that sends nothing for this many seconds (``put_wal_timeout``)
PUT_WAL_TIMEOUT = 60


class ServerConfig(NamedTuple):
    """One server section, resolved: Barman's defaults, interpolation and typed values.

    ``messages`` lists every fatal problem; a server with messages is *disabled*.
    ``shown`` holds the resolved values as text (secrets masked) for ``show-servers``.
    """

    name: str
    walvault_home: str
    lock_directory: str
    active: bool = True
    description: str | None = None
    conninfo: str | None = None
    streaming_conninfo: str | None = None
    wal_streaming_conninfo: str | None = None
    wal_conninfo: str | None = None
    streaming_archiver: bool = False
    streaming_archiver_name: str = "walvault_receive_wal"
    streaming_archiver_batch_size: int = 0
    streaming_archiver_synchronous: str = "auto"
    streaming_status_interval: int = 1
    streaming_backup_name: str = "walvault_streaming_backup"
    archiver: bool = False
    archiver_batch_size: int = 0
    put_wal_timeout: int = PUT_WAL_TIMEOUT
    slot_name: str | None = None
    create_slot: str = "manual"
    path_prefix: tuple[str, ...] = ()
    backup_directory: str = ""
    basebackups_directory: str = ""
    wals_directory: str = ""
    incoming_wals_directory: str = ""
    streaming_wals_directory: str = ""
    errors_directory: str = ""
    xlogdb_directory: str = ""
    compression: str | None = None
    compression_level: str | int = "medium"
    #: the codec of backup tar files ("none", a codec, None: compression); set, local
    #: backups are tar-format (with ``backup_compression_format = tar``, Barman's default)
    backup_compression: str | None = None
    backup_compression_format: str = "tar"
    backup_method: str = "postgres"
    immediate_checkpoint: bool = False
    #: pg_basebackup's ``--max-rate`` in kB/s (Barman's option; 0: no limit)
    bandwidth_limit: int = 0
    minimum_redundancy: int = 0
    retention_policy: RetentionPolicy | None = None
    wal_retention_policy: str = "main"
    last_wal_maximum_age: int | None = None
    check_timeout: int = 30
    #: ``check``'s ``free space`` fails below this many bytes free (0: never)
    min_free_space: int = 64 << 20
    #: ``check``'s ``streaming lag`` fails above this many bytes (None: never)
    max_streaming_lag: int | None = None
    max_incoming_wals_queue: int | None = None
    parallel_jobs: int = 1
    recovery_options: tuple[str, ...] = ()
    encryption: str = "none"
    #: the GnuPG key archive-wal encrypts to (``encryption = gpg``)
    encryption_key_id: str | None = None
    #: a shell command printing the passphrase of the secret key, for reading (never shown)
    encryption_passphrase_command: str | None = None
    #: the aws_*/cloud_* options that are set, typed (read by the storage drivers)
    storage_options: tuple[tuple[str, object], ...] = ()
    config_file: str | None = None
    messages: tuple[str, ...] = ()
    shown: tuple[tuple[str, str], ...] = ()

    @property
    def disabled(self) -> bool:
        """True when the configuration has a fatal problem (see ``messages``)."""
        return bool(self.messages)

    @property
    def wal_source_conninfo(self) -> str | None:
        """The replication conninfo used for WAL streaming and slots."""
        return self.wal_streaming_conninfo or self.streaming_conninfo

    @property
    def wal_monitoring_conninfo(self) -> str | None:
        """The normal conninfo used to monitor the WAL source (Barman's ``get_wal_conninfo``)."""
        return self.wal_conninfo or self.wal_streaming_conninfo or self.conninfo

    @property
    def has_separate_wal_source(self) -> bool:
        """True when ``wal_conninfo``/``wal_streaming_conninfo`` change the WAL source."""
        return bool(self.wal_conninfo or self.wal_streaming_conninfo)

    @property
    def wals_in_object_storage(self) -> bool:
        """True when ``wals_directory`` is an object-store URL, not a local directory."""
        return self.wals_directory[:5].lower() == "s3://"

    @property
    def basebackups_in_object_storage(self) -> bool:
        """True when ``basebackups_directory`` is an object-store URL (barman-cloud's layout)."""
        return self.basebackups_directory[:5].lower() == "s3://"

    @property
    def wal_meta_directory(self) -> str:
        """Where the local archive keeps walvault's metadata of archived files (digests):
        ``<backup_directory>/walvault-meta``, outside ``wals/`` so Barman never meets it."""
        return os.path.join(self.backup_directory, "walvault-meta")

    @property
    def xlogdb_path(self) -> str:
        """The WAL catalogue, ``<xlogdb_directory>/<server>-xlog.db``."""
        return os.path.join(self.xlogdb_directory, f"{self.name}-xlog.db")

    @property
    def meta_directory(self) -> str:
        """Where backup metadata lives (``<backup_directory>/meta``)."""
        return os.path.join(self.backup_directory, "meta")

    @property
    def identity_path(self) -> str:
        """``identity.json``: the system identifier and version seen on first contact."""
        return os.path.join(self.backup_directory, "identity.json")

    @property
    def search_path(self) -> str:
        """``path_prefix`` followed by ``$PATH``, for finding PostgreSQL's client tools."""
        parts = [*self.path_prefix, os.environ.get("PATH", os.defpath)]
        return os.pathsep.join(part for part in parts if part)

    def secrets(self) -> list[str]:
        """Every configured conninfo (for masking passwords out of free text)."""
        return [
            c
            for c in (
                self.conninfo,
                self.streaming_conninfo,
                self.wal_streaming_conninfo,
                self.wal_conninfo,
            )
            if c
        ]
