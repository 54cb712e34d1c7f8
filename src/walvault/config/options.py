"""The table of server options: name, Barman's default (a ``%(key)s`` template), parser, scope.

The order matters: options are resolved in this order, and a default template may only refer to
options resolved before it (plus ``name`` and ``walvault_home``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from walvault.compression import canonical_algorithm
from walvault.config import parsers as p
from walvault.config.server import PUT_WAL_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def _compression(raw: str) -> str | None:
    return canonical_algorithm(raw.strip())


def _backup_compression(raw: str) -> str:
    """Barman's ``backup_compression`` (gzip, lz4, zstd, none) plus bzip2 and xz."""
    value = raw.strip().lower()
    if value == "none":
        return "none"
    algorithm = _compression(value)
    if algorithm is None:
        raise ValueError("accepted: gzip, bzip2, xz, zstd, lz4, none")
    return algorithm


class Option(NamedTuple):
    """One server option."""

    name: str
    default: str | None
    parser: Callable[[str], Any] | None = None  # None: keep the string
    global_ok: bool = True  # may be set in the [walvault] section and inherited
    secret: bool = False  # a conninfo: shown masked
    hidden: bool = False  # may hold a secret as it is (a command): shown as *****


OPTIONS: tuple[Option, ...] = (
    Option("active", "true", p.parse_bool, global_ok=False),
    Option("description", None, global_ok=False),
    Option("conninfo", None, global_ok=False, secret=True),
    Option("streaming_conninfo", "%(conninfo)s", global_ok=False, secret=True),
    Option("wal_streaming_conninfo", None, global_ok=False, secret=True),
    Option("wal_conninfo", None, global_ok=False, secret=True),
    Option("streaming_archiver", "off", p.parse_bool),
    Option("streaming_archiver_name", "walvault_receive_wal"),
    Option("streaming_archiver_batch_size", "0", p.parse_non_negative_int),
    Option("streaming_archiver_synchronous", "auto", p.choice("auto", "on", "off")),
    Option("streaming_status_interval", "1", p.parse_positive_int),
    Option("streaming_backup_name", "walvault_streaming_backup"),
    Option("archiver", "off", p.parse_bool),
    Option("archiver_batch_size", "0", p.parse_non_negative_int),
    Option("put_wal_timeout", str(PUT_WAL_TIMEOUT), p.parse_positive_int),
    Option("slot_name", None, p.parse_slot_name),
    Option("create_slot", "manual", p.choice("manual", "auto")),
    Option("path_prefix", None, p.parse_path_list),
    Option("backup_directory", "%(walvault_home)s/%(name)s", p.parse_abs_path, global_ok=False),
    # an absolute path (Barman's local layout) or s3://BUCKET[/PATH] (barman-cloud's layout,
    # <PATH>/<server>/base/<backup id>/: see walvault.backup.cloudstore)
    Option("basebackups_directory", "%(backup_directory)s/base", p.parse_store_location, False),
    Option("wals_directory", "%(backup_directory)s/wals", p.parse_store_location, False),
    Option("incoming_wals_directory", "%(backup_directory)s/incoming", p.parse_abs_path, False),
    Option("streaming_wals_directory", "%(backup_directory)s/streaming", p.parse_abs_path, False),
    Option("errors_directory", "%(backup_directory)s/errors", p.parse_abs_path, False),
    # with wals_directory in object storage, the default is %(backup_directory)s/meta (the
    # catalogue stays local, as Barman's cloud WAL storage does): see the loader
    Option("xlogdb_directory", "%(wals_directory)s", p.parse_abs_path),
    Option("compression", None, _compression),
    Option("compression_level", "medium", p.parse_compression_level),
    # the compression of a backup's tar files (default: ``compression``); set, a local
    # backup is tar-format as Barman's (see walvault.backup.localtars)
    Option("backup_compression", None, _backup_compression),
    Option("backup_compression_format", "tar", p.choice("tar", "plain")),
    Option(
        "backup_method",
        "postgres",
        p.choice("postgres", "rsync", "local-rsync", "snapshot", "local-to-cloud"),
    ),
    Option("immediate_checkpoint", "false", p.parse_bool),
    Option("bandwidth_limit", "0", p.parse_bandwidth),
    Option("minimum_redundancy", "0", p.parse_non_negative_int),
    Option("retention_policy", None, p.parse_retention_policy),
    Option("wal_retention_policy", "main", p.choice("main")),
    Option("last_wal_maximum_age", None, p.parse_age),
    Option("check_timeout", "30", p.parse_non_negative_int),
    Option("min_free_space", "64 MiB", p.parse_size),
    Option("max_streaming_lag", None, p.parse_positive_size),
    Option("max_incoming_wals_queue", None, p.parse_non_negative_int),
    Option("parallel_jobs", "1", p.parse_positive_int),
    Option("recovery_options", "", p.parse_csv_choices(("get-wal", "delta-restore"))),
    Option("encryption", "none", p.choice("none", "gpg")),
    # Barman 3.20's: see walvault.archive.encryption
    Option("encryption_key_id", None, p.parse_gpg_key_id),
    Option("encryption_passphrase_command", None, p.parse_command, hidden=True),
    # Object storage (S3): read by walvault.storage.s3config.S3Settings.from_options, which
    # holds the defaults (None here: "the driver's default") and documents each option.
    # Barman 3.20's names where Barman has the option.
    Option("aws_endpoint_url", None),
    Option("aws_allow_http", None, p.parse_bool),
    Option("aws_addressing_style", None, p.choice("auto", "path", "virtual")),
    Option("aws_region", None),
    Option("aws_profile", None),
    Option("aws_connect_timeout", None, p.parse_positive_int),
    Option("aws_read_timeout", None, p.parse_positive_int),
    Option("aws_request_timeout", None, p.parse_positive_int),
    Option("aws_retries", None, p.parse_non_negative_int),
    Option("aws_retry_timeout", None, p.parse_positive_int),
    Option("aws_checksum_algorithm", None, p.choice("sha256", "crc64nvme", "none")),
    Option("aws_encryption", None, p.choice("aes256", "aws:kms")),
    Option("aws_sse_kms_key_id", None),
    Option("aws_sse_customer_key", None),
    Option("cloud_delete_batch_size", None, p.parse_positive_int),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}

#: Options read by the storage drivers (kept together in ServerConfig.storage_options).
STORAGE_OPTIONS = frozenset(
    option.name for option in OPTIONS if option.name.startswith(("aws_", "cloud_"))
)
#: The default of xlogdb_directory when wals_directory is an object-store URL.
CLOUD_XLOGDB_DIRECTORY = "%(backup_directory)s/meta"

#: Options of the global section only.
GLOBAL_ONLY = (
    "walvault_home",
    "walvault_user",
    "walvault_lock_directory",
    "configuration_files_directory",
    "log_file",
    "log_level",
    "log_format",
    "lock_directory_cleanup",
    "restore_socket",
    "restore_users",
)

#: Barman's spelling of global options.
GLOBAL_ALIASES = {
    "barman_home": "walvault_home",
    "barman_user": "walvault_user",
    "barman_lock_directory": "walvault_lock_directory",
}

#: Barman options that walvault accepts in a Barman file without a warning but does not use.
#: They change nothing in walvault (see the README's "coming from Barman" section).
BARMAN_ONLY = frozenset(
    {
        "backup_options",
        "backup_compression_level",
        "backup_compression_location",
        "backup_compression_workers",
        "basebackup_retry_sleep",
        "basebackup_retry_times",
        "check_timeout_for_remote",
        "cluster",
        "config_changes_queue",
        "custom_compression_filter",
        "custom_compression_magic",
        "custom_decompression_filter",
        "forward_config_path",
        "keepalive_interval",
        "last_backup_maximum_age",
        "last_backup_minimum_size",
        "model",
        "network_compression",
        "parallel_jobs_start_batch_period",
        "parallel_jobs_start_batch_size",
        "post_archive_retry_script",
        "post_archive_script",
        "post_backup_retry_script",
        "post_backup_script",
        "post_delete_retry_script",
        "post_delete_script",
        "post_recovery_retry_script",
        "post_recovery_script",
        "post_wal_delete_retry_script",
        "post_wal_delete_script",
        "pre_archive_retry_script",
        "pre_archive_script",
        "pre_backup_retry_script",
        "pre_backup_script",
        "pre_delete_retry_script",
        "pre_delete_script",
        "pre_recovery_retry_script",
        "pre_recovery_script",
        "pre_wal_delete_retry_script",
        "pre_wal_delete_script",
        "primary_checkpoint_timeout",
        "primary_conninfo",
        "primary_ssh_command",
        "recovery_staging_path",
        "retention_policy_mode",
        "reuse_backup",
        "slot_name_backup",
        "snapshot_disks",
        "snapshot_gcp_project",
        "snapshot_instance",
        "snapshot_provider",
        "snapshot_zone",
        "ssh_command",
        "tablespace_bandwidth_limit",
        "worm_mode",
    }
)

#: The directories that must all differ (within a server and between servers).
DIRECTORY_OPTIONS = (
    "backup_directory",
    "basebackups_directory",
    "errors_directory",
    "incoming_wals_directory",
    "streaming_wals_directory",
    "wals_directory",
)
