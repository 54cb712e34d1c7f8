"""walvault.verify.tarfiles: a tar-format backup's members against a manifest.

Synthetic tars and manifests written the way PostgreSQL writes them (the manifest's own
SHA-256 up to ``"Manifest-Checksum"``, CRC32C as four little-endian bytes); the real
pg_basebackup output is checked in tests/integration/test_local_tar_backups.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import crc32c
import pytest

from walvault.backup.cloudstore import BackupFile
from walvault.compression import compress_bytes
from walvault.config import ServerConfig
from walvault.storage.posix import PosixStorage
from walvault.verify.tarfiles import check_tars, parse_manifest

SERVER = ServerConfig(name="pg", walvault_home="/nonexistent", lock_directory="/nonexistent")


def pg_crc(data: bytes) -> str:
    return crc32c.crc32c(data).to_bytes(4, "little").hex()


def manifest_text(files: dict[str, bytes], algorithm: str = "CRC32C") -> bytes:
    entries = []
    for path, data in files.items():
        entry: dict[str, object] = {"Path": path, "Size": len(data)}
        if algorithm == "CRC32C":
            entry |= {"Checksum-Algorithm": "CRC32C", "Checksum": pg_crc(data)}
        elif algorithm == "SHA256":
            entry |= {"Checksum-Algorithm": "SHA256", "Checksum": hashlib.sha256(data).hexdigest()}
        entries.append(json.dumps(entry))
    body = (
        '{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n' + ",\n".join(entries) + "\n],\n"
    ).encode()
    return body + f'"Manifest-Checksum": "{hashlib.sha256(body).hexdigest()}"}}\n'.encode()


def tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


FILES = {"PG_VERSION": b"15\n", "global/pg_control": bytes(range(256)) * 32}
SPACE = {"PG_15_202209061/5/16385": b"x" * 9000}


def store(tmp_path: Path, files: dict[str, bytes], space: dict[str, bytes]) -> list[BackupFile]:
    base = compress_bytes("zstd", tar_of({**files, "backup_manifest": b"{}"}))
    (tmp_path / "base.tar.zst").write_bytes(base)
    (tmp_path / "16384.tar").write_bytes(tar_of(space))
    return [
        BackupFile("base.tar.zst", "data", 0, "zstd", len(base)),
        BackupFile("16384.tar", "16384", 0, None, (tmp_path / "16384.tar").stat().st_size),
    ]


def expected() -> dict[str, bytes]:
    return {**FILES, **{f"pg_tblspc/16384/{k}": v for k, v in SPACE.items()}}


@pytest.mark.parametrize("algorithm", ["CRC32C", "SHA256", "NONE"])
def test_a_whole_backup_matches(tmp_path: Path, algorithm: str) -> None:
    tars = store(tmp_path, FILES, SPACE)
    manifest = parse_manifest(manifest_text(expected(), algorithm))
    assert check_tars(SERVER, PosixStorage(str(tmp_path)), tars, manifest) == []


def test_changed_missing_and_added_files_are_each_named(tmp_path: Path) -> None:
    changed = {"PG_VERSION": b"16\n", "added": b"?"}  # global/pg_control missing
    tars = store(tmp_path, changed, SPACE)
    manifest = parse_manifest(manifest_text(expected()))
    assert check_tars(SERVER, PosixStorage(str(tmp_path)), tars, manifest) == [
        '"PG_VERSION": checksum mismatch',
        '"added" is in the backup but not in the manifest',
        '"global/pg_control" is in the manifest but not in the backup',
    ]


def test_a_size_difference_and_an_unreadable_tar(tmp_path: Path) -> None:
    tars = store(tmp_path, FILES, {"PG_15_202209061/5/16385": b"x" * 10})
    (tmp_path / "base.tar.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 10)
    problems = check_tars(
        SERVER, PosixStorage(str(tmp_path)), tars, parse_manifest(manifest_text(expected()))
    )
    assert problems[0].startswith(f"{tmp_path}/base.tar.zst: unreadable tar (")
    assert '"pg_tblspc/16384/PG_15_202209061/5/16385" has size 10, the manifest says 9000' in (
        problems
    )


def test_a_manifest_must_match_its_own_checksum() -> None:
    raw = manifest_text(FILES)
    assert set(parse_manifest(raw)) == set(FILES)
    with pytest.raises(ValueError, match="own checksum does not match"):
        parse_manifest(raw.replace(b'"Size": 3', b'"Size": 4'))
    with pytest.raises(ValueError, match="not a backup manifest"):
        parse_manifest(b"[]")


def test_an_encoded_path_is_decoded() -> None:
    body = (
        '{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [\n'
        '{"Encoded-Path": "' + b"odd\xff".hex() + '", "Size": 1}\n],\n'
    ).encode()
    raw = body + f'"Manifest-Checksum": "{hashlib.sha256(body).hexdigest()}"}}\n'.encode()
    assert list(parse_manifest(raw)) == ["odd\udcff"]


def test_an_unknown_checksum_algorithm_is_a_problem_not_a_pass(tmp_path: Path) -> None:
    tars = store(tmp_path, FILES, SPACE)
    raw = manifest_text(expected(), "SHA256").replace(b'"SHA256"', b'"MD5"')
    body = raw[: raw.rfind(b'"Manifest-Checksum"')]
    raw = body + f'"Manifest-Checksum": "{hashlib.sha256(body).hexdigest()}"}}\n'.encode()
    problems = check_tars(SERVER, PosixStorage(str(tmp_path)), tars, parse_manifest(raw))
    assert problems and problems[0].startswith("checksum algorithm 'MD5' (accepted: CRC32C")
