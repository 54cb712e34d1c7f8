"""Barman's commands users reach for, on a real archive: keep, list-files, diagnose, show-server,
backup --bwlimit / --jobs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from walvault.backup import info as binfo
from wvharness import streaming_server, wait_for


def _backup(wv: Any, *args: str) -> str:
    result = wv.run("backup", *args, "pg", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"in \S+/base/(\d{8}T\d{6})$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    return match.group(1)


def test_keep_list_files_diagnose(pg: Any, walvault_factory: Any) -> None:
    options = streaming_server(pg, immediate_checkpoint="true", retention_policy="REDUNDANCY 1")
    wv = walvault_factory({"pg": options})
    assert wv.run("cron").returncode == 0
    wait_for(lambda: pg.replication_state("walvault_receive_wal") == "streaming", what="stream")
    first = _backup(wv, "--wait", "--bwlimit", "100000")
    log = (wv.home / "walvault.log").read_text()
    assert "--max-rate=100000k" in log  # --bwlimit is pg_basebackup's --max-rate
    jobs = wv.run("backup", "--jobs", "4", "pg")
    assert jobs.returncode == 1 and "copies over one connection" in jobs.stderr

    # keep: retention (REDUNDANCY 1) leaves a kept backup alone, delete refuses it
    kept = wv.run("keep", "--target", "full", "pg", first)
    assert kept.returncode == 0, kept.stderr
    assert wv.run("keep", "--status", "pg", first).stdout.strip() == "Keep: full"
    assert (Path(wv.server().backup_directory) / "meta" / f"{first}-keep").read_text() == "full"
    pg.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i")
    second = _backup(wv, "--wait")
    assert wv.run("cron").returncode == 0
    ids = [b.backup_id for b in binfo.iter_backups(wv.server())]
    assert ids == [first, second]
    listed = wv.run("list-backups", "pg").stdout
    assert f"pg {first} - " in listed and " - KEEP:FULL" in listed
    refused = wv.run("delete", "pg", first)
    assert refused.returncode == 1 and "has a current keep request" in refused.stderr
    assert wv.run("keep", "--release", "pg", first).returncode == 0
    assert wv.run("keep", "--status", "pg", first).stdout.strip() == "Keep: nokeep"
    assert wv.run("cron").returncode == 0  # now retention may delete it
    assert [b.backup_id for b in binfo.iter_backups(wv.server())] == [second]

    # list-files: the copy, and the WAL it needs
    info = binfo.load(wv.server(), second)
    data = wv.run("list-files", "--target", "data", "pg", second).stdout.splitlines()
    assert any(p.endswith("/data/PG_VERSION") for p in data) and all(
        os.path.isfile(p) for p in data
    )
    standalone = wv.run("list-files", "pg", second).stdout.splitlines()
    wal = [p for p in standalone if p not in data]
    assert wal and os.path.basename(wal[0]) == info.begin_wal
    assert os.path.basename(wal[-1]) == info.end_wal and all(os.path.isfile(p) for p in wal)
    assert wv.run("list-files", "--target", "full", "pg", second).stdout.startswith("\n".join(data))

    # show-server is show-servers, as in Barman
    assert wv.run("show-server", "pg").stdout == wv.run("show-servers", "pg").stdout

    # diagnose: one JSON document, no password anywhere
    done = wv.run("diagnose")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["global"]["system_info"]["walvault_version"]
    server = document["servers"]["pg"]
    assert server["config"]["conninfo"] and server["status"]["active"]["message"] == "True"
    assert [b["backup_id"] for b in server["backups"]] == [second]
    for password in pg.passwords.values():
        assert password not in done.stdout
