"""PostgreSQL recovers from an encrypted archive (``encryption = gpg``), every row back.

A backup, then rows written after it whose WAL is archived encrypted -- in the local archive
and in a bucket (moto) -- then ``recover`` into a new directory, both ways WAL reaches
PostgreSQL: restore_command (walvault-wal-restore decrypting on demand, and its agent
prefetching) and ``--no-get-wal`` (recover's own copy, decrypted on the way).  The recovered
server must hold exactly the rows the primary had.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpgharness import encryption_options, passphrase_file
from s3harness import TEST_ENVIRON, MotoServer
from walvault.archive.encryption import identify_encryption
from wvharness import start_restored, streaming_server, wait_for


def server_rows(cluster: Any) -> list[tuple[int, str]]:
    return [tuple(row) for row in cluster.sql("SELECT id, v FROM kept ORDER BY id")]


def _archived_encrypted(wv: Any, name: str) -> bool:
    from walvault.archive.walstore import WalArchive

    archive = WalArchive(wv.server())
    wv.run("archive-wal", "pg")
    found = archive.open(name)
    if found is None:
        return False
    with found[1] as reader:
        return identify_encryption(reader.read(64)) == "gpg"


def _recover_and_count(pg: Any, wv: Any, tmp_path: Path, name: str, *args: str) -> Any:
    result = wv.run("recover", "pg", "latest", str(tmp_path / name / "data"), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    cluster = start_restored(pg, tmp_path / name, name)
    wait_for(lambda: not cluster.is_in_recovery(), what=f"{name} promoted", timeout=180)
    return cluster


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_recovery_from_an_encrypted_archive_brings_every_row_back(
    pg: Any,
    walvault_factory: Any,
    gpg_keys: Any,
    gnupg_home: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    extra: dict[str, str] = {}
    if where == "bucket":
        moto: MotoServer = request.getfixturevalue("moto_server")
        bucket = request.getfixturevalue("s3_bucket")
        for key, value in TEST_ENVIRON.items():
            monkeypatch.setenv(key, value)
        extra = {"wals_directory": f"s3://{bucket}/wv", "aws_endpoint_url": moto.endpoint}
    options = streaming_server(
        pg,
        compression="zstd",
        immediate_checkpoint="true",
        **encryption_options(gpg_keys.rsa, passphrase_file(tmp_path)),
        **extra,
    )
    wv = walvault_factory({"pg": options})
    assert wv.run("cron").returncode == 0
    wait_for(lambda: pg.replication_state("walvault_receive_wal"), what="streaming")
    pg.sql("CREATE TABLE kept (id int PRIMARY KEY, v text)")
    backup = wv.run("backup", "--wait", "pg", timeout=240)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    for batch in range(4):  # rows in several segments after the backup
        pg.sql(
            "INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(%s::int, %s::int) g",
            (batch * 5000 + 1, batch * 5000 + 5000),
        )
        pg.switch_wal()
    last = pg.switch_wal()
    wait_for(lambda: _archived_encrypted(wv, last), what=f"{last} archived encrypted", timeout=120)
    expected = server_rows(pg)
    assert len(expected) == 20000
    assert wv.run("receive-wal", "--stop", "pg").returncode == 0

    by_restore = _recover_and_count(pg, wv, tmp_path, "restored", "--get-wal")
    assert server_rows(by_restore) == expected
    by_restore.stop()
    if where == "local":
        copied = _recover_and_count(pg, wv, tmp_path, "copied", "--no-get-wal")
        assert server_rows(copied) == expected
