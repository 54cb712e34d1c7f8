"""The promise: a primary killed mid-load loses no acknowledged commit (synchronous streaming).

Backup over the streaming connection, a write load that records every commit it saw
acknowledged, ``pg_ctl stop -m immediate`` mid-load, ``recover`` to a new directory, start it,
and count.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from wvharness import WriteLoad, start_restored, streaming_server, wait_for

APP = "walvault_receive_wal"


def _setup(pg: Any, walvault_factory: Any, synchronous: bool, **options: Any) -> Any:
    pg.sql("CREATE TABLE load (id int PRIMARY KEY, pad text)")
    pg.sql("GRANT INSERT, SELECT ON load TO walvault")
    if synchronous:  # after the DDL: until the receiver runs, commits would wait for it
        pg.configure({"synchronous_standby_names": f"FIRST 1 ({APP})"})
    wv = walvault_factory(
        {"pg": streaming_server(pg, immediate_checkpoint="true", compression="zstd", **options)}
    )
    assert wv.run("cron").returncode == 0
    wait_for(
        lambda: (
            pg.scalar(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s", (APP,)
            )
            in (("sync",) if synchronous else ("async", "sync"))
        ),
        what="receiver streaming",
    )
    backup = wv.run("backup", "--wait", "pg", timeout=180)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    return wv


def _crash_mid_load(pg: Any, seconds: float = 3.0) -> WriteLoad:
    load = WriteLoad(pg.conninfo())
    load.start()
    time.sleep(seconds)
    pg.crash()
    load.join()
    assert len(load.acknowledged) > 50, "the load did not run"
    return load


def _recover_and_count(pg: Any, wv: Any, tmp_path: Path, *extra: str) -> tuple[set[int], str]:
    target = tmp_path / f"restored{len(extra)}{int(time.time() * 1000) % 100000}"
    result = wv.run("recover", "pg", "latest", str(target / "data"), *extra, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    restored = start_restored(pg, target, target.name)
    wait_for(lambda: not restored.is_in_recovery(), what="end of recovery", timeout=120)
    rows = {row[0] for row in restored.sql("SELECT id FROM load")}
    return rows, result.stdout


@pytest.mark.parametrize("mode", ["--get-wal", "--no-get-wal"])
def test_synchronous_streaming_loses_no_acknowledged_commit(
    pg: Any, walvault_factory: Any, tmp_path: Path, mode: str
) -> None:
    wv = _setup(pg, walvault_factory, synchronous=True)
    load = _crash_mid_load(pg)
    wait_for(lambda: wv.run("check", "pg").returncode == 1, what="receiver gone")
    rows, output = _recover_and_count(pg, wv, tmp_path, mode)
    lost = load.acknowledged - rows
    print(f"acknowledged {len(load.acknowledged)}, recovered {len(rows)}, lost {len(lost)}")
    assert not lost, f"acknowledged commits lost: {sorted(lost)[:20]}"
    assert rows <= load.attempted  # nothing invented
    if mode == "--no-get-wal":
        assert "Including the streamed tail" in output


def test_asynchronous_streaming_reports_what_was_lost(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    wv = _setup(pg, walvault_factory, synchronous=False)
    load = _crash_mid_load(pg)
    rows, _ = _recover_and_count(pg, wv, tmp_path, "--no-get-wal")
    lost = load.acknowledged - rows
    print(f"asynchronous: acknowledged {len(load.acknowledged)}, lost {len(lost)}")
    assert rows <= load.attempted
    assert len(lost) <= max(10, len(load.acknowledged) // 100), len(lost)


def test_synchronous_streaming_into_a_bucket_loses_no_acknowledged_commit(
    pg: Any,
    walvault_factory: Any,
    tmp_path: Path,
    moto_server: Any,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The archive in object storage (moto): nothing of it on local disk, the recovered
    cluster's restore_command reads the bucket, every acknowledged commit is back."""
    from s3harness import TEST_ENVIRON

    for key, value in TEST_ENVIRON.items():  # for walvault and the recovered PostgreSQL
        monkeypatch.setenv(key, value)
    wv = _setup(
        pg,
        walvault_factory,
        synchronous=True,
        wals_directory=f"s3://{s3_bucket}/rpo",
        aws_endpoint_url=moto_server.endpoint,
    )
    load = _crash_mid_load(pg)
    wait_for(lambda: wv.run("check", "pg").returncode == 1, what="receiver gone")
    rows, _ = _recover_and_count(pg, wv, tmp_path, "--get-wal")
    lost = load.acknowledged - rows
    print(f"bucket: acknowledged {len(load.acknowledged)}, recovered {len(rows)}, lost {len(lost)}")
    assert not lost, f"acknowledged commits lost: {sorted(lost)[:20]}"
    server = wv.server()
    assert not (Path(server.backup_directory) / "wals").exists()
    archived = [
        n for n in Path(server.streaming_wals_directory).iterdir() if n.suffix != ".partial"
    ]
    assert archived == [], "everything streamed is in the bucket, not on local disk"
