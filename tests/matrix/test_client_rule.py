"""walvault's rule for which client may serve which server is the one PostgreSQL enforces.

One server of every available major (14 to 18); the real pg_receivewal and pg_basebackup of
every major run against every server. Each either works (pg_receivewal streams up to the
server's flush position and stops; pg_basebackup copies the cluster) or refuses with
"incompatible server version" at once, and that outcome must be what
``walvault.postgres.programs.serves`` says, for every one of the 25 pairs of each program --
the rule receive-wal, backup and ``check``'s ``pg_receivexlog compatible`` apply.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pgharness import requested_majors
from walvault.postgres.programs import parse_version, serves
from walvault.wal.names import format_lsn, parse_lsn


def _available(pg_bindir_of: Any) -> dict[int, Path]:
    """The binaries of every requested major that is here (a required one missing: error)."""
    found = {}
    for major in requested_majors()[0]:
        try:
            found[major] = pg_bindir_of(major)
        except pytest.skip.Exception:
            continue
    if len(found) < 2:
        pytest.skip(f"needs two PostgreSQL majors or more, found {sorted(found)}")
    return found


def _run(client: Path, program: str, server: Any, args: list[str]) -> tuple[bool, str]:
    env = {**os.environ, "PGPASSWORD": server.streaming_password, "LC_ALL": "C"}
    proc = subprocess.run(
        [str(client / program), f"--dbname={server.streaming_conninfo(password=None)}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        assert "incompatible server version" in proc.stderr, (program, client, proc.stderr)
    return proc.returncode == 0, proc.stderr


def _version(client: Path, program: str) -> Any:
    out = subprocess.run(
        [str(client / program), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return parse_version(out)


def test_pg_receivewal_and_pg_basebackup_serve_what_serves_says(
    pg_bindir_of: Any, pg_factory: Any, tmp_path: Path
) -> None:
    binaries = _available(pg_bindir_of)
    servers = {major: pg_factory(f"pg{major}", major=major) for major in binaries}
    observed: dict[tuple[str, int, int], bool] = {}
    predicted: dict[tuple[str, int, int], bool] = {}
    for server_major, server in servers.items():
        server.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i")
        version_num = int(server.scalar("SHOW server_version_num"))
        for client_major, client in binaries.items():
            # WAL past the start of the current segment, where pg_receivewal begins; it stops
            # once it holds WAL *past* --endpos, hence one byte before the flushed end
            server.sql("INSERT INTO t SELECT generate_series(1, 1000)")
            flushed = parse_lsn(str(server.scalar("SELECT pg_current_wal_flush_lsn()")))
            endpos = format_lsn(flushed - 1)
            for program, args in (
                (
                    "pg_receivewal",
                    ["--no-loop", "--no-sync", "--no-password", f"--endpos={endpos}"],
                ),
                ("pg_basebackup", ["-X", "none", "-c", "fast", "--no-sync", "--no-password"]),
            ):
                target = tmp_path / f"{program}-{client_major}-to-{server_major}"
                target.mkdir()
                dir_arg = "--directory" if program == "pg_receivewal" else "--pgdata"
                ok, err = _run(client, program, server, [f"{dir_arg}={target}", *args])
                key = (program, client_major, server_major)
                observed[key] = ok
                predicted[key] = serves(program, _version(client, program), version_num)
                if ok and program == "pg_basebackup":
                    assert (target / "PG_VERSION").read_text() == f"{server_major}\n", err
                if ok and program == "pg_receivewal":
                    assert any(target.iterdir()), err  # it streamed something
    assert observed == predicted
    refused = sorted(k for k, ok in observed.items() if not ok)
    # non-vacuous: every older client refused every newer server, and only those
    assert refused == sorted(
        (program, c, s)
        for program in ("pg_basebackup", "pg_receivewal")
        for c in binaries
        for s in servers
        if c < s
    )
