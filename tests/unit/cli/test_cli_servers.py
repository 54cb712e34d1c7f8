"""The CLI front: help, list-servers, show-servers, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from walvault.cli.main import main


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "walvault.conf"
    path.write_text(
        textwrap.dedent(
            f"""
            [walvault]
            walvault_home = {tmp_path}/home

            [pg]
            description = Main database
            conninfo = host=127.0.0.1 user=walvault password='p@ss word' dbname=postgres
            streaming_conninfo = postgresql://streamer:uri-secret@127.0.0.1/postgres
            streaming_archiver = on
            slot_name = walvault

            [broken]
            streaming_archiver = on
            """
        )
    )
    return str(path)


def test_help_lists_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "walvault.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "list-servers" in result.stdout and "show-servers" in result.stdout


def test_list_servers(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", conf, "list-servers"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["broken -  (WARNING: disabled)", "pg - Main database"]
    assert main(["-c", conf, "list-servers", "--minimal"]) == 0
    assert capsys.readouterr().out.split() == ["broken", "pg"]


def test_show_servers_masks_passwords(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", conf, "show-servers", "pg"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Server pg:\n")
    assert "\tslot_name: walvault\n" in out
    assert "\tstreaming_archiver: True\n" in out
    assert "p@ss" not in out and "uri-secret" not in out
    assert out.count("password=*****") == 2
    lines = [line for line in out.splitlines()[1:] if not line.startswith("\tmsg_list")]
    assert lines == sorted(lines)


def test_show_servers_all_json_lists_reasons(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", conf, "-f", "json", "show-servers", "all"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"broken", "pg"}
    assert data["broken"]["disabled"] == "True"
    assert "Missing 'conninfo'" in data["broken"]["msg_list"][0]


def test_unknown_server_is_one_line_error(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", conf, "show-servers", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR: unknown server 'nope'") and err.count("\n") == 1


def test_missing_config_is_one_line_error(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("WALVAULT_CONFIG_FILE", None)
    result = subprocess.run(
        [sys.executable, "-m", "walvault.cli.main", "-c", str(tmp_path / "x.conf"), "list-servers"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("ERROR: configuration file")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_walvault_user_mismatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "u.conf"
    path.write_text(f"[walvault]\nwalvault_home = {tmp_path}\nwalvault_user = nosuchuser_wv\n")
    result = subprocess.run(
        [sys.executable, "-m", "walvault.cli.main", "-c", str(path), "list-servers"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "walvault_user 'nosuchuser_wv' does not exist" in result.stderr
