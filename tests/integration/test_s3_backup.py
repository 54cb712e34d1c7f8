"""Base backups in object storage (``basebackups_directory = s3://...``) against moto's S3 server.

Real PostgreSQL 15, real pg_basebackup: the tar stream goes into the bucket under
barman-cloud's keys (``<path>/pg/base/<id>/data.tar.gz`` and ``backup.info`` last), nothing
of it on local disk; recover downloads and unpacks it and PostgreSQL replays to every row;
a backup killed mid-upload is never listed DONE and cron cleans it (its multipart upload
aborted); a delete killed at any point is finished by the next one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from s3harness import TEST_ENVIRON, MotoServer
from walvault.backup import info as binfo
from walvault.backup.info import DONE, FAILED
from walvault.compression import decompress_bytes
from walvault.storage.base import Storage
from wvharness import start_restored, streaming_server, wait_for

PATH = "walvault-test"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test credentials for walvault's subprocesses (the endpoint is in the config)."""
    for key, value in TEST_ENVIRON.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)


def bucket_server(pg: Any, bucket: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    """A streaming server whose WAL and base backups are both in ``bucket``."""
    return streaming_server(
        pg,
        wals_directory=f"s3://{bucket}/{PATH}",
        basebackups_directory=f"s3://{bucket}/{PATH}",
        aws_endpoint_url=endpoint,
        compression="zstd",
        immediate_checkpoint="true",
        **extra,
    )


def streaming(pg: Any, wv: Any) -> None:
    assert wv.run("cron").returncode == 0
    wait_for(
        lambda: pg.replication_state("walvault_receive_wal") == "streaming",
        what="receive-wal streaming",
    )


def backup_id(result: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"/pg/base/(\d{8}T\d{6})$", result.stdout, re.MULTILINE)
    assert match, result.stdout + result.stderr
    return match.group(1)


def keys(storage: Storage, prefix: str) -> list[str]:
    return [info.key for info in storage.list(prefix)]


def boto(moto_server: MotoServer) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=moto_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=TEST_ENVIRON["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_ENVIRON["AWS_SECRET_ACCESS_KEY"],
    )


def local_files(directory: str) -> list[str]:
    found = []
    for root, _dirs, files in os.walk(directory):
        found += [os.path.join(root, f) for f in files]
    return found


def test_backup_into_the_bucket_and_recover_every_row(
    pg: Any,
    walvault_factory: Any,
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
    pg.sql("CREATE TABLE t (i int, pad text)")
    pg.sql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 50000) g")
    result = wv.run("backup", "--wait", "pg", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    bid = backup_id(result)
    assert f"in s3://{s3_bucket}/{PATH}/pg/base/{bid}" in result.stdout
    assert "\r" not in result.stderr  # no progress display without a terminal

    objects = keys(s3_storage, f"pg/base/{bid}/")
    assert objects == [f"pg/base/{bid}/backup.info", f"pg/base/{bid}/data.tar.gz"]
    reader = s3_storage.open(f"pg/base/{bid}/backup.info")
    assert reader is not None
    with reader:
        text = reader.read().decode()
    assert "status=DONE\n" in text and f"backup_id={bid}\n" in text
    assert "compression=gzip\n" in text
    reader = s3_storage.open(f"pg/base/{bid}/data.tar.gz")
    assert reader is not None
    with reader:
        tar = decompress_bytes("gzip", reader.read())
    assert b"backup_label" in tar and tar.endswith(b"\0" * 1024)
    server = wv.server()
    # nothing of the backup on local disk: no base/ directory, no local backup.info
    assert not os.path.exists(os.path.join(server.backup_directory, "base"))
    assert not os.path.exists(binfo.info_path(server, bid))

    listed = wv.run("list-backups", "pg")
    assert listed.returncode == 0, listed.stderr
    assert re.match(rf"^pg {bid} - .* - Size: .* - WAL Size: .*$", listed.stdout), listed.stdout
    shown = wv.run("show-backup", "pg", bid)
    assert shown.returncode == 0 and "Status                 : DONE" in shown.stdout, shown.stdout

    pg.sql("INSERT INTO t SELECT g, 'after' FROM generate_series(50001, 60000) g")
    closed = pg.switch_wal()

    def archived() -> bool:
        wv.run("archive-wal", "pg")
        return any(
            k.startswith(f"pg/wals/{closed[:16]}/{closed}") for k in keys(s3_storage, "pg/wals/")
        )

    wait_for(archived, what="the last segment archived in the bucket", timeout=90)
    before = set(local_files(server.backup_directory))
    dest = tmp_path / "restored" / "data"
    recovered = wv.run("recover", "pg", "latest", str(dest), "--get-wal", "--jobs", "3")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "Downloading and unpacking the base backup (3 parallel downloads)." in recovered.stdout
    assert set(local_files(server.backup_directory)) <= before | {server.xlogdb_path}
    assert (dest / "backup_label").exists() and (dest / "recovery.signal").exists()
    assert oct((dest).stat().st_mode & 0o777) == "0o700"
    cluster = start_restored(pg, tmp_path / "restored", "restored")
    wait_for(lambda: not cluster.is_in_recovery(), what="recovery to the end", timeout=120)
    assert cluster.scalar("SELECT count(*) FROM t") == 60000
    assert cluster.scalar("SELECT count(*) FROM t WHERE pad = 'after'") == 10000


def test_a_backup_killed_mid_upload_is_never_done_and_cron_cleans_it(
    pg: Any,
    walvault_factory: Any,
    moto_server: MotoServer,
    s3_bucket: str,
    s3_storage: Storage,
    aws_env: None,
) -> None:
    wv = walvault_factory({"pg": bucket_server(pg, s3_bucket, moto_server.endpoint)})
    streaming(pg, wv)
    # ~150 MiB of poorly compressible rows: the upload is multipart and takes a while
    pg.sql(
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS pad "
        "FROM generate_series(1, 1500000) g"
    )
    client = boto(moto_server)
    proc = wv.spawn("backup", "pg")
    try:
        wait_for(
            lambda: client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"),
            what="a multipart upload in progress",
            timeout=120,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    server = wv.server()
    [started] = list(binfo.iter_backups(server))
    assert started.status == "STARTED"
    assert not keys(s3_storage, "pg/base/")  # nothing listed: no backup.info, no data.tar
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    listed = wv.run("list-backups", "pg")
    assert f"pg {started.backup_id} - F - STARTED" in listed.stdout
    assert "DONE" not in listed.stdout
    # pg_basebackup died with its parent (no orphan copying on)
    wait_for(lambda: _backups_streaming(pg) == 0, what="pg_basebackup gone", timeout=30)

    cron = wv.run("cron")
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert f"Backup {started.backup_id} of server pg is FAILED" in cron.stdout + cron.stderr
    assert binfo.load(server, started.backup_id).status == FAILED
    assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    assert not keys(s3_storage, "pg/base/")
    # the next backup works, and the FAILED one goes with delete
    result = wv.run("backup", "--wait", "pg", timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    deleted = wv.run("delete", "pg", started.backup_id)
    assert deleted.returncode == 0, deleted.stderr
    assert [b.status for b in binfo.iter_backups(server)] == [DONE]


def _backups_streaming(pg: Any) -> int:
    query = "SELECT count(*) FROM pg_stat_replication WHERE application_name = %s"
    return int(pg.scalar(query, ("walvault_streaming_backup",)))


def test_delete_killed_anywhere_is_finished_by_the_next_one(
    pg: Any,
    walvault_factory: Any,
    moto_server: MotoServer,
    s3_bucket: str,
    s3_storage: Storage,
    aws_env: None,
) -> None:
    wv = walvault_factory({"pg": bucket_server(pg, s3_bucket, moto_server.endpoint)})
    streaming(pg, wv)
    pg.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i")
    ids = []
    for _ in range(2):
        result = wv.run("backup", "--wait", "pg", timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        ids.append(backup_id(result))
        time.sleep(1.1)
    server = wv.server()
    # kill -9 at increasing delays: whatever point the delete reached, the backup is either
    # still whole (listed, recoverable files) or gone, and a second delete finishes it
    victim = ids[0]
    for delay in (0.05, 0.2, 0.5):
        proc = wv.spawn("delete", "pg", victim)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        left = keys(s3_storage, f"pg/base/{victim}/")
        assert left in ([], [f"pg/base/{victim}/backup.info", f"pg/base/{victim}/data.tar.zst"])
        if not left:
            break
    if keys(s3_storage, f"pg/base/{victim}/"):
        again = wv.run("delete", "pg", victim)
        assert again.returncode == 0, again.stderr
    assert not keys(s3_storage, f"pg/base/{victim}/")
    assert [b.backup_id for b in binfo.iter_backups(server)] == [ids[1]]
    assert keys(s3_storage, f"pg/base/{ids[1]}/")
    cron = wv.run("cron")
    assert cron.returncode == 0, cron.stderr


def _tar(*members: tuple[str, bytes]) -> bytes:
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(data), 0o600
            tar.addfile(entry, io.BytesIO(data))
    return out.getvalue()


def test_recover_from_the_bucket_to_a_restore_point_without_get_wal_and_unsafe_tars(
    pg: Any,
    walvault_factory: Any,
    moto_server: MotoServer,
    s3_bucket: str,
    s3_storage: Storage,
    aws_env: None,
    tmp_path: Path,
) -> None:
    wv = walvault_factory({"pg": bucket_server(pg, s3_bucket, moto_server.endpoint)})
    streaming(pg, wv)
    pg.sql("CREATE TABLE marks (v text)")
    result = wv.run("backup", "--wait", "pg", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    bid = backup_id(result)
    pg.sql("INSERT INTO marks VALUES ('a'), ('b')")
    pg.sql("SELECT pg_create_restore_point('after_b')")
    pg.sql("INSERT INTO marks VALUES ('c')")
    closed = pg.switch_wal()

    def archived() -> bool:
        wv.run("archive-wal", "pg")
        return any(k.startswith(f"pg/wals/{closed[:16]}/{closed}") for k in keys(s3_storage, ""))

    wait_for(archived, what="the last segment archived", timeout=90)
    dest = tmp_path / "pitr" / "data"
    recovered = wv.run(
        "-q", "recover", "pg", bid, str(dest), "--no-get-wal", "--target-name", "after_b"
    )
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert recovered.stdout == "" and recovered.stderr == ""  # -q: no progress, no chatter
    assert (dest / "walvault_wal").is_dir()  # --no-get-wal: the WAL came along from the bucket
    cluster = start_restored(pg, tmp_path / "pitr", "pitr")
    wait_for(
        lambda: cluster.scalar("SELECT pg_is_wal_replay_paused()"),
        what="recovery paused at the restore point",
        timeout=120,
    )
    assert [r[0] for r in cluster.sql("SELECT v FROM marks ORDER BY v")] == ["a", "b"]
    cluster.stop()

    # a backup whose tar would write outside the destination: refused before that member
    # is written, the destination left as it was (not created), nothing escapes
    evil = "20200101T000000"
    reader = s3_storage.open(f"pg/base/{bid}/backup.info")
    assert reader is not None
    with reader:
        text = reader.read().decode().replace(bid, evil)
    s3_storage.put(
        f"pg/base/{evil}/data.tar", _tar(("PG_VERSION", b"15\n"), ("../escaped", b"gotcha"))
    )
    s3_storage.put(f"pg/base/{evil}/backup.info", text.encode())
    target = tmp_path / "evil" / "data"
    refused = wv.run("recover", "pg", evil, str(target))
    assert refused.returncode == 1
    assert "ERROR: " in refused.stderr and "unsafe member name '../escaped'" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not target.exists() and not (tmp_path / "evil" / "escaped").exists()
    # a backup whose data.tar is missing (a delete killed half-way): refused, nothing written
    s3_storage.delete([f"pg/base/{evil}/data.tar"])
    missing = wv.run("recover", "pg", evil, str(target))
    assert missing.returncode == 1 and "has no data.tar" in missing.stderr, missing.stderr
    assert not target.exists()


def test_tablespaces_go_through_the_spool_and_come_back_relocated(
    pg: Any,
    walvault_factory: Any,
    moto_server: MotoServer,
    s3_bucket: str,
    s3_storage: Storage,
    aws_env: None,
    tmp_path: Path,
) -> None:
    wv = walvault_factory({"pg": bucket_server(pg, s3_bucket, moto_server.endpoint)})
    streaming(pg, wv)
    locations = {}
    for name in ("one", "two"):
        locations[name] = tmp_path / f"spc-{name}"
        locations[name].mkdir()
        pg.sql(f"CREATE TABLESPACE {name} LOCATION '{locations[name]}'")
        pg.sql(f"CREATE TABLE t_{name} TABLESPACE {name} AS SELECT generate_series(1, 3000) i")
    pg.sql("CREATE TABLE t_main AS SELECT generate_series(1, 5000) AS i")
    oids = {
        name: pg.scalar("SELECT oid FROM pg_tablespace WHERE spcname = %s", (name,))
        for name in locations
    }
    result = wv.run("backup", "--wait", "pg", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    bid = backup_id(result)
    assert sorted(keys(s3_storage, f"pg/base/{bid}/")) == sorted(
        [f"pg/base/{bid}/backup.info", f"pg/base/{bid}/data.tar.zst"]
        + [f"pg/base/{bid}/{oid}.tar.zst" for oid in oids.values()]
    )
    server = wv.server()
    assert not os.path.exists(os.path.join(server.backup_directory, "spool", bid))
    [done] = list(binfo.iter_backups(server))
    assert {t.name for t in binfo.parse_tablespaces(done.tablespaces)} == {"one", "two"}
    pg.sql("INSERT INTO t_one SELECT generate_series(3001, 3500)")
    closed = pg.switch_wal()

    def archived() -> bool:
        wv.run("archive-wal", "pg")
        return any(k.startswith(f"pg/wals/{closed[:16]}/{closed}") for k in keys(s3_storage, ""))

    wait_for(archived, what="the last segment archived", timeout=90)
    dest = tmp_path / "restored" / "data"
    moved = tmp_path / "moved-one"
    recovered = wv.run("recover", "pg", bid, str(dest), "--get-wal", "--tablespace", f"one:{moved}")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    default_two = f"{dest}_tablespaces/{oids['two']}"
    assert os.readlink(dest / "pg_tblspc" / str(oids["one"])) == str(moved)
    assert os.readlink(dest / "pg_tblspc" / str(oids["two"])) == default_two
    cluster = start_restored(pg, tmp_path / "restored", "restored")
    wait_for(lambda: not cluster.is_in_recovery(), what="recovery to the end", timeout=120)
    assert cluster.scalar("SELECT count(*) FROM t_one") == 3500
    assert cluster.scalar("SELECT count(*) FROM t_two") == 3000
    assert cluster.scalar("SELECT count(*) FROM t_main") == 5000


def test_an_encrypted_backup_in_the_bucket_is_gpg_and_recovers(
    pg: Any,
    walvault_factory: Any,
    moto_server: MotoServer,
    s3_bucket: str,
    s3_storage: Storage,
    aws_env: None,
    gpg_keys: Any,
    gnupg_home: Path,
    tmp_path: Path,
) -> None:
    from gpgharness import encryption_options, passphrase_file
    from walvault.archive.encryption import identify_encryption

    crypt = encryption_options(gpg_keys.ecc, passphrase_file(tmp_path))
    wv = walvault_factory({"pg": bucket_server(pg, s3_bucket, moto_server.endpoint, **crypt)})
    streaming(pg, wv)
    pg.sql("CREATE TABLE t (i int, pad text)")
    pg.sql("INSERT INTO t SELECT g, repeat('secret', 30) FROM generate_series(1, 20000) g")
    result = wv.run("backup", "--wait", "pg", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    bid = backup_id(result)
    objects = keys(s3_storage, f"pg/base/{bid}/")
    assert objects == [f"pg/base/{bid}/backup.info", f"pg/base/{bid}/data.tar.zst.gpg"], objects
    reader = s3_storage.open(f"pg/base/{bid}/data.tar.zst.gpg")
    assert reader is not None
    with reader:
        stored = reader.read()
    assert identify_encryption(stored[:16]) == "gpg" and b"secret" not in stored
    assert "encryption=gpg\n" in (s3_storage.open(f"pg/base/{bid}/backup.info").read().decode())  # type: ignore[union-attr]
    verified = wv.run("verify", "pg", bid)  # the tar read through, decrypted, from the bucket
    assert f"backup {bid} files: OK (every file matches backup_manifest" in verified.stdout, (
        verified.stdout + verified.stderr
    )
    pg.sql("INSERT INTO t SELECT g, 'after' FROM generate_series(20001, 21000) g")
    closed = pg.switch_wal()

    def archived() -> bool:
        wv.run("archive-wal", "pg")
        return any(
            k.startswith(f"pg/wals/{closed[:16]}/{closed}") for k in keys(s3_storage, "pg/wals/")
        )

    wait_for(archived, what="the last segment archived in the bucket", timeout=90)
    dest = tmp_path / "restored" / "data"
    recovered = wv.run("recover", "pg", "latest", str(dest), "--get-wal")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    cluster = start_restored(pg, tmp_path / "restored", "restored")
    wait_for(lambda: not cluster.is_in_recovery(), what="recovery to the end", timeout=120)
    assert cluster.scalar("SELECT count(*) FROM t") == 21000
