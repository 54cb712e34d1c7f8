"""get-wal never answers 1 ("no such WAL": PostgreSQL ends recovery) for a problem of its own:
it exits 200, which PostgreSQL obeys by stopping (barman-wal-restore passes it through)."""

from __future__ import annotations

from pathlib import Path

import pytest

from walvault.cli.main import main

SEGMENT = "000000010000000000000001"


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "w.conf"
    path.write_text(
        f"[walvault]\nwalvault_home = {tmp_path}\n[pg]\nconninfo = host=x\narchiver = on\n"
    )
    return str(path)


def test_not_found_is_1_and_only_that(conf: str, tmp_path: Path) -> None:
    assert main(["-c", conf, "get-wal", "pg", SEGMENT]) == 1
    assert main(["-c", conf, "get-wal", "nosuch", SEGMENT]) == 200
    assert main(["-c", str(tmp_path / "missing.conf"), "get-wal", "pg", SEGMENT]) == 200
    assert main(["-c", conf, "get-wal", "pg", "../../etc/passwd"]) == 3
    # other commands keep the generic 1
    assert main(["-c", conf, "show-servers", "nosuch"]) == 1
