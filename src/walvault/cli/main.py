"""The ``walvault`` command: global options, sub-command dispatch, errors as one line."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from walvault import __version__
from walvault.cli.context import Context
from walvault.errors import WalvaultError, describe_os_error

if TYPE_CHECKING:
    from types import ModuleType

    from walvault.config import Config

log = logging.getLogger("walvault")
log.addHandler(logging.NullHandler())  # nothing reaches stderr before log_file is known
log.propagate = False

#: Modules (in walvault.cli) that add sub-commands; each has ``register(subparsers)``.
COMMAND_MODULES = (
    "servers",
    "receive_wal",
    "processes",
    "archive_wal",
    "get_wal",
    "stream_wal",
    "put_wal",
    "cron",
    "serve",
    "check",
    "status",
    "replication_status",
    "switch_wal",
    "backup",
    "recover",
    "quickstart",
    "verify",
    "restore_service",
    "keep",
    "list_files",
    "diagnose",
    "docgen",
)
#: Each sub-command (and alias) -> the module registering it.  Running a command imports
#: only its module: every command module imports what its command needs, and importing
#: them all cost get-wal (once per WAL segment over ssh) and archive-wal ~25 ms.
#: tests/unit/cli/test_cli_main.py checks this table against what the modules register.
COMMANDS: dict[str, str] = {
    "list-servers": "servers",
    "show-servers": "servers",
    "receive-wal": "receive_wal",
    "list-processes": "processes",
    "terminate-process": "processes",
    "archive-wal": "archive_wal",
    "rebuild-xlogdb": "archive_wal",
    "get-wal": "get_wal",
    "stream-wal": "stream_wal",
    "put-wal": "put_wal",
    "cron": "cron",
    "serve": "serve",
    "check": "check",
    "status": "status",
    "replication-status": "replication_status",
    "switch-wal": "switch_wal",
    "switch-xlog": "switch_wal",
    "backup": "backup",
    "list-backups": "backup",
    "list-backup": "backup",
    "show-backup": "backup",
    "delete": "backup",
    "check-backup": "backup",
    "recover": "recover",
    "restore": "recover",
    "quickstart": "quickstart",
    "verify": "verify",
    "verify-backup": "verify",
    "restore-service": "restore_service",
    "keep": "keep",
    "list-files": "list_files",
    "diagnose": "diagnose",
    "show-server": "servers",
    "completion": "docgen",
    "man-page": "docgen",
}
#: Commands run once per WAL file (by walvault-wal-archive and barman-wal-restore over ssh):
#: nothing is added to their start-up that they do not need.
PER_FILE_COMMANDS = frozenset({"get-wal", "put-wal"})
#: Global options that take a value (the next argument unless written ``--opt=value``).
_VALUED_GLOBALS = ("-c", "--config", "-f", "--format")
_FLAG_GLOBALS = ("-q", "--quiet", "-d", "--debug", "-v", "--version")


def command_modules(argv: Sequence[str]) -> list[ModuleType]:
    """The command modules to register: only the named command's, or all of them when the
    command line names none (help, errors and their listing of every command)."""
    wanted: tuple[str, ...] = COMMAND_MODULES
    items = iter(argv)
    for arg in items:
        if arg in _VALUED_GLOBALS:
            next(items, None)
            continue
        if arg in _FLAG_GLOBALS or arg.startswith(("--config=", "--format=")):
            continue
        if arg.startswith("-"):  # help, or a form argparse may read differently (-qc X)
            break
        if arg in COMMANDS:
            wanted = (COMMANDS[arg],)
        break
    return [importlib.import_module(f"walvault.cli.{name}") for name in wanted]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: with the sub-command ``argv`` names, or with every one."""
    parser = argparse.ArgumentParser(
        prog="walvault",
        description="Continuous WAL streaming, archiving and point-in-time recovery "
        "for PostgreSQL (Barman-compatible).",
    )
    parser.add_argument("-v", "--version", action="version", version=f"walvault {__version__}")
    parser.add_argument(
        "-c", "--config", metavar="FILE", help="configuration file (default: see README)"
    )
    parser.add_argument(
        "-f", "--format", choices=("console", "json"), default="console", help="output format"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only what was asked")
    parser.add_argument(
        "-d", "--debug", action="store_true", help="show tracebacks for unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules([] if argv is None else argv):
        module.register(sub)
    return parser


def _owned_directories(config: Config, args: argparse.Namespace) -> list[tuple[str, int]]:
    """What root creates for ``walvault_user`` when it is missing (see walvault.privileges),
    with its mode: the home, the lock directory, and what the command adds
    (``owned_directories``)."""
    extra = getattr(args, "owned_directories", None)
    own = [(config.walvault_home, 0o700), (config.lock_directory, 0o700)]
    return own + (list(extra(config, args)) if extra else [])


def _start(ctx: Context, args: argparse.Namespace) -> int:
    """Run the command as the right OS user (see walvault.privileges).

    The configuration is read first, without logging: a root command with ``walvault_user``
    set creates what is missing of walvault's directories for that user, becomes that user,
    and only then opens the log and takes locks.  A command with a ``privileged`` step (recover
    --recovery-owner) gets it, as root, around its work, which runs as ``walvault_user`` in a
    child process.
    """
    from walvault import privileges

    prepare = getattr(args, "prepare", None)
    if prepare is not None:  # checks that must come before the configuration is read
        prepare(ctx, args)
    if not getattr(args, "needs_config", True):
        return int(args.func(ctx, args))
    config = ctx.load_config()
    switch = privileges.must_switch(config.walvault_user)
    if switch is not None:
        privileges.prepare_directories(
            switch, directories=_owned_directories(config, args), log_file=config.log_file
        )
    privileged = getattr(args, "privileged", None)
    if privileged is not None and os.geteuid() == 0:

        def work() -> int:
            if switch is None:
                return int(args.func(ctx, args))
            return privileges.run_dropped(
                switch, lambda: _guarded(ctx, args, lambda: int(args.func(ctx, args)))
            )

        return int(privileged(ctx, args, switch, work))
    if switch is not None:
        privileges.drop_to(switch)
    return int(args.func(ctx, args))


def _exit_code(args: argparse.Namespace, exc: WalvaultError) -> int:
    """The exit code of an expected failure.

    A command may remap the generic code 1 (``failure_exit_code``): for get-wal, 1 means "no
    such WAL", which PostgreSQL takes as the end of recovery, so a configuration or server
    problem must not look like it (it exits 200, which makes PostgreSQL stop instead).
    """
    remap = getattr(args, "failure_exit_code", None)
    if remap is not None and exc.exit_code == 1 and not getattr(exc, "means_not_found", False):
        return int(remap)
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns the exit code (see README, "Exit codes")."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    if not args.command:
        parser.print_help()
        return 1
    if args.command not in PER_FILE_COMMANDS:
        interruptible()
    ctx = Context(
        config_option=args.config, output_format=args.format, quiet=args.quiet, debug=args.debug
    )
    return _guarded(ctx, args, lambda: _start(ctx, args))


def interruptible() -> None:
    """Let SIGINT interrupt even when it was inherited as ignored.

    A shell script's background job (``walvault receive-wal pg &``) starts with SIGINT
    ignored, and Python then leaves it so: ``terminate-process`` (SIGINT, as Barman's) could
    not stop it, nor could cron's or serve's children that it starts.
    """
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _guarded(ctx: Context, args: argparse.Namespace, body: Callable[[], int]) -> int:
    """Run ``body``; every failure becomes one ``ERROR:`` line and its exit code."""
    try:
        return body()
    except WalvaultError as exc:
        ctx.error(exc.message)
        return _exit_code(args, exc)
    except KeyboardInterrupt:
        print("ERROR: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return int(getattr(args, "failure_exit_code", None) or 1)
    except OSError as exc:  # a full disk, a permission: one line naming the path and errno
        text = describe_os_error(exc)
        log.error("%s", text)
        if args.debug:
            traceback.print_exc()
        print(f"ERROR: {text}", file=sys.stderr)
        remap = getattr(args, "failure_exit_code", None)
        return int(remap) if remap is not None else 1
    except Exception as exc:
        log.exception("unexpected error")
        if args.debug:
            traceback.print_exc()
        else:
            print(
                f"ERROR: unexpected {type(exc).__name__}: {exc} (run with -d for details)",
                file=sys.stderr,
            )
        return int(getattr(args, "failure_exit_code", None) or 1)


def run() -> None:
    """Console-script wrapper."""
    sys.exit(main())


if __name__ == "__main__":
    run()
