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


def test_quickstart_keep_prints_commands_that_work_and_how_to_stop(tmp_path: object) -> None:
    """Before: --keep printed 'walvault -c ...' (walvault was not on PATH) and did not say
    how to stop the restored server it left running.  Every '$ ' line it prints runs."""
    import shlex

    env = {**os.environ, "TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}  # no walvault
    result = subprocess.run(
        [sys.executable, "-m", "walvault.cli.main", "quickstart", "--seconds", "2", "--keep"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    commands = [line.split("$ ", 1)[1] for line in result.stdout.splitlines() if "  $ " in line]
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Still running: the restored PostgreSQL" in result.stdout
        assert len(commands) >= 5, result.stdout
        look, stop = commands[:4], commands[4:]
        for command in look:
            done = subprocess.run(
                command, shell=True, capture_output=True, text=True, timeout=120, env=env
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert any("count" in c for c in look)
        for command in stop:
            done = subprocess.run(command, shell=True, capture_output=True, text=True, env=env)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert not [n for n in os.listdir(str(tmp_path)) if n.startswith("walvault-quickstart-")]
    finally:  # whatever happened, nothing keeps running after the test
        data = next((c for c in commands if " stop -m fast -D " in c), None)
        if data is not None:
            subprocess.run(shlex.split(data), capture_output=True, env=env)
