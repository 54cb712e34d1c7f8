"""Base backups in object storage, both ways between walvault and barman-cloud 3.20.1 (moto).

* barman-cloud-backup-list lists a walvault backup; barman-cloud-restore restores it into a
  directory from which PostgreSQL starts, replaying WAL through walvault-wal-restore, with
  every row written after the backup.
* walvault lists a barman-cloud-backup backup of the same cluster (with a tablespace) in
  the same bucket and recovers it, ``--tablespace`` relocating the tablespace, every row
  back.

Barman is where ``WALVAULT_BARMAN_BIN`` says (``.ci/install-barman`` makes it): unset, the
tests skip saying so; set, a missing or broken command fails them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_s3_backup import backup_id, bucket_server, keys, streaming

from s3harness import TEST_ENVIRON, MotoServer
from walvault.backup import info as binfo
from walvault.storage.base import Storage
from wvharness import restored_cluster, wait_for

BIN_VARIABLE = "WALVAULT_BARMAN_BIN"
BIN = Path(sys.executable).parent
PATH = "walvault-test"


@pytest.fixture
def barman_bin() -> Path:
    value = os.environ.get(BIN_VARIABLE, "")
    if not value:
        pytest.skip(
            f"{BIN_VARIABLE} is not set: the barman-cloud interop tests need Barman 3.20.1 "
            f"(as root: `bash .ci/install-barman`, then set {BIN_VARIABLE} to its bin directory)"
        )
    path = Path(value)
    for tool in ("barman-cloud-backup", "barman-cloud-backup-list", "barman-cloud-restore"):
        assert os.access(path / tool, os.X_OK), f"{BIN_VARIABLE}={value}: {tool} is missing"
    return path


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in TEST_ENVIRON.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)


def cloud(
    barman_bin: Path, endpoint: str, tool: str, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """A barman-cloud command against moto (credentials from the environment)."""
    env = {**os.environ, **TEST_ENVIRON}
    argv = [str(barman_bin / tool), "--endpoint-url", endpoint, *args]
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_barman_cloud_lists_and_restores_a_walvault_backup(
    pg: Any,
    walvault_factory: Any,
    barman_bin: Path,
    moto_server: MotoServer,
    s3_bucket: str,
    s3_storage: Storage,
    aws_env: None,
    tmp_path: Path,
) -> None:
    wv = walvault_factory(
        {"pg": bucket_server(pg, s3_bucket, moto_server.endpoint, backup_compression="gzip")}
    )
    streaming(pg, wv)
    pg.sql("CREATE TABLE t AS SELECT generate_series(1, 30000) AS i")
    result = wv.run("backup", "--wait", "pg", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    bid = backup_id(result)
    pg.sql("INSERT INTO t SELECT generate_series(30001, 40000)")
    closed = pg.switch_wal()

    def archived() -> bool:
        wv.run("archive-wal", "pg")
        return any(k.startswith(f"pg/wals/{closed[:16]}/{closed}") for k in keys(s3_storage, ""))

    wait_for(archived, what="the last segment archived", timeout=90)

    url = f"s3://{s3_bucket}/{PATH}"
    listing = cloud(barman_bin, moto_server.endpoint, "barman-cloud-backup-list", url, "pg")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    [line] = [line for line in listing.stdout.splitlines() if line.startswith(bid)]
    assert "000000010000000000000" in line, listing.stdout  # its begin WAL is read
    dest = tmp_path / "barman" / "data"
    restored = cloud(
        barman_bin, moto_server.endpoint, "barman-cloud-restore", url, "pg", bid, str(dest)
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert (dest / "backup_label").exists() and (dest / "PG_VERSION").exists()
    client = BIN / "walvault-wal-restore"
    with open(dest / "postgresql.auto.conf", "a") as conf:
        conf.write(f"restore_command = '{client} -c {wv.conf} local pg %f %p'\n")
    (dest / "recovery.signal").write_text("")
    os.chmod(dest, 0o700)
    cluster = restored_cluster(pg, tmp_path / "barman", "barman")
    cluster.start()
    wait_for(lambda: not cluster.is_in_recovery(), what="recovery to the end", timeout=120)
    assert cluster.scalar("SELECT count(*) FROM t") == 40000


def test_walvault_lists_and_recovers_a_barman_cloud_backup(
    pg: Any,
    walvault_factory: Any,
    barman_bin: Path,
    moto_server: MotoServer,
    s3_bucket: str,
    s3_storage: Storage,
    aws_env: None,
    tmp_path: Path,
) -> None:
    wv = walvault_factory({"pg": bucket_server(pg, s3_bucket, moto_server.endpoint)})
    streaming(pg, wv)
    location = tmp_path / "spc"
    location.mkdir()
    pg.sql(f"CREATE TABLESPACE spc LOCATION '{location}'")
    pg.sql("CREATE TABLE t AS SELECT generate_series(1, 25000) AS i")
    pg.sql("CREATE TABLE in_spc TABLESPACE spc AS SELECT generate_series(1, 777) AS i")
    oid = pg.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'spc'")
    url = f"s3://{s3_bucket}/{PATH}"
    host, port, user = _pg_address(pg)
    made = cloud(
        barman_bin,
        moto_server.endpoint,
        "barman-cloud-backup",
        "--zstd",
        "--immediate-checkpoint",
        "-h",
        host,
        "-p",
        str(port),
        "-U",
        user,
        "-d",
        "postgres",
        url,
        "pg",
    )
    assert made.returncode == 0, made.stdout + made.stderr
    [barman_id] = {k.split("/")[2] for k in keys(s3_storage, "pg/base/")}
    assert keys(s3_storage, f"pg/base/{barman_id}/") == [
        f"pg/base/{barman_id}/{oid}.tar.zst",
        f"pg/base/{barman_id}/backup.info",
        f"pg/base/{barman_id}/data.tar.zst",
    ]
    pg.sql("INSERT INTO t SELECT generate_series(25001, 30000)")
    closed = pg.switch_wal()

    def archived() -> bool:
        wv.run("archive-wal", "pg")
        return any(k.startswith(f"pg/wals/{closed[:16]}/{closed}") for k in keys(s3_storage, ""))

    wait_for(archived, what="the last segment archived", timeout=90)
    listed = wv.run("list-backups", "pg")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert listed.stdout.startswith(f"pg {barman_id} - "), listed.stdout
    [found] = list(binfo.iter_backups(wv.server()))
    assert found.status == "DONE" and found.begin_wal
    dest = tmp_path / "frombarman" / "data"
    relocated = tmp_path / "relocated-spc"
    recovered = wv.run(
        "recover", "pg", barman_id, str(dest), "--get-wal", "--tablespace", f"spc:{relocated}"
    )
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert f"Tablespace {oid} restored to {relocated}" in recovered.stdout
    assert os.readlink(dest / "pg_tblspc" / str(oid)) == str(relocated)
    cluster = restored_cluster(pg, tmp_path / "frombarman", "frombarman")
    cluster.start()
    wait_for(lambda: not cluster.is_in_recovery(), what="recovery to the end", timeout=120)
    assert cluster.scalar("SELECT count(*) FROM t") == 30000
    assert cluster.scalar("SELECT count(*) FROM in_spc") == 777
    query = "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'spc'"
    assert cluster.scalar(query) == str(relocated)  # the copy's own, not the original's


def _pg_address(pg: Any) -> tuple[str, int, str]:
    """The harness cluster's unix socket directory, port and superuser (trust)."""
    return str(pg.socket_dir), int(pg.port), str(pg.superuser)
