"""A ``.pgpass`` line for the database ``replication`` serves every replication connection.

PostgreSQL documents ``replication`` in the database field of ``.pgpass`` for replication
connections, and Barman relies on it; libpq itself looks the file up by the database name it
is given.  pg_receivewal sends ``dbname=replication`` by itself; walvault's own replication
connections (``check``'s IDENTIFY_SYSTEM, ``--create-slot``) must too, or they find no
password (``fe_sendauth: no password supplied``).  The conninfo strings here carry no
password and name ``dbname=postgres``, as users write them; the file holds no ``*``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from wvharness import start_receiver, streaming_server


def _pgpass(path: Path, pg: Any) -> dict[str, str]:
    lines = [
        f"127.0.0.1:{pg.port}:replication:{pg.streaming_user}:{pg.streaming_password}",
        f"127.0.0.1:{pg.port}:postgres:{pg.monitor_user}:{pg.monitor_password}",
    ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return {**os.environ, "PGPASSFILE": str(path)}


def test_check_and_create_slot_with_a_replication_pgpass_line(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    env = _pgpass(tmp_path / "pgpass", pg)
    wv = walvault_factory(
        {
            "pg": streaming_server(
                pg,
                conninfo=pg.conninfo(password=None),
                streaming_conninfo=pg.streaming_conninfo(password=None),
                create_slot="manual",
            )
        }
    )
    made = wv.run("receive-wal", "--create-slot", "pg", env=env)
    assert made.returncode == 0, made.stderr
    assert pg.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walvault'") == 1

    os.environ["PGPASSFILE"] = env["PGPASSFILE"]  # the receiver is spawned with our env
    try:
        start_receiver(wv, pg)
    finally:
        del os.environ["PGPASSFILE"]
    check = wv.run("check", "pg", env=env)
    assert "no password supplied" not in check.stdout + check.stderr
    lines = {line.strip().split(":")[0]: line for line in check.stdout.splitlines()}
    for name in ("PostgreSQL", "PostgreSQL streaming", "replication slot", "receive-wal running"):
        assert ": OK" in lines[name], check.stdout
