"""Barman's tar-format backups on disk, and backup tar names in a bucket, with ``.gpg``."""

from __future__ import annotations

from pathlib import Path

import pytest

from walvault.backup.cloudstore import CloudBackups
from walvault.backup.tarbackup import tar_files
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.storage.memory import MemoryStorage


def test_a_plain_copy_is_not_a_tar_backup(tmp_path: Path) -> None:
    (tmp_path / "PG_VERSION").write_text("15\n")
    (tmp_path / "base.tar.gz").write_bytes(b"")  # a user's file inside PGDATA
    assert tar_files(str(tmp_path)) is None


def test_barmans_tar_names(tmp_path: Path) -> None:
    for name in ("base.tar.gz.gpg", "16390.tar.gz.gpg", "backup_manifest", "16388.tar.gz.gpg"):
        (tmp_path / name).write_bytes(b"x")
    files = tar_files(str(tmp_path))
    assert files is not None
    assert [(f.key, f.name, f.compression, f.encrypted) for f in files] == [
        ("base.tar.gz.gpg", "data", "gzip", True),
        ("16388.tar.gz.gpg", "16388", "gzip", True),
        ("16390.tar.gz.gpg", "16390", "gzip", True),
    ]
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "base.tar").write_bytes(b"x")
    (plain / "base.tar.zst").write_bytes(b"x")
    assert [(f.compression, f.encrypted) for f in tar_files(str(plain)) or []] == [
        (None, False),
        ("zstd", False),
    ]


def test_an_unknown_codec_is_refused(tmp_path: Path) -> None:
    (tmp_path / "base.tar.snappy").write_bytes(b"x")
    with pytest.raises(WalvaultError, match="not a tar walvault can read"):
        tar_files(str(tmp_path))


def test_bucket_tar_keys_with_gpg() -> None:
    server = ServerConfig(name="pg", walvault_home="/h", lock_directory="/h")
    storage = MemoryStorage()
    cloud = CloudBackups(server, storage)
    key = cloud.tar_key("20261207T000000", "data", "zstd", encrypted=True)
    assert key == "pg/base/20261207T000000/data.tar.zst.gpg"
    storage.put(key, b"x")
    storage.put(cloud.tar_key("20261207T000000", "16385", None, 1, encrypted=True), b"y")
    files = cloud.files("20261207T000000")
    assert [(f.name, f.part, f.compression, f.encrypted) for f in files] == [
        ("data", 0, "zstd", True),
        ("16385", 1, None, True),
    ]
