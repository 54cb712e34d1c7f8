"""The CLI imports only the module of the command it runs, and the table saying which
module that is matches what the modules register."""

from __future__ import annotations

import argparse
import ast
import importlib

import pytest

from fakewal import python_stdout
from walvault.cli import main


def _registered(module_name: str) -> set[str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(f"walvault.cli.{module_name}").register(sub)
    return set(sub.choices)


def test_the_command_table_matches_what_the_modules_register() -> None:
    expected = {command: name for name in main.COMMAND_MODULES for command in _registered(name)}
    assert expected == main.COMMANDS


@pytest.mark.parametrize(
    ("argv", "modules"),
    [
        (["get-wal", "pg", "x"], ["get_wal"]),
        (["-c", "/etc/w.conf", "-q", "archive-wal", "pg"], ["archive_wal"]),
        (["--config=/x", "-f", "json", "list-backup", "pg"], ["backup"]),
        (["-c", "status", "check", "pg"], ["check"]),  # "status" is -c's value here
        (["-h", "get-wal"], list(main.COMMAND_MODULES)),
        (["-qc", "backup", "list-servers"], list(main.COMMAND_MODULES)),  # -qc takes "backup"
        (["--conf", "backup", "check", "pg"], list(main.COMMAND_MODULES)),  # an abbreviation
        (["no-such-command"], list(main.COMMAND_MODULES)),
        ([], list(main.COMMAND_MODULES)),
    ],
)
def test_only_the_named_command_is_registered(argv: list[str], modules: list[str]) -> None:
    got = [m.__name__.rsplit(".", 1)[1] for m in main.command_modules(argv)]
    assert got == modules


def test_an_unknown_command_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main.main(["no-such-command"])
    err = capsys.readouterr().err
    assert "invalid choice: 'no-such-command'" in err
    for command in ("get-wal", "archive-wal", "recover", "switch-xlog"):
        assert command in err


def test_get_wal_does_not_import_the_other_commands() -> None:
    code = (
        "import sys\n"
        "from walvault.cli import main\n"
        "main.main(['-c', '/nonexistent/walvault.conf', 'get-wal', 'pg', "
        "'000000010000000000000001'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('walvault.')))\n"
    )
    loaded = set(ast.literal_eval(python_stdout(code)))
    assert "walvault.cli.get_wal" in loaded
    others = {f"walvault.cli.{name}" for name in main.COMMAND_MODULES} - {"walvault.cli.get_wal"}
    assert not loaded & others
    assert not any(m.startswith(("walvault.postgres", "walvault.backup")) for m in loaded)


def test_sigint_inherited_as_ignored_interrupts_again() -> None:
    """A background job of a shell script starts with SIGINT ignored: terminate-process
    (SIGINT) must still stop walvault's long-running commands."""
    import signal

    from walvault.cli import main as cli

    assert set(cli.COMMANDS) >= cli.PER_FILE_COMMANDS
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        cli.interruptible()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

        def own(signum: int, frame: object) -> None:
            pass

        signal.signal(signal.SIGINT, own)
        cli.interruptible()  # a handler someone installed is left alone
        assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, previous)
