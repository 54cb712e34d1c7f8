"""The throwaway-cluster harness itself works against a real PostgreSQL."""

from __future__ import annotations

import psycopg

from pgharness import PgCluster, wait_until


def test_identify_system_over_replication_connection(pg: PgCluster) -> None:
    with pg.connect() as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("walvault",)

    expected = pg.scalar("SELECT system_identifier FROM pg_control_system()")
    assert int(expected) == pg.system_identifier()

    with psycopg.connect(
        pg.conninfo(user=pg.streaming_user) + " replication=true", autocommit=True
    ) as repl:
        row = repl.execute("IDENTIFY_SYSTEM").fetchone()
    assert row is not None
    systemid, timeline = row[0], row[1]
    assert int(systemid) == int(expected)
    assert int(timeline) == 1
    assert pg.timeline() == 1


def test_roles_and_passwords(pg: PgCluster) -> None:
    with pg.connect() as conn:
        roles = {
            r
            for (r,) in conn.execute(
                "SELECT rolname FROM pg_roles WHERE pg_has_role(current_user, oid, 'member')"
            )
        }
    assert {"pg_monitor", "pg_checkpoint"} <= roles

    with pg.connect(user=pg.nomonitor_user) as conn:
        assert conn.execute("SELECT pg_has_role('pg_monitor', 'member')").fetchone() == (False,)

    with psycopg.connect(pg.superuser_conninfo(), autocommit=True) as conn:
        assert conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (True,)

    try:
        psycopg.connect(pg.conninfo(password="wrong"), autocommit=True).close()
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc)
    else:
        raise AssertionError("a wrong password was accepted over TCP")


def test_standby_streams_from_primary(pg: PgCluster) -> None:
    standby = pg.make_standby(name="standby")
    assert standby.is_in_recovery()
    assert pg.replication_state("standby") == "streaming"
    assert standby.system_identifier() == pg.system_identifier()

    pg.sql("CREATE TABLE harness_probe (v text)")
    pg.sql("INSERT INTO harness_probe VALUES (%s)", ("hello standby",))
    rows = wait_until(
        lambda: standby.sql("SELECT v FROM harness_probe"),
        what="the row to reach the standby",
        cluster=standby,
    )
    assert rows == [("hello standby",)]


def test_crash_restart_and_promote(pg: PgCluster) -> None:
    standby = pg.make_standby(name="standby")
    pg.crash()
    assert not pg.is_running()
    pg.start()
    assert pg.scalar("SELECT 1") == 1

    standby.promote()
    assert not standby.is_in_recovery()
    assert standby.timeline() == 2
