"""The WAL archive in object storage (``wals_directory = s3://...``) against moto's S3 server.

Real segments streamed from PostgreSQL 15 are archived into the bucket under barman-cloud's
keys (``<path>/<server>/wals/<16 hex>/<name>.zst``), nothing of the archive is written to
local disk, get-wal and walvault-wal-restore serve them back byte for byte straight from
the bucket, rebuild-xlogdb rebuilds the catalogue from a listing, and a store that is down
loses nothing: archive-wal fails loudly, check says so, and the backlog drains once the
store answers again.  moto does not verify checksums or signatures (see
tests/unit/storage/test_s3_wire.py for that part).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from s3harness import MotoServer, free_port
from walvault.compression import decompress_bytes
from walvault.storage.base import Storage
from wvharness import WALVAULT, make_segments, start_receiver, streaming_server, wait_for

BIN = Path(sys.executable).parent


def _bucket_server(pg: Any, bucket: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    return streaming_server(
        pg,
        wals_directory=f"s3://{bucket}/walvault-test",
        aws_endpoint_url=endpoint,
        compression="zstd",
        **extra,
    )


def _streamed(pg: Any, wv: Any, count: int) -> dict[str, bytes]:
    """``count`` closed segments, streamed and copied aside before archive-wal takes them
    (one more is closed: archive-wal holds back the newest complete segment when no
    ``.partial`` follows it)."""
    receiver = start_receiver(wv, pg)
    closed = make_segments(pg, count + 1)[:count]
    streaming = Path(wv.server().streaming_wals_directory)
    wait_for(lambda: all((streaming / n).exists() for n in closed), what="segments streamed")
    assert wv.run("receive-wal", "--stop", "pg").returncode == 0
    receiver.wait(timeout=30)
    return {name: (streaming / name).read_bytes() for name in closed}


def _objects(storage: Storage) -> dict[str, bytes]:
    found = {}
    for info in storage.list("pg/"):
        reader = storage.open(info.key)
        assert reader is not None
        with reader:
            found[info.key] = reader.read()
    return found


def test_archive_in_the_bucket_served_back_byte_for_byte(
    pg: Any,
    walvault_factory: Any,
    moto_server: MotoServer,
    s3_bucket: str,
    s3_storage: Storage,
    aws_env: None,
    tmp_path: Path,
) -> None:
    wv = walvault_factory({"pg": _bucket_server(pg, s3_bucket, moto_server.endpoint)})
    originals = _streamed(pg, wv, 4)
    result = wv.run("archive-wal", "pg")
    assert result.returncode == 0, result.stdout + result.stderr
    objects = _objects(s3_storage)
    for name, data in originals.items():
        key = f"pg/wals/{name[:16]}/{name}.zst"
        assert key in objects, sorted(objects)
        assert decompress_bytes("zstd", objects[key]) == data
    server = wv.server()
    assert not os.path.exists(os.path.join(server.backup_directory, "wals"))
    assert server.xlogdb_path == os.path.join(server.backup_directory, "meta", "pg-xlog.db")
    catalogued = [line.split("\t")[0] for line in Path(server.xlogdb_path).read_text().splitlines()]
    assert sorted(catalogued) == sorted(originals)

    for name, data in originals.items():
        got = subprocess.run(
            [*WALVAULT, "-c", str(wv.conf), "get-wal", "pg", name], capture_output=True
        )
        assert got.returncode == 0, got.stderr
        assert got.stdout == data
        dest = tmp_path / "RECOVERYXLOG"
        restore = subprocess.run(
            [str(BIN / "walvault-wal-restore"), "-c", str(wv.conf), "local", "pg", name, str(dest)],
            capture_output=True,
            text=True,
        )
        assert restore.returncode == 0, restore.stderr
        assert dest.read_bytes() == data
    missing = "000000010000000000000099"
    absent = subprocess.run(
        [
            str(BIN / "walvault-wal-restore"),
            "-c",
            str(wv.conf),
            "local",
            "pg",
            missing,
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert absent.returncode == 1, absent.stderr

    os.unlink(server.xlogdb_path)
    rebuilt = wv.run("rebuild-xlogdb", "pg")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "wal_file: 4" in rebuilt.stdout + rebuilt.stderr

    # a tampered object is refused, never served: moto keeps what we write over it
    name = sorted(originals)[1]
    key = f"pg/wals/{name[:16]}/{name}.zst"
    s3_storage.put(key, objects[key][:-40] + bytes(40), create_only=False)
    bad = subprocess.run(
        [*WALVAULT, "-c", str(wv.conf), "get-wal", "pg", name], capture_output=True
    )
    assert bad.returncode == 200, bad.stderr


def test_a_store_that_is_down_loses_nothing_and_the_backlog_drains(
    pg: Any,
    walvault_factory: Any,
    moto_server: MotoServer,
    s3_bucket: str,
    s3_storage: Storage,
    aws_env: None,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    options = _bucket_server(pg, s3_bucket, dead, aws_retries="1", aws_retry_timeout="3")
    wv = walvault_factory({"pg": options})
    originals = _streamed(pg, wv, 3)
    down = wv.run("archive-wal", "pg")
    assert down.returncode != 0
    errors = [line for line in down.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors and "connection refused" in errors[0].lower(), down.stderr
    assert "Traceback" not in down.stderr
    streaming = Path(wv.server().streaming_wals_directory)
    assert all((streaming / name).read_bytes() == data for name, data in originals.items())
    check = wv.run("check", "pg")
    assert check.returncode == 1
    assert "WAL archive storage: FAILED" in check.stdout, check.stdout
    options["aws_endpoint_url"] = moto_server.endpoint
    wv.write({"pg": options})
    assert wv.run("archive-wal", "pg").returncode == 0
    objects = _objects(s3_storage)
    for name, data in originals.items():
        assert decompress_bytes("zstd", objects[f"pg/wals/{name[:16]}/{name}.zst"]) == data
        assert not (streaming / name).exists()


def test_the_restore_client_stops_postgresql_when_the_store_does_not_answer(
    pg: Any, walvault_factory: Any, aws_env: None, tmp_path: Path
) -> None:
    """A store that is down is never "not in the archive": 200, so PostgreSQL stops."""
    dead = f"http://127.0.0.1:{free_port()}"
    options = _bucket_server(pg, "no-bucket", dead, aws_retries="0", aws_retry_timeout="2")
    wv = walvault_factory({"pg": options})
    dest = tmp_path / "RECOVERYXLOG"
    for agent in ([], ["--no-agent"]):
        restore = subprocess.run(
            [
                str(BIN / "walvault-wal-restore"),
                *agent,
                "--spool-dir",
                str(tmp_path / "spool"),
                "-c",
                str(wv.conf),
                "local",
                "pg",
                "000000010000000000000003",
                str(dest),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert restore.returncode == 200, restore.stderr
        assert "connection refused" in restore.stderr.lower()
        assert not dest.exists()


def test_archive_wal_killed_at_random_instants_into_the_bucket(
    pg: Any,
    walvault_factory: Any,
    moto_server: MotoServer,
    s3_bucket: str,
    s3_storage: Storage,
    aws_env: None,
) -> None:
    """SIGKILL during uploads: the next run uploads what is missing, every segment ends in
    the bucket exactly once, byte for byte, catalogued once, and nothing stays staged."""
    import random
    import signal
    import time

    wv = walvault_factory({"pg": _bucket_server(pg, s3_bucket, moto_server.endpoint)})
    originals = _streamed(pg, wv, 10)
    server = wv.server()
    streaming = Path(server.streaming_wals_directory)
    rng = random.Random(int(os.environ.get("WALVAULT_CRASH_SEED", "7")))
    kills = 0
    for _ in range(12):
        proc = wv.spawn_locked("archive-wal", server)
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        kills += proc.returncode == -signal.SIGKILL
        if not any((streaming / n).exists() for n in originals):
            break
        for name, data in originals.items():  # put back what a run removed: a new backlog
            if not (streaming / name).exists() and rng.random() < 0.3:
                (streaming / name).write_bytes(data)
    final = wv.run("archive-wal", "pg")
    assert final.returncode == 0, final.stdout + final.stderr
    assert kills >= 1
    objects = _objects(s3_storage)
    keys = sorted(k for k in objects if not k.endswith(".partial"))
    assert keys == sorted(f"pg/wals/{n[:16]}/{n}.zst" for n in originals)
    for name, data in originals.items():
        assert decompress_bytes("zstd", objects[f"pg/wals/{name[:16]}/{name}.zst"]) == data
        assert not (streaming / name).exists()
    catalogued = [line.split("\t")[0] for line in Path(server.xlogdb_path).read_text().splitlines()]
    assert sorted(catalogued) == sorted(originals)
