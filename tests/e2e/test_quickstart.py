"""``walvault quickstart``: the newcomer's first command does the whole job and loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys


def test_quickstart_loses_no_acknowledged_commit(tmp_path: object) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "walvault.cli.main", "quickstart", "--seconds", "3"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "acknowledged commits lost: 0", result.stdout
    assert "with the streamed .partial tail" in result.stdout
    acknowledged = next(int(x.split()[-1]) for x in lines if "transactions acknowledged" in x)
    assert acknowledged > 100
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith("walvault-quickstart-")]


def test_quickstart_without_postgresql_is_a_clear_error(tmp_path: object) -> None:
    env = {**os.environ, "WALVAULT_PG_BINDIR": str(tmp_path), "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "walvault.cli.main", "quickstart"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("ERROR: PostgreSQL server programs")
    assert "Traceback" not in result.stderr
