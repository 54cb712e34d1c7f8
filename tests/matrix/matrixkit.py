"""Helpers of the version-matrix tests: rows that prove a recovery, the running receiver, check.

The matrix tests run walvault against servers of every PostgreSQL major from 14 to 18
(``pg_major``, ``pg_bindir_of`` in ``tests/conftest.py``), with the server's own client
programs and with the newest ones (18's), as ``path_prefix`` chooses them.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from wvharness import slot_active, streaming_server, wait_for


def matrix_server(pg: Any, client_bindir: Path, **overrides: Any) -> dict[str, Any]:
    """A streaming-only server for ``pg`` whose client programs come from ``client_bindir``."""
    return streaming_server(
        pg, path_prefix=str(client_bindir), immediate_checkpoint="true", **overrides
    )


def add_rows(pg: Any, first: int, last: int) -> None:
    """Rows ``first..last`` of table ``t`` (created on first use), several pages per call."""
    pg.sql("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, pad text)")
    pg.sql(
        "INSERT INTO t SELECT g, md5(g::text) || repeat('x', 200) "
        "FROM generate_series(%s::int, %s::int) g",
        (first, last),
    )


def fingerprint(pg: Any) -> tuple[int, str]:
    """Row count and an md5 of every row of ``t`` in order: equal only if every row is back."""
    row = pg.sql("SELECT count(*), md5(string_agg(id::text || ':' || pad, ',' ORDER BY id)) FROM t")
    return int(row[0][0]), str(row[0][1])


def check_lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``check``'s console output as ``{check name: "OK" | "FAILED (hint)"}``."""
    lines = {}
    for line in result.stdout.splitlines()[1:]:
        if line.startswith("\t") and not line.startswith("\t\t"):
            name, _, rest = line.strip().partition(": ")
            lines[name] = rest
    return lines


def assert_check_ok(wv: Any) -> dict[str, str]:
    """``check pg`` passes, every line OK, the receiver's compatibility among them."""
    result = wv.run("check", "pg")
    lines = check_lines(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(v.startswith("OK") for v in lines.values()), lines
    for name in ("pg_receivexlog", "pg_receivexlog compatible", "receive-wal running"):
        assert lines.get(name) == "OK", (name, lines)
    return lines


def receivewal_programs(streaming_dir: str) -> list[str]:
    """The executables of the pg_receivewal processes writing into ``streaming_dir``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        named = bool(args) and os.path.basename(args[0]) == "pg_receivewal"
        if named and f"--directory={streaming_dir}" in args:
            found.append(args[0])
    return found


class Receiver:
    """receive-wal of server ``pg`` as cron keeps it running, restartable with another client."""

    def __init__(self, wv: Any, pg: Any) -> None:
        self.wv, self.pg = wv, pg

    def start(self, client_bindir: Path) -> None:
        """``cron``; return once pg_receivewal of ``client_bindir`` streams on the slot."""
        result = self.wv.run("cron")
        assert result.returncode == 0, result.stdout + result.stderr
        streaming = self.wv.server().streaming_wals_directory
        programs = wait_for(lambda: receivewal_programs(streaming), what="pg_receivewal running")
        assert programs == [str(client_bindir / "pg_receivewal")], programs
        wait_for(lambda: slot_active(self.pg), what="pg_receivewal streaming on the slot")

    def stop(self) -> None:
        """``receive-wal --stop``; return once its pg_receivewal is gone."""
        result = self.wv.run("receive-wal", "--stop", "pg")
        assert result.returncode == 0, result.stdout + result.stderr
        streaming = self.wv.server().streaming_wals_directory
        wait_for(lambda: not receivewal_programs(streaming), what="pg_receivewal stopped")


def backup(wv: Any, *args: str) -> str:
    """``backup --wait [ARGS] pg``; the new backup's id."""
    result = wv.run("backup", "--wait", *args, "pg", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"^Backup (\d{8}T\d{6}) of server pg: DONE$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    return match.group(1)


def archive_everything(wv: Any, pg: Any) -> None:
    """Close the current segment (``switch-wal``) and wait until archive-wal archived it.

    archive-wal holds the newest complete segment back until pg_receivewal has opened the
    next ``.partial`` (Barman's rule), which an idle server makes it do only at its next WAL
    record, up to 15 s later: a commit right after the switch writes one (and one before it
    makes sure there is something to switch).
    """
    pg.sql("SELECT txid_current()")
    result = wv.run("switch-wal", "pg")
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"The WAL file ([0-9A-F]{24}) has been closed", result.stdout)
    assert match, result.stdout
    closed = match.group(1)
    pg.sql("SELECT txid_current()")
    wals = Path(wv.server().wals_directory) / closed[:16]

    def archived() -> bool:
        ran = wv.run("archive-wal", "pg")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        return wals.is_dir() and any(n.startswith(closed) for n in os.listdir(wals))

    wait_for(archived, what=f"{closed} archived")


def recover_and_start(pg: Any, wv: Any, backup_id: str, target: Path, name: str) -> Any:
    """``recover --get-wal`` of ``backup_id`` into ``target/data``, started with ``pg``'s
    binaries (those of its major) and waited for until recovery ended; the running cluster."""
    result = wv.run("recover", "pg", backup_id, str(target / "data"), "--get-wal", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    restored = pg.sibling(name, target)
    restored._write_settings()
    restored.start(timeout=120)
    wait_for(lambda: not restored.is_in_recovery(), what=f"{name}: end of recovery", timeout=180)
    return restored
