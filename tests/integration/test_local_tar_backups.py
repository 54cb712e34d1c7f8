"""walvault's own tar-format backups on local disk (Barman's ``backup_compression`` layout).

With ``backup_compression`` set (``backup_compression_format = tar``, Barman's default) or
``encryption = gpg``, ``backup`` writes ``base/<id>/data/base.tar.<ext>[.gpg]`` (and one
``<oid>.tar...`` per tablespace) plus a plain ``backup_manifest``, as Barman does.  Real
PostgreSQL 15 and pg_basebackup: the encrypted tars are OpenPGP messages holding no
plaintext, no plaintext tar is left anywhere, and recover gives every row back, the
tablespace's included.  Barman 3.20.1 recovers walvault's tar backups, encrypted ones
too (its gpg, its get-wal).  What cannot work is refused in one line.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from gpgharness import encryption_options, passphrase_file
from walvault.archive.encryption import identify_encryption
from walvault.backup import chain
from walvault.backup import info as binfo
from walvault.compression import compress_bytes, decompress_bytes
from wvharness import archive_last, start_receiver, start_restored, streaming_server, wait_for


def _every_file(directory: Path) -> list[str]:
    return sorted(str(Path(root, f)) for root, _d, files in os.walk(directory) for f in files)


@pytest.mark.parametrize("encrypted", [False, True], ids=["zstd", "gpg-with-tablespace"])
def test_a_local_tar_backup_is_barmans_layout_and_recovers_every_row(
    encrypted: bool,
    pg: Any,
    walvault_factory: Any,
    gpg_keys: Any,
    gnupg_home: Path,
    tmp_path: Path,
) -> None:
    crypt = encryption_options(gpg_keys.rsa, passphrase_file(tmp_path)) if encrypted else {}
    settings = dict(immediate_checkpoint="true", backup_compression="zstd", **crypt)
    wv = walvault_factory({"pg": streaming_server(pg, **settings)})
    start_receiver(wv, pg)
    oid = None
    if encrypted:
        place = tmp_path / "spc"
        place.mkdir()
        pg.sql(f"CREATE TABLESPACE one LOCATION '{place}'")
        pg.sql("CREATE TABLE t_one TABLESPACE one AS SELECT generate_series(1, 3000) i")
        oid = pg.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'one'")
    pg.sql("CREATE TABLE t (i int, pad text)")
    pg.sql("INSERT INTO t SELECT g, repeat('secret', 30) FROM generate_series(1, 20000) g")

    result = wv.run("backup", "--wait", "pg", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    server = wv.server()
    [info] = list(binfo.iter_backups(server))
    data = Path(binfo.data_dir(server, info.backup_id))
    suffix = ".tar.zst.gpg" if encrypted else ".tar.zst"
    tars = [f"base{suffix}"] + ([f"{oid}{suffix}"] if oid else [])
    assert sorted(os.listdir(data)) == sorted([*tars, "backup_manifest"])
    # nothing else anywhere: no plaintext tar, no spool, no temporary file
    assert _every_file(data.parent) == sorted(str(data / n) for n in [*tars, "backup_manifest"])
    assert not os.path.exists(os.path.join(server.backup_directory, "spool", info.backup_id))
    extra = dict(info.extra)
    assert extra["compression"] == "zstd"
    assert extra["encryption"] == ("gpg" if encrypted else "None")
    assert os.path.isfile(chain.manifest_copy(server, info.backup_id))  # for incrementals
    manifest = json.loads((data / "backup_manifest").read_text())
    assert any(f["Path"] == "PG_VERSION" for f in manifest["Files"])
    stored = (data / f"base{suffix}").read_bytes()
    if encrypted:
        assert identify_encryption(stored[:16]) == "gpg"
        assert b"secret" not in stored and b"PG_VERSION" not in stored
    else:
        with tarfile.open(fileobj=io.BytesIO(decompress_bytes("zstd", stored))) as tar:
            members = tar.getnames()
        assert "PG_VERSION" in members and "backup_label" in members

    shown = wv.run("show-backup", "pg", info.backup_id).stdout
    assert ("Encryption" in shown) is encrypted and ("gpg" in shown) is encrypted, shown
    files_line = f"backup {info.backup_id} files: "
    verified = wv.run("verify", "pg", info.backup_id)
    assert f"{files_line}OK (every file matches backup_manifest (read through base" in (
        verified.stdout
    ), verified.stdout + verified.stderr
    if not encrypted:  # one changed byte inside a member, the tar recompressed: found
        plain = bytearray(decompress_bytes("zstd", stored))
        header = next(
            at for at in range(0, len(plain), 512) if plain[at : at + 11] == b"PG_VERSION\0"
        )
        offset = header + 512  # the top-level PG_VERSION's data block
        plain[offset] ^= 0x01
        (data / f"base{suffix}").write_bytes(compress_bytes("zstd", bytes(plain)))
        tampered = wv.run("verify", "pg", info.backup_id)
        assert tampered.returncode == 1, tampered.stdout
        assert f'{files_line}FAILED ("PG_VERSION": checksum mismatch)' in tampered.stdout
        (data / f"base{suffix}").write_bytes(stored)

    pg.sql("INSERT INTO t SELECT g, 'after' FROM generate_series(20001, 21000) g")
    if encrypted:
        pg.sql("INSERT INTO t_one SELECT generate_series(3001, 3500)")
    archive_last(wv, pg)
    dest = tmp_path / "restored" / "data"
    recovered = wv.run("recover", "pg", "latest", str(dest), "--get-wal")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert not any(".tar" in name for name in os.listdir(dest))
    cluster = start_restored(pg, tmp_path / "restored", "restored")
    wait_for(lambda: not cluster.is_in_recovery(), what="recovery to the end", timeout=120)
    assert cluster.scalar("SELECT count(*) FROM t") == 21000
    if encrypted:
        assert cluster.scalar("SELECT count(*) FROM t_one") == 3500


def test_what_a_tar_format_server_cannot_do_is_refused_in_one_line(
    pg: Any, walvault_factory: Any, gpg_keys: Any, gnupg_home: Path, tmp_path: Path
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, backup_compression="gzip")})
    incremental = wv.run("backup", "--incremental", "latest", "pg")
    assert incremental.returncode == 1, incremental.stdout + incremental.stderr
    assert incremental.stderr.startswith("ERROR: --incremental: server 'pg' writes tar-format")
    assert len(incremental.stderr.strip().splitlines()) == 1

    crypt = encryption_options(gpg_keys.rsa, passphrase_file(tmp_path))
    wv.write({"pg": streaming_server(pg, backup_compression_format="plain", **crypt)})
    plain = wv.run("backup", "pg")
    assert plain.returncode == 1, plain.stdout + plain.stderr
    assert plain.stderr.strip() == (
        "ERROR: server 'pg': encryption = gpg needs tar-format backups, and "
        "backup_compression_format is 'plain' (accepted with encryption: tar, the default)"
    )
    assert list(binfo.iter_backups(wv.server())) == []


@pytest.mark.parametrize("encrypted", [False, True], ids=["gzip", "gzip-gpg"])
def test_barman_recovers_walvaults_local_tar_backup(
    encrypted: bool,
    pg: Any,
    walvault_factory: Any,
    barman_factory: Any,
    gpg_keys: Any,
    gnupg_home: Path,
    tmp_path: Path,
) -> None:
    barmanharness = pytest.importorskip("barmanharness")
    from gpgharness import trust_ultimately

    crypt: dict[str, str] = {}
    if encrypted:  # Barman's reader needs an RSA key (see README, Encryption at rest)
        trust_ultimately(gnupg_home, gpg_keys.rsa)
        crypt = encryption_options(gpg_keys.rsa, passphrase_file(tmp_path))
    settings = dict(immediate_checkpoint="true", backup_compression="gzip", **crypt)
    wv = walvault_factory({"pg": streaming_server(pg, **settings)})
    start_receiver(wv, pg)
    pg.sql("CREATE TABLE kept (id int PRIMARY KEY, v text)")
    pg.sql("INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    result = wv.run("backup", "--wait", "pg", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [info] = list(binfo.iter_backups(wv.server()))
    expected = pg.sql("SELECT id, v FROM kept ORDER BY id")

    barman = barman_factory(
        {
            "pg": barmanharness.barman_server(
                pg,
                conninfo=pg.superuser_conninfo(),
                backup_compression="gzip",
                backup_compression_format="tar",
                **crypt,
            )
        },
        barman_home=wv.home,
    )
    shown = barman.run("show-backup", "pg", info.backup_id)
    assert shown.returncode == 0, shown.stdout + shown.stderr + barman.log_text()
    target = tmp_path / "by-barman"
    staging = tmp_path / "staging"
    staging.mkdir()
    recovered = barman.run(  # Barman copies (and decrypts) the WAL the backup needs itself
        "recover",
        "--staging-path",
        str(staging),
        "pg",
        info.backup_id,
        str(target / "data"),
        timeout=300,
    )
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr + barman.log_text()
    cluster = start_restored(pg, target, "by-barman")
    wait_for(lambda: not cluster.is_in_recovery(), what="Barman's recovery", timeout=180)
    assert cluster.sql("SELECT id, v FROM kept ORDER BY id") == expected
