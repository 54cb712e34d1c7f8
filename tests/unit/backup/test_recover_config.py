"""What ``recover`` writes into the copy: commands quoted for the shell and for PostgreSQL's
configuration reader, no standby left by accident, never into walvault's own directories."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from walsupply import make_server
from walvault.backup.recover import (
    MARK,
    RecoverOptions,
    _end_standby,
    check_not_walvault,
    restore_command,
    shell_arg,
    staged_restore_command,
)
from walvault.backup.targets import RecoveryTarget, conf_quote
from walvault.errors import WalvaultError

HOSTILE = "/srv/wal vault/it's $(touch pwned) `id` %p %f %% \\n;|&.conf"


def postgres_substitutes(command: str, wal: str, path: str) -> str:
    """What PostgreSQL runs for ``restore_command``: %f, %p, %r and %% replaced, the rest kept."""
    out, i = [], 0
    while i < len(command):
        if command[i] == "%" and i + 1 < len(command) and command[i + 1] in "fpr%":
            out.append(
                {"f": wal, "p": path, "r": "000000010000000000000001", "%": "%"}[command[i + 1]]
            )
            i += 2
        else:
            out.append(command[i])
            i += 1
    return "".join(out)


def guc_unquote(quoted: str) -> str:
    """PostgreSQL's reading of a quoted configuration value (guc-file.l, GUC_scanstr)."""
    assert quoted[0] == quoted[-1] == "'" and "\n" not in quoted
    text, out, i = quoted[1:-1], [], 0
    escapes = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
    while i < len(text):
        char = text[i]
        if char == "\\":
            nxt = text[i + 1]
            out.append(escapes.get(nxt, nxt))
            i += 2
        elif char == "'":
            assert text[i + 1] == "'"
            out.append("'")
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def test_every_argument_of_restore_command_survives_quoting(tmp_path: Path) -> None:
    """Before: only %p was quoted, so a configuration path with a space broke recovery and
    one with $(...) ran in PostgreSQL's shell."""
    server = make_server(tmp_path, parallel_jobs=3)
    options = RecoverOptions(str(tmp_path / "d"), RecoveryTarget(), True, config_file=HOSTILE)
    written = conf_quote(restore_command(server, options))
    command = postgres_substitutes(
        guc_unquote(written), "000000010000000000000002", "pg_wal/RECOVERYXLOG"
    )
    argv = shlex.split(command)
    assert argv[argv.index("-c") + 1] == HOSTILE
    assert argv[-4:] == ["local", "pg", "000000010000000000000002", "pg_wal/RECOVERYXLOG"]
    assert "-P" in argv and argv[argv.index("-p") + 1] == "3"


def test_the_staged_restore_command_is_quiet_when_missing_and_stops_on_a_failed_copy(
    tmp_path: Path,
) -> None:
    """--no-get-wal: run by a real shell as PostgreSQL runs it.  A missing file (the next
    timeline's history, the segment after the last) exits 1 without a word (it used to print
    'cp: cannot stat' on every recovery); a copy that fails exits 200, never 1."""
    import subprocess

    staging = tmp_path / "it's walvault_wal"
    staging.mkdir()
    (staging / "000000010000000000000002").write_bytes(b"wal")
    command = guc_unquote(conf_quote(staged_restore_command(str(staging))))

    def run(name: str, dest: Path) -> subprocess.CompletedProcess[str]:
        shell = postgres_substitutes(command, name, str(dest))
        return subprocess.run(["/bin/sh", "-c", shell], capture_output=True, text=True)

    copied = run("000000010000000000000002", tmp_path / "RECOVERYXLOG")
    assert copied.returncode == 0 and (tmp_path / "RECOVERYXLOG").read_bytes() == b"wal"
    missing = run("00000002.history", tmp_path / "RECOVERYHISTORY")
    assert missing.returncode == 1 and missing.stderr == "" and missing.stdout == ""
    unwritable = run("000000010000000000000002", tmp_path / "no" / "such" / "dir")
    assert unwritable.returncode == 200, unwritable


def test_with_a_restore_service_restore_command_needs_no_configuration(tmp_path: Path) -> None:
    """PostgreSQL runs as another user: it asks the service; -c CONF is not written (that
    user cannot read walvault's configuration)."""
    server = make_server(tmp_path)
    options = RecoverOptions(
        str(tmp_path / "d"),
        RecoveryTarget(),
        True,
        config_file="/etc/walvault.conf",
        service=("/run/walvault/restore.sock", "walvault", "postgres"),
    )
    argv = shlex.split(guc_unquote(conf_quote(restore_command(server, options))))
    assert "-c" not in argv
    assert argv[argv.index("--service") + 1] == "/run/walvault/restore.sock"
    assert argv[argv.index("-U") + 1] == "walvault"
    assert argv[argv.index("--spool-dir") + 1] == "/var/tmp/walrestore-postgres"
    assert argv[-4:] == ["local", "pg", "%f", "%p"]


def test_conf_quote_reads_back_exactly() -> None:
    for text in (HOSTILE, "a'b", "back\\slash", "two\nlines\r", "", "''"):
        assert guc_unquote(conf_quote(text)) == text


def test_shell_arg_doubles_percent_signs() -> None:
    assert shell_arg("/a%p b") == "'/a%%p b'"
    assert postgres_substitutes(shell_arg("/a%f"), "X", "Y") == "/a%f"


def test_a_backup_of_a_standby_does_not_stay_a_standby(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "standby.signal").write_text("")
    (data / "postgresql.auto.conf").write_text(
        "primary_conninfo = 'host=old password=x'\nprimary_slot_name='s'\nwork_mem = 4MB\n"
    )
    (data / "postgresql.conf").write_text("primary_conninfo 'host=other'\n")
    echoed: list[str] = []
    _end_standby(str(data), echoed.append)
    assert not (data / "standby.signal").exists()
    auto = (data / "postgresql.auto.conf").read_text().splitlines()
    assert auto == [
        f"{MARK}primary_conninfo = 'host=old password=x'",
        f"{MARK}primary_slot_name='s'",
        "work_mem = 4MB",
    ]
    assert (data / "postgresql.conf").read_text() == f"{MARK}primary_conninfo 'host=other'\n"
    assert (data / "postgresql.auto.conf.origin").exists()
    assert "standby.signal" in echoed[0]


@pytest.mark.parametrize("inside", ["home", "home/pg/base/x", "home/pg/wals", "up"])
def test_walvault_directories_are_refused(tmp_path: Path, inside: str) -> None:
    home = tmp_path / "home"
    protected = (str(home), str(home / "pg" / "wals"))
    path = str(tmp_path) if inside == "up" else str(tmp_path / inside)
    with pytest.raises(WalvaultError, match="overlaps walvault's own directory"):
        check_not_walvault(path, protected, "destination")
    check_not_walvault(str(tmp_path / "elsewhere"), protected, "destination")
    os.makedirs(home, exist_ok=True)
