"""archive-wal and rebuild-xlogdb never connect: they neither parse conninfo nor load libpq."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakewal import python_stdout

# Runs the command in a fresh interpreter and reports its exit code and whether psycopg
# (libpq) was imported on the way.
PROBE = """
import json, sys
from walvault.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "psycopg": "psycopg" in sys.modules}))
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "w.conf"
    # "port" without a value: libpq cannot parse it, so a check would disable the server
    path.write_text(
        f"[walvault]\nwalvault_home = {tmp_path}\n[pg]\nconninfo = host=x port\narchiver = on\n"
    )
    return path


def _run(*argv: str) -> tuple[dict[str, object], str]:
    *output, last = python_stdout(PROBE, *argv).splitlines()
    result: dict[str, object] = json.loads(last)
    return result, "\n".join(output)


@pytest.mark.parametrize("command", ["archive-wal", "rebuild-xlogdb"])
def test_runs_without_libpq_despite_an_unparsable_conninfo(conf: Path, command: str) -> None:
    result, _ = _run("-c", str(conf), "-q", command, "pg")
    assert result == {"code": 0, "psycopg": False}


def test_other_commands_still_disable_the_server_for_it(conf: Path) -> None:
    result, output = _run("-c", str(conf), "show-servers", "pg")
    assert result["psycopg"] is True
    # libpq's quoted piece of the string is masked: it could have been a password
    assert "disabled: True" in output and 'missing "=" after "*****"' in output
