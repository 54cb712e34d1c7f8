"""walvault-wal-restore: argument parsing, exit codes, local mode and the ssh transport."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakewal import (
    MIB,
    archive_path,
    fake_segment,
    python_stdout,
    restore_in_a_fresh_interpreter,
    write_config,
)
from walvault.clients import walrestore
from walvault.clients.transport import LocalSource, SshSource
from walvault.config import load_config

NAME = "000000010000000000000005"
BIN = Path(sys.executable).parent


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    return write_config(tmp_path / "home")


def archive(conf: Path, name: str = NAME, data: bytes | None = None) -> bytes:
    server = load_config(str(conf)).servers["pg"]
    data = fake_segment(name) if data is None else data
    archive_path(server, name).write_bytes(data)
    return data


def run(*args: str) -> int:
    """The client in this process, without the restore agent (the agent's own tests are
    tests/unit/clients/test_clients_agent.py: same contract, real processes)."""
    return walrestore.main(["--no-agent", *args])


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "argv",
    [
        ["local", "pg", NAME, "pg_wal/RECOVERYXLOG"],
        ["-P", "-c", "/etc/w.conf", "local", "pg", NAME, "x"],
        ["-U", "barman", "--port", "2222", "-p", "4", "--spool-dir=/s", "h", "pg", NAME, "x"],
        ["-p4", "-s", "3", "-z", "--test", "h", "pg", NAME, "x"],
        ["h", "-j", "pg", "--ssh-command", "ssh -i k", NAME, "x", "--partial"],
        ["--config=/c", "--sleep=1", "--parallel=2", "-Ubob", "h", "pg", NAME, "x"],
    ],
)
def test_fast_parse_agrees_with_argparse(argv: list[str]) -> None:
    fast = walrestore.fast_parse(argv)
    assert fast is not None
    assert vars(fast) == vars(walrestore.build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["-h"],
        ["--version"],
        ["-Pt", "h", "pg", NAME, "x"],
        ["--part", "h", "pg", NAME, "x"],
        ["-p", "x", "h", "pg", NAME, "x"],
        ["-c"],
        ["h", "pg", NAME],
        ["h", "pg", NAME, "x", "y"],
        ["--partial=1", "h", "pg", NAME, "x"],
        ["-c", "-P", "h", "pg", NAME, "x"],
        ["--", "h", "pg", NAME, "x"],
    ],
)
def test_fast_parse_leaves_the_unusual_to_argparse(argv: list[str]) -> None:
    assert walrestore.fast_parse(argv) is None


OPTION_TOKENS = st.sampled_from(
    ["-P", "--partial", "-t", "-z", "-j", "-c", "--config", "-p", "-s", "-U", "--port", "--x"]
)
WORDS = st.sampled_from(["h", "pg", NAME, "x", "3", "-", "a b", "=", "-1"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(OPTION_TOKENS, WORDS), max_size=10))
def test_fast_parse_never_disagrees(argv: list[str]) -> None:
    fast = walrestore.fast_parse(argv)
    if fast is None:
        return
    try:
        slow = walrestore.build_parser().parse_args(argv)
    except SystemExit:
        raise AssertionError(f"fast parse accepted what argparse rejects: {argv}") from None
    assert vars(fast) == vars(slow)


# ------------------------------------------------------------------ local mode


def test_local_restore_and_exit_codes(
    conf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = archive(conf)
    dest = tmp_path / "RECOVERYXLOG"
    assert run("-c", str(conf), "local", "pg", NAME, str(dest)) == 0
    assert dest.read_bytes() == data
    missing = "000000010000000000000006"
    assert run("-c", str(conf), "local", "pg", missing, str(dest)) == 1
    assert f"ERROR: WAL file '{missing}' not found in server 'pg'" in capsys.readouterr().err
    # everything else stops PostgreSQL (200) instead of ending its recovery (1..125)
    assert run("-c", str(conf), "local", "pg", "../../etc/passwd", str(dest)) == 200
    assert "is not a valid WAL file name" in capsys.readouterr().err
    assert run("-c", str(conf), "local", "pg", NAME, str(tmp_path)) == 200
    assert "WAL_DEST cannot be a directory" in capsys.readouterr().err
    assert run("-c", str(conf), "local", "pg", NAME, str(tmp_path / "no" / "x")) == 200
    assert "(WAL_DEST) for writing" in capsys.readouterr().err
    assert run("-c", str(conf), "local", "nosuch", NAME, str(dest)) == 200
    assert "unknown server 'nosuch'" in capsys.readouterr().err
    assert run("-c", str(tmp_path / "missing.conf"), "local", "pg", NAME, str(dest)) == 200
    assert run("-t", "-c", str(conf), "local", "pg", "DUMMY", "DUMMY") == 0
    assert "Ready to retrieve WAL files from the server pg" in capsys.readouterr().out


def test_partial_needs_the_option(conf: Path, tmp_path: Path) -> None:
    server = load_config(str(conf)).servers["pg"]
    data = fake_segment(NAME)
    Path(server.streaming_wals_directory).mkdir(parents=True)
    (Path(server.streaming_wals_directory) / f"{NAME}.partial").write_bytes(data)
    dest = tmp_path / "RECOVERYXLOG"
    assert run("-c", str(conf), "local", "pg", NAME, str(dest)) == 1
    assert run("-P", "-c", str(conf), "local", "pg", NAME, str(dest)) == 0
    assert dest.read_bytes() == data


def test_a_usage_error_stops_postgresql(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        run("--bogus-option", "local", "pg", NAME, str(tmp_path / "d"))
    assert exit_.value.code == 200


def test_an_unreadable_archived_segment_stops_postgresql(conf: Path, tmp_path: Path) -> None:
    """The issue's trial: a segment in the middle made unreadable must not end recovery."""
    archive(conf)
    server = load_config(str(conf)).servers["pg"]
    archive_path(server, NAME).chmod(0)
    dest = tmp_path / "RECOVERYXLOG"
    try:
        assert run("-c", str(conf), "local", "pg", NAME, str(dest)) == 200
    finally:
        archive_path(server, NAME).chmod(0o600)
    assert not dest.exists()


def test_a_standby_retries_instead_of_stopping(
    conf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """standby.signal in the working directory (PostgreSQL's data directory): an abort
    becomes "not available yet" -- a standby retries and never promotes by itself."""
    datadir = tmp_path / "pgdata"
    datadir.mkdir()
    monkeypatch.chdir(datadir)
    dest = tmp_path / "RECOVERYXLOG"
    assert run("-c", str(conf), "local", "nosuch", NAME, str(dest)) == 200
    (datadir / "standby.signal").write_text("")
    assert run("-c", str(conf), "local", "nosuch", NAME, str(dest)) == 1
    archive(conf)
    assert run("-c", str(conf), "local", "pg", NAME, str(dest)) == 0


def test_unexpected_errors_exit_126_after_sleep(
    conf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(walrestore.time, "sleep", slept.append)

    def boom(*args: Any, **kw: Any) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(LocalSource, "fetch", boom)
    assert run("-s", "7", "-c", str(conf), "local", "pg", NAME, str(tmp_path / "d")) == 200
    assert slept == [7]


def test_a_failed_send_leaves_no_destination(conf: Path, tmp_path: Path) -> None:
    from walvault import compression as comp

    archive(conf, data=comp.compress_bytes("gzip", fake_segment(NAME))[:5000])
    dest = tmp_path / "RECOVERYXLOG"
    assert run("-c", str(conf), "local", "pg", NAME, str(dest)) == 200
    assert not dest.exists()


def test_client_start_up_stays_lean() -> None:
    """The client must not import psycopg, and not the configuration before it needs it."""
    code = (
        "import sys; from walvault.clients import walrestore, spool, agentclient, transport;"
        "bad = [m for m in ('psycopg', 'walvault.config', 'walvault.archive.retrieve',"
        " 'argparse', 'logging', 'subprocess') if m in sys.modules]; print(bad)"
    )
    assert python_stdout(code).strip() == "[]"


def test_a_local_fetch_never_imports_psycopg(conf: Path, tmp_path: Path) -> None:
    """The in-process fetch (no agent) loads the configuration, the storage and archive code
    and the codec -- the import budget is the thin client's (test_clients_agent.py) -- but
    never psycopg, argparse or subprocess."""
    from walvault.compression import compress_bytes

    data = fake_segment(NAME)
    archive(conf, data=compress_bytes("zstd", data))
    dest = tmp_path / "dest"
    argv = ["--no-agent", "-c", str(conf), "local", "pg", NAME, str(dest)]
    status, modules = restore_in_a_fresh_interpreter(argv)
    assert status == 0 and dest.read_bytes() == data
    assert not modules & {"psycopg", "argparse", "subprocess"}


# ------------------------------------------------------------------ ssh transport


def fake_ssh(tmp_path: Path, exit_code: int | None = None) -> str:
    """An ``ssh`` that runs the remote command with a local shell (quoting is real)."""
    script = tmp_path / "fake-ssh"
    body = f"exit {exit_code}\n" if exit_code is not None else 'exec sh -c "$last"\n'
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > "{tmp_path}/ssh-args"\n'
        f'export PATH="{BIN}:$PATH"\n'
        "for last; do :; done\n" + body
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_ssh_command_quotes_for_the_remote_shell() -> None:
    source = SshSource("bkp", user="barman", port="2222", config="/etc/my conf", compression=None)
    assert source.command("--partial", "pg", NAME) == [
        "ssh",
        "-p",
        "2222",
        "-q",
        "-T",
        "barman@bkp",
        f"walvault '-c' '/etc/my conf' 'get-wal' '--partial' 'pg' '{NAME}'",
    ]
    tricky = SshSource("h", user="u", config="/tmp/it's $(rm -rf x)", ssh_command="ssh -o A=b")
    cmd = tricky.command("pg", NAME)
    assert cmd[:3] == ["ssh", "-o", "A=b"]
    assert "'/tmp/it'\"'\"'s $(rm -rf x)'" in cmd[-1]


def test_ssh_transport_end_to_end(conf: Path, tmp_path: Path) -> None:
    data = archive(conf)
    ssh = fake_ssh(tmp_path)
    dest = tmp_path / "RECOVERYXLOG"
    base = ["--ssh-command", ssh, "-c", str(conf), "-U", "walvault", "backup-host", "pg"]
    assert run(*base, NAME, str(dest)) == 0
    assert dest.read_bytes() == data
    assert "walvault@backup-host" in (tmp_path / "ssh-args").read_text()
    assert run(*base, "000000010000000000000009", str(dest)) == 1
    assert not dest.exists()
    assert run("-z", *base, NAME, str(dest)) == 0  # deprecated, still works
    assert dest.read_bytes() == data
    assert run("-t", *base, "DUMMY", "DUMMY") == 0


@pytest.mark.parametrize("remote", [255, 1, 3, 137, 2, 127])
def test_ssh_failures_stop_postgresql(tmp_path: Path, remote: int) -> None:
    """Only get-wal's own "not found" answer may end a recovery: a bare exit 1 (sudo refusing,
    a broken remote installation) is a failure to ask like any other."""
    ssh = fake_ssh(tmp_path, exit_code=remote)
    dest = tmp_path / "RECOVERYXLOG"
    assert run("--ssh-command", ssh, "h", "pg", NAME, str(dest)) == 200
    assert not dest.exists()


def test_not_found_over_ssh_needs_get_wals_answer(tmp_path: Path) -> None:
    script = tmp_path / "answering-ssh"
    script.write_text(
        "#!/bin/sh\necho \"ERROR: WAL file '$5' not found in server 'pg'\" >&2\nexit 1\n"
    )
    script.chmod(0o755)
    dest = tmp_path / "RECOVERYXLOG"
    assert run("--ssh-command", str(script), "h", "pg", NAME, str(dest)) == 1


def test_ssh_short_answer_is_rejected(tmp_path: Path) -> None:
    script = tmp_path / "short-ssh"
    segment = tmp_path / "seg"
    segment.write_bytes(fake_segment(NAME)[: MIB // 2])
    script.write_text(f"#!/bin/sh\ncat {segment}\n")
    script.chmod(0o755)
    dest = tmp_path / "RECOVERYXLOG"
    assert run("--ssh-command", str(script), "h", "pg", NAME, str(dest)) == 200
    assert not dest.exists()


def test_local_walvault_command_runs_get_wal_as_a_process(conf: Path, tmp_path: Path) -> None:
    data = archive(conf)
    dest = tmp_path / "RECOVERYXLOG"
    command = ["--walvault-command", f"{BIN}/walvault", "-c", str(conf), "local", "pg"]
    assert run(*command, NAME, str(dest)) == 0
    assert dest.read_bytes() == data
    assert run(*command, "000000010000000000000009", str(dest)) == 1
    assert run("-t", *command, "DUMMY", "DUMMY") == 0
    missing = ["--walvault-command", str(tmp_path / "nope"), "local", "pg", NAME, str(dest)]
    assert run(*missing) == 200
    assert not dest.exists()


def test_ssh_with_an_explicit_walvault_command(conf: Path, tmp_path: Path) -> None:
    data = archive(conf)
    source = SshSource("h", user="u", walvault_command=f"env X=1 {BIN}/walvault")
    assert source.command("pg", NAME)[-1] == f"env X=1 {BIN}/walvault 'get-wal' 'pg' '{NAME}'"
    dest = tmp_path / "RECOVERYXLOG"
    ssh = fake_ssh(tmp_path)
    cmd = ["--ssh-command", ssh, "--walvault-command", f"{BIN}/walvault", "-c", str(conf)]
    assert run(*cmd, "h", "pg", NAME, str(dest)) == 0
    assert dest.read_bytes() == data


@pytest.mark.parametrize("client", ["walvault-wal-restore", "walvault-wal-archive"])
def test_a_broken_installation_does_not_exit_1(client: str, tmp_path: Path) -> None:
    """Without walvault importable (-S: no site-packages), the script must not exit 1, which
    restore_command would take as "no such WAL" and so end the recovery: the restore client
    exits 200 (PostgreSQL stops), the archive client 2 (PostgreSQL retries)."""
    script = Path(__file__).resolve().parents[3] / "bin" / client
    run = subprocess.run(
        [sys.executable, "-S", "-I", str(script), "local", "pg", NAME, str(tmp_path / "x")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == (200 if client == "walvault-wal-restore" else 2), run.stderr
    assert run.stderr.startswith("ERROR: cannot load walvault: ModuleNotFoundError")
