"""Barman 3.20.1's tar-format backups (``backup_compression_format = tar``), recovered by walvault.

Barman backs up into walvault's home (walvault streams and archives the WAL): zstd
compressed, and gzip compressed then encrypted with ``encryption = gpg``
(``base.tar.gz.gpg``).  walvault recovers each, decrypting and decompressing on the way, with
every row back, never writing a plaintext tar; a wrong passphrase fails the recovery in one
line and leaves nothing behind.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from gpgharness import encryption_options, passphrase_file, trust_ultimately
from walvault.backup import info as binfo
from wvharness import archive_last, start_receiver, start_restored, streaming_server, wait_for

barmanharness = pytest.importorskip("barmanharness")


def _barman_backup(barman: Any, wv: Any, pg: Any) -> str:
    archive_last(wv, pg)  # Barman's check wants a WAL archive that is not empty
    before = {b.backup_id for b in binfo.iter_backups(wv.server())}
    result = barman.run("backup", "pg", timeout=300)
    checked = "" if result.returncode == 0 else barman.run("check", "pg").stdout
    assert result.returncode == 0, result.stdout + result.stderr + checked
    [backup_id] = {b.backup_id for b in binfo.iter_backups(wv.server())} - before

    def done() -> bool:
        pg.switch_wal()
        pg.sql("SELECT txid_current()")
        assert wv.run("archive-wal", "pg").returncode == 0
        checked = wv.run("check-backup", "pg", backup_id)
        return checked.returncode == 0 and checked.stdout.strip().endswith(": DONE")

    wait_for(done, what=f"Barman's backup {backup_id} DONE", timeout=120)
    return backup_id


@pytest.mark.parametrize("encrypted", [False, True], ids=["zstd", "gzip-gpg"])
def test_walvault_recovers_barmans_tar_backups(
    encrypted: bool,
    pg: Any,
    walvault_factory: Any,
    barman_factory: Any,
    gpg_keys: Any,
    gnupg_home: Path,
    tmp_path: Path,
) -> None:
    crypt: dict[str, str] = {}
    codec = "zstd"
    if encrypted:
        trust_ultimately(gnupg_home, gpg_keys.rsa)
        crypt = encryption_options(gpg_keys.rsa, passphrase_file(tmp_path))
        codec = "gzip"
    wv = walvault_factory({"pg": streaming_server(pg, immediate_checkpoint="true")})
    barman = barman_factory(
        {
            "pg": barmanharness.barman_server(
                pg,
                conninfo=pg.superuser_conninfo(),
                backup_compression=codec,
                backup_compression_format="tar",
                immediate_checkpoint="true",
                **crypt,
            )
        },
        barman_home=wv.home,
    )
    start_receiver(wv, pg)
    pg.sql("CREATE TABLE kept (id int PRIMARY KEY, v text)")
    pg.sql("INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    backup_id = _barman_backup(barman, wv, pg)
    data = Path(wv.server().basebackups_directory) / backup_id / "data"
    names = sorted(os.listdir(data))
    suffix = ".tar.gz.gpg" if encrypted else ".tar.zst"
    assert f"base{suffix}" in names, names
    pg.sql("INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(5001, 8000) g")
    expected = pg.sql("SELECT id, v FROM kept ORDER BY id")
    archive_last(wv, pg)
    wv.write({"pg": streaming_server(pg, immediate_checkpoint="true", **crypt)})
    verified = wv.run("verify", "pg", backup_id)  # Barman's tars read through, decrypted
    assert f"backup {backup_id} files: OK (every file matches backup_manifest" in (
        verified.stdout
    ), verified.stdout + verified.stderr

    if encrypted:  # a wrong passphrase: one line, nothing left, no plaintext on the way
        (tmp_path / "wrong").mkdir()
        wrong = passphrase_file(tmp_path / "wrong", "not the passphrase")
        wv.write({"pg": streaming_server(pg, **encryption_options(gpg_keys.rsa, wrong))})
        _forget_cached_passphrases(gnupg_home)
        failed = wv.run("recover", "pg", backup_id, str(tmp_path / "bad" / "data"))
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert failed.stderr.startswith("ERROR: "), failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
        assert not (tmp_path / "bad" / "data").exists() or not os.listdir(tmp_path / "bad" / "data")
        wv.write({"pg": streaming_server(pg, immediate_checkpoint="true", **crypt)})

    result = wv.run("recover", "pg", backup_id, str(tmp_path / "r" / "data"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Unpacking( and decrypting)? the tar-format backup", result.stdout)
    restored_files = os.listdir(tmp_path / "r" / "data")
    assert "PG_VERSION" in restored_files and not any(".tar" in n for n in restored_files)
    cluster = start_restored(pg, tmp_path / "r", "r")
    wait_for(lambda: not cluster.is_in_recovery(), what="recovered and promoted", timeout=180)
    assert cluster.sql("SELECT id, v FROM kept ORDER BY id") == expected


def _forget_cached_passphrases(home: Path) -> None:
    """gpg-agent accepts any passphrase once it cached the right one: restart it."""
    import subprocess

    subprocess.run(
        ["gpgconf", "--kill", "gpg-agent"], env={**os.environ, "GNUPGHOME": str(home)}, check=False
    )
