"""The ``walvault`` command: global options, sub-command dispatch, errors as one line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from walvault import __version__
from walvault.cli import (
    archive_wal,
    backup,
    check,
    cron,
    get_wal,
    processes,
    put_wal,
    quickstart,
    receive_wal,
    recover,
    replication_status,
    servers,
    status,
    switch_wal,
)
from walvault.cli.context import Context
from walvault.errors import WalvaultError

log = logging.getLogger("walvault")
log.addHandler(logging.NullHandler())  # nothing reaches stderr before log_file is known
log.propagate = False

#: Modules that add sub-commands; each has ``register(subparsers)``.
COMMAND_MODULES = (
    servers,
    receive_wal,
    processes,
    archive_wal,
    get_wal,
    put_wal,
    cron,
    check,
    status,
    replication_status,
    switch_wal,
    backup,
    recover,
    quickstart,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
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
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _drop_privileges(ctx: Context) -> None:
    """Run as ``walvault_user`` when it is set: switch to it from root, refuse otherwise."""
    wanted = ctx.config.walvault_user
    if not wanted:
        return
    import pwd

    try:
        entry = pwd.getpwnam(wanted)
    except KeyError:
        raise WalvaultError(f"walvault_user '{wanted}' does not exist on this system") from None
    if os.geteuid() == entry.pw_uid:
        return
    if os.geteuid() != 0:
        raise WalvaultError(f"please run walvault as the '{wanted}' user (walvault_user)")
    os.initgroups(wanted, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir


def _exit_code(args: argparse.Namespace, exc: WalvaultError) -> int:
    """The exit code of an expected failure.

    A command may remap the generic code 1 (``failure_exit_code``): for get-wal, 1 means "no
    such WAL", which PostgreSQL takes as the end of recovery, so a configuration or server
    problem must not look like it (it exits 2: "could not ask").
    """
    remap = getattr(args, "failure_exit_code", None)
    if remap is not None and exc.exit_code == 1 and not getattr(exc, "means_not_found", False):
        return int(remap)
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns the exit code (see README, "Exit codes")."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    ctx = Context(
        config_option=args.config, output_format=args.format, quiet=args.quiet, debug=args.debug
    )
    try:
        prepare = getattr(args, "prepare", None)
        if prepare is not None:  # checks that must come before the configuration is read
            prepare(ctx, args)
        if getattr(args, "needs_config", True):
            _drop_privileges(ctx)
        code: int = args.func(ctx, args)
        return code
    except WalvaultError as exc:
        ctx.error(exc.message)
        return _exit_code(args, exc)
    except KeyboardInterrupt:
        print("ERROR: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:
        log.exception("unexpected error")
        if args.debug:
            traceback.print_exc()
        else:
            print(
                f"ERROR: unexpected {type(exc).__name__}: {exc} (run with -d for details)",
                file=sys.stderr,
            )
        return 1


def run() -> None:
    """Console-script wrapper."""
    sys.exit(main())


if __name__ == "__main__":
    run()
