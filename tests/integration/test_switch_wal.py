"""switch-wal against real PostgreSQL 15: messages, --force privileges, standbys, --archive."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from wvharness import start_receiver, streaming_server, wait_for

CLOSED_RE = re.compile(r"The WAL file ([0-9A-F]{24}) has been closed on server 'pg'")


def grant_switch(pg: Any, user: str) -> None:
    """The harness grants it to ``walvault`` already (as the README asks of a backup user)."""
    pg.sql(f"GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {user}")


def closed_name(result: subprocess.CompletedProcess[str]) -> str:
    match = CLOSED_RE.search(result.stdout)
    assert match, (result.returncode, result.stdout, result.stderr)
    return match.group(1)


def test_switch_closes_a_segment_then_needs_no_switch(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    pg.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    before = pg.scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    result = wv.run("switch-wal", "pg")
    assert result.returncode == 0, result.stderr
    assert closed_name(result) == before
    assert pg.scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())") > before
    # nothing written since: no switch (background WAL may need one more round first)
    wait_for(
        lambda: "No switch required for server 'pg'" in wv.run("switch-xlog", "pg").stdout,
        what="an idle server needing no switch",
    )
    # --force checkpoints first (the walvault role has pg_checkpoint), so a segment closes
    forced = wv.run("switch-wal", "--force", "pg")
    assert forced.returncode == 0, forced.stderr
    closed_name(forced)


def test_switch_needs_execute_on_pg_switch_wal(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, conninfo=pg.conninfo("nomonitor"))})
    result = wv.run("switch-wal", "pg")
    assert result.returncode == 1
    assert "ERROR: Unable to perform pg_switch_wal for server 'pg'." in result.stderr
    assert "GRANT EXECUTE ON FUNCTION pg_switch_wal() TO nomonitor" in result.stderr


def test_force_without_checkpoint_privileges(pg: Any, walvault_factory: Any) -> None:
    grant_switch(pg, "nomonitor")
    wv = walvault_factory({"pg": streaming_server(pg, conninfo=pg.conninfo("nomonitor"))})
    before = pg.scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    result = wv.run("switch-wal", "--force", "pg")
    assert result.returncode == 1
    assert (
        "ERROR: walvault switch-wal --force requires superuser rights or the "
        "'pg_checkpoint' role (user 'nomonitor')"
    ) in result.stderr
    assert "has been closed" not in result.stdout
    assert pg.scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())") == before
    assert pg.nomonitor_password not in result.stderr + result.stdout


def test_standby_is_not_switched(pg: Any, walvault_factory: Any) -> None:
    standby = pg.make_standby(name="standby")
    wv = walvault_factory({"pg": streaming_server(standby)})
    result = wv.run("switch-wal", "pg")
    assert result.returncode == 0, result.stderr
    assert "No switch performed because server 'pg' is a standby." in result.stdout
    forced = wv.run("switch-wal", "--force", "pg")  # no CHECKPOINT is attempted on a standby
    assert forced.returncode == 0, forced.stderr
    assert "No switch performed because server 'pg' is a standby." in forced.stdout


def test_force_archive_returns_once_the_segment_is_archived(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    start_receiver(wv, pg)
    result = wv.run("switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg")
    assert result.returncode == 0, result.stdout + result.stderr
    name = closed_name(result)
    assert f"Waiting for the WAL file {name} from server 'pg' (max: 60 seconds)" in result.stdout
    assert f"The WAL file {name} has been archived for server 'pg'" in result.stdout
    server = wv.server()
    archived = os.path.join(server.wals_directory, name[:16], name)
    assert os.path.exists(archived)
    assert name in Path(server.xlogdb_path).read_text()
    assert "WARNING: receive-wal is not running" not in result.stderr


def test_archive_times_out_when_nothing_streams(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg)})
    result = wv.run("switch-wal", "--force", "--archive", "--archive-timeout", "3", "pg")
    assert result.returncode == 1
    name = closed_name(result)
    assert f"ERROR: The WAL file {name} has not been received in 3 seconds" in result.stderr
    assert "WARNING: receive-wal is not running for server 'pg'" in result.stderr
