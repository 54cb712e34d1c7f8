"""'latest' and 'oldest' with no DONE backup name the backups there are and what they wait for."""

from __future__ import annotations

from pathlib import Path

import pytest

from walvault.backup.info import FAILED, WAITING_FOR_WALS, BackupInfo, no_completed_backup
from walvault.config import ServerConfig


def _server() -> ServerConfig:
    return ServerConfig(name="pg", walvault_home="/h", lock_directory="/h")


def test_no_backup_at_all() -> None:
    assert no_completed_backup(_server(), []) == "server 'pg' has no backup"


def test_a_waiting_backup_is_named_with_what_completes_it() -> None:
    backups = [
        BackupInfo("20261125T100000", "pg", status=FAILED),
        BackupInfo(
            "20261125T110000", "pg", status=WAITING_FOR_WALS, end_wal="000000010000000000000009"
        ),
    ]
    text = no_completed_backup(_server(), backups)
    assert text.startswith(
        "server 'pg' has no completed backup: 20261125T110000 is WAITING_FOR_WALS (its WAL up "
        "to 000000010000000000000009 is not all archived yet: 'walvault check-backup pg "
        "20261125T110000', or cron, marks it DONE once it is); 20261125T100000 is FAILED"
    )


@pytest.mark.parametrize("wanted", ["latest", "oldest"])
def test_resolving_latest_without_a_done_backup_says_why(wanted: str, tmp_path: Path) -> None:
    from walvault.backup.info import resolve_backup_id
    from walvault.errors import WalvaultError

    server = ServerConfig(
        name="pg",
        walvault_home=str(tmp_path),
        lock_directory=str(tmp_path),
        backup_directory=str(tmp_path / "pg"),
    )
    with pytest.raises(WalvaultError, match="has no backup"):
        resolve_backup_id(server, wanted)
