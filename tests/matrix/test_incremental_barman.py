"""Incremental chains shared with Barman 3.20.1, on PostgreSQL 17, in one home.

* Barman lists walvault's full and incremental backups (``F`` and ``I``), shows the chain,
  and ``barman recover`` of walvault's incremental (its own pg_combinebackup) gives back
  every row.
* Barman takes a full and an incremental of the same server into the same home; walvault
  settles them (archive-wal, check-backup), lists them as a chain and ``recover --get-wal``
  of Barman's incremental gives back every row.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from matrixkit import Receiver, add_rows, archive_everything, backup, fingerprint, matrix_server

from barmanharness import barman_server
from walvault.backup import info as binfo
from wvharness import wait_for

MAJOR = 17


def _barman_backup(barman: Any, wv: Any, pg: Any, *args: str) -> str:
    before = {b.backup_id for b in binfo.iter_backups(wv.server())}
    result = barman.run("backup", *args, "pg", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr + barman.log_text()
    [backup_id] = {b.backup_id for b in binfo.iter_backups(wv.server())} - before
    archive_everything(wv, pg)  # walvault archives the WAL Barman's backup needs

    def done() -> bool:
        checked = wv.run("check-backup", "pg", backup_id)
        return checked.returncode == 0 and checked.stdout.strip().endswith(": DONE")

    wait_for(done, what=f"Barman's backup {backup_id} DONE", timeout=120)
    return backup_id


def _start(pg: Any, target: Path, name: str) -> Any:
    restored = pg.sibling(name, target)
    restored._write_settings()
    restored.start(timeout=120)
    wait_for(lambda: not restored.is_in_recovery(), what=f"{name}: end of recovery", timeout=180)
    return restored


def test_barman_and_walvault_recover_each_others_incremental_chains(
    pg_factory: Any, walvault_factory: Any, barman_factory: Any, tmp_path: Path
) -> None:
    pg = pg_factory("primary", major=MAJOR, extra_conf={"summarize_wal": True})
    wv = walvault_factory({"pg": matrix_server(pg, pg.bindir)})
    Receiver(wv, pg).start(pg.bindir)
    add_rows(pg, 1, 5000)
    full = backup(wv)
    add_rows(pg, 5001, 6000)
    incremental = backup(wv, "--incremental", "latest")
    add_rows(pg, 6001, 6500)
    archive_everything(wv, pg)
    at_walvault_chain = fingerprint(pg)

    barman = barman_factory(
        {"pg": barman_server(pg, conninfo=pg.superuser_conninfo(), path_prefix=str(pg.bindir))},
        barman_home=wv.home,
    )
    listed = barman.run("list-backups", "pg")
    assert listed.returncode == 0, listed.stdout + listed.stderr + barman.log_text()
    kinds = {m[0]: m[1] for m in re.findall(r"^pg (\d{8}T\d{6}) - ([FI]) - ", listed.stdout, re.M)}
    assert kinds == {full: "F", incremental: "I"}, listed.stdout
    shown = barman.run("show-backup", "pg", incremental)
    assert re.search(rf"Parent Backup\s+: {full}", shown.stdout), shown.stdout
    assert re.search(rf"Root Backup\s+: {full}", shown.stdout), shown.stdout
    target = tmp_path / "by-barman"
    recovered = barman.run("recover", "pg", incremental, str(target / "data"), timeout=300)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr + barman.log_text()
    restored = _start(pg, target, "by-barman")
    assert fingerprint(restored) == at_walvault_chain
    restored.stop()

    # Barman's chain, settled and recovered by walvault
    barman_full = _barman_backup(barman, wv, pg)
    add_rows(pg, 6501, 7500)
    barman_incremental = _barman_backup(barman, wv, pg, "--incremental", "latest")
    info = binfo.load(wv.server(), barman_incremental)
    assert info.parent_backup_id == barman_full and info.backup_type == "incremental"
    assert binfo.load(wv.server(), barman_full).children == [barman_incremental]
    add_rows(pg, 7501, 8000)
    archive_everything(wv, pg)
    expected = fingerprint(pg)
    listed = wv.run("list-backups", "pg")
    assert f"pg {barman_incremental} - I - " in listed.stdout, listed.stdout
    target = tmp_path / "by-walvault"
    result = wv.run(
        "recover", "pg", barman_incremental, str(target / "data"), "--get-wal", timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    restored = _start(pg, target, "by-walvault")
    assert fingerprint(restored) == expected
    restored.stop()
