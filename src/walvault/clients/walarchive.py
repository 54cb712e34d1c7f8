"""walvault-wal-archive: PostgreSQL's archive_command, sending a WAL file to ``walvault put-wal``.

    archive_command = 'walvault-wal-archive -U walvault backuphost pg %p'
    archive_command = 'walvault-wal-archive -c /etc/walvault.conf local pg %p'
    archive_command = 'walvault-wal-archive -p 4 --spool-dir /var/lib/pgsql/spool bk pg %p'

The payload is Barman's put-wal tar stream (:mod:`walvault.clients.walstream`).
WALVAULT_HOST ``local`` pipes it into ``walvault put-wal`` on this host (no ssh); any other
value runs ``walvault put-wal`` there through ``ssh -q -T``.  ``--walvault-command`` names the
walvault program on the receiving side.

With ``--spool-dir`` (or ``-p N``) the call is a thin client of the archive agent
(:mod:`walvault.clients.archagent`), which ships ahead and in parallel: the call exits 0 at
once when the spool holds an acknowledgement matching the file as it is now (size and
SHA-256, :mod:`walvault.clients.acks`); else it asks the agent (starting it when none runs)
to ship the file and waits for its answer; else -- no agent can run -- it ships the file
itself, as without ``--spool-dir``.

Exit codes, for PostgreSQL: 0 only once put-wal has made the file durable (or found an
identical copy already safe); put-wal's own failure code (1) passed through; 2 when the
file could not be sent (WAL_PATH a directory or unreadable, a program not runnable, a
receiver killed, interrupted); 3 a connection problem (ssh's 255).  Never a status above
125: PostgreSQL's archiver would treat it as fatal.

Start-up is kept lean (one call per segment): no configuration is read, psycopg is never
imported, and the compression codecs only when asked for.  A call answered from the spool
or by the agent imports only built-in modules, hashlib and this package's import-free
modules: no argparse, subprocess, threading, socket or typing.
"""

from __future__ import annotations

import os
import sys

from walvault import __version__
from walvault.clients.common import (
    LOCAL_HOST,
    SEND_FAILED,
    error,
    quote,
    source_label,
    ssh_argv,
    warning,
)

# ``typing`` costs ~5 ms (it imports re): mypy reads this name as typing.TYPE_CHECKING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from walvault.clients.archagent import Sender
    from walvault.clients.fastargs import OptionTable
    from walvault.clients.walstream import Options

DEFAULT_USER = "walvault"
DEFAULT_SPOOL_DIR = "/var/tmp/walarchive"
OK = 0
FAILED = SEND_FAILED
_COMPRESSIONS = (
    ("-z", "--gzip", "gzip"),
    ("-j", "--bzip2", "bzip2"),
    (None, "--xz", "xz"),
    (None, "--zstd", "zstd"),
    (None, "--lz4", "lz4"),
)


def build_parser() -> argparse.ArgumentParser:
    """The command line of barman-wal-archive, plus --ssh-command/--walvault-command and
    --spool-dir; a usage error exits 2."""
    import argparse

    p = argparse.ArgumentParser(
        prog="walvault-wal-archive",
        description="Send a WAL file to walvault put-wal for PostgreSQL's archive_command. "
        "WALVAULT_HOST 'local' runs walvault on this host without ssh.",
    )
    p.add_argument("-V", "--version", action="version", version=f"walvault {__version__}")
    p.add_argument("-U", "--user", default=DEFAULT_USER, help=f"ssh user (default: {DEFAULT_USER})")
    p.add_argument("--port", help="ssh port")
    p.add_argument("-c", "--config", metavar="CONFIG", help="walvault configuration file")
    p.add_argument("-t", "--test", action="store_true", help="test the connection and exit")
    p.add_argument("--md5", action="store_true", help="send MD5SUMS instead of SHA256SUMS")
    group = p.add_mutually_exclusive_group()
    for short, long, algorithm in _COMPRESSIONS:
        flags = [f for f in (short, long) if f]
        group.add_argument(
            *flags,
            dest="compression",
            action="store_const",
            const=algorithm,
            help=f"compress with {algorithm} before sending",
        )
    p.add_argument(
        "--compression-level",
        metavar="LEVEL",
        help="low, medium (default), high or the codec's integer level",
    )
    p.add_argument(
        "--ssh-command", default="ssh", metavar="CMD", help="ssh program and options (default: ssh)"
    )
    p.add_argument(
        "--walvault-command",
        metavar="CMD",
        help="the walvault program on the receiving host (default: 'walvault'; "
        "locally, the walvault installed beside this program when there is one)",
    )
    p.add_argument(
        "--spool-dir",
        metavar="DIR",
        help="ship through the archive agent, whose spool is in DIR (on this host)",
    )
    p.add_argument(
        "-p",
        "--parallel",
        type=int,
        default=0,
        metavar="N",
        help="the archive agent runs up to N put-wal at a time (implies the agent; "
        f"default spool: {DEFAULT_SPOOL_DIR})",
    )
    p.add_argument("walvault_host", metavar="WALVAULT_HOST", help="ssh host, or 'local'")
    p.add_argument("server_name", metavar="SERVER_NAME")
    p.add_argument("wal_path", metavar="WAL_PATH", nargs="?", help="%%p (not needed with -t)")
    return p


_FAST_OPTIONS: OptionTable = {
    "-U": ("user", str, None),
    "--user": ("user", str, None),
    "--port": ("port", str, None),
    "-c": ("config", str, None),
    "--config": ("config", str, None),
    "-t": ("test", None, True),
    "--test": ("test", None, True),
    "--md5": ("md5", None, True),
    "--compression-level": ("compression_level", str, None),
    "--ssh-command": ("ssh_command", str, None),
    "--walvault-command": ("walvault_command", str, None),
    "--spool-dir": ("spool_dir", str, None),
    "-p": ("parallel", int, None),
    "--parallel": ("parallel", int, None),
}
for _short, _long, _algorithm in _COMPRESSIONS:
    for _flag in (_short, _long):
        if _flag:
            _FAST_OPTIONS[_flag] = ("compression", None, _algorithm)
_DEFAULTS: dict[str, object] = {
    "user": DEFAULT_USER,
    "port": None,
    "config": None,
    "test": False,
    "md5": False,
    "compression": None,
    "compression_level": None,
    "ssh_command": "ssh",
    "walvault_command": None,
    "spool_dir": None,
    "parallel": 0,
}
_POSITIONALS = ("walvault_host", "server_name", "wal_path")


def fast_parse(argv: Sequence[str]) -> argparse.Namespace | None:
    """The common command lines parsed without argparse (None: let argparse parse it)."""
    from walvault.clients.fastargs import fast_parse as parse

    return parse(argv, _FAST_OPTIONS, _DEFAULTS, _POSITIONALS, once=frozenset({"compression"}))


def _split(command: str) -> list[str]:
    """A command string as argv (shlex only when it holds quotes or escapes)."""
    if any(c in command for c in "'\"\\"):
        import shlex

        return shlex.split(command)
    return command.split()


def _local_walvault() -> str:
    """The ``walvault`` beside this program (PostgreSQL's PATH rarely has a venv's bin)."""
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "walvault")
    return beside if os.access(beside, os.X_OK) else "walvault"


def build_command(args: argparse.Namespace) -> list[str]:
    """``walvault [-c CONFIG] put-wal SERVER [--test]``, locally or through ssh."""
    put_wal = ["-c", args.config] if args.config else []
    put_wal += ["put-wal", args.server_name]
    if args.test:
        put_wal.append("--test")
    if args.walvault_host == LOCAL_HOST:
        program = _split(args.walvault_command) if args.walvault_command else [_local_walvault()]
        return [*program, *put_wal]
    remote = [args.walvault_command or "walvault", *(quote(arg) for arg in put_wal)]
    return ssh_argv(_split(args.ssh_command), args.user, args.walvault_host, args.port, remote)


def _child_env(args: argparse.Namespace) -> dict[str, str] | None:
    """Locally, an inherited SSH_CONNECTION would make put-wal name a bogus SSH host."""
    if args.walvault_host != LOCAL_HOST or "SSH_CONNECTION" not in os.environ:
        return None
    return {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}


def result(args: argparse.Namespace, code: int) -> int:
    """Map the receiver's exit status to archive_command's (printing why it failed)."""
    from walvault.clients.walstream import exit_status

    status, message = exit_status(code, args.walvault_host == LOCAL_HOST)
    if message is not None:
        error(message)
    return status


def _options(args: argparse.Namespace) -> Options:
    from walvault.clients.walstream import Options

    return Options(args.compression, args.compression_level, args.md5)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ship_here(args: argparse.Namespace) -> int:
    """Send WAL_PATH from this process (no agent): archive_command's status."""
    from walvault.clients.walstream import ship

    local = args.walvault_host == LOCAL_HOST
    command = build_command(args)
    return ship(
        _options(args), command, [args.wal_path], _say, local=local, env=_child_env(args)
    ).code


def make_sender(args: argparse.Namespace) -> Sender:
    """What the archive agent needs to run put-wal as this call would (built here: the
    agent works from "/", and a relative path in the command line must not move)."""
    from walvault.clients.archagent import Sender

    ssh = None if args.walvault_host == LOCAL_HOST else _split(args.ssh_command)
    return Sender(
        build_command(args),
        _options(args),
        local=ssh is None,
        env=_child_env(args),
        cwd=os.getcwd(),
        ssh=ssh,
        destination=(args.user, args.walvault_host, args.port),
    )


def _spool_path(args: argparse.Namespace, pg_wal: str) -> str | None:
    """The agent's spool directory for this (server, source, configuration, pg_wal)."""
    from walvault.clients.spool import SpoolError, private_dir, spool_key

    label = source_label(args.walvault_host, args.user, args.port)
    key = spool_key(args.server_name, label, args.config, pg_wal, role="archive@")
    try:
        return private_dir(args.spool_dir or DEFAULT_SPOOL_DIR, key)
    except (SpoolError, OSError) as exc:
        warning(f"archive agent disabled: {exc}")
        return None


def through_agent(args: argparse.Namespace) -> int | None:
    """archive_command's status from the spool or the archive agent, or None when no agent
    could answer (the caller then ships the file itself)."""
    from walvault.clients import acks
    from walvault.clients.agentclient import ask_starting, plain_name

    wal_path = os.path.abspath(args.wal_path)  # the agent does not share our directory
    name = os.path.basename(wal_path)
    if not plain_name(name) or name.startswith("."):
        return None
    pg_wal = os.path.dirname(wal_path)
    spool_path = _spool_path(args, pg_wal)
    if spool_path is None:
        return None
    if acks.take(spool_path, name, wal_path):
        return OK

    def start() -> None:
        from walvault.clients import archagent

        archagent.start(spool_path, make_sender(args), pg_wal, args.parallel)

    code = ask_starting(spool_path, f"ARCHIVE {name} {wal_path}", start)
    if code is None:
        warning("the archive agent did not answer: sending this file in-process")
    elif code > 125:  # never a status PostgreSQL's archiver takes as fatal
        code = FAILED
    return code


def archive(args: argparse.Namespace) -> int:
    """Send WAL_PATH (or, with -t, ask put-wal whether it would accept files)."""
    if args.test:
        import subprocess

        command = build_command(args)
        try:
            code = subprocess.run(
                command, stdin=subprocess.DEVNULL, env=_child_env(args)
            ).returncode
        except OSError as exc:
            error(f"cannot run '{command[0]}': {exc.strerror}")
            return FAILED
        return result(args, code)
    if os.path.isdir(args.wal_path):
        error(f"WAL_PATH cannot be a directory: {args.wal_path}")
        return FAILED
    if args.spool_dir or args.parallel > 0:
        answered = through_agent(args)
        if answered is not None:
            return answered
    return ship_here(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code for PostgreSQL."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = fast_parse(arguments)
    if args is None:
        parser = build_parser()
        args = parser.parse_args(arguments)
        if args.wal_path is None and not args.test:
            parser.error("the following arguments are required: WAL_PATH")
    if args.compression is not None and args.compression_level is not None:
        from walvault.compression import resolve_level

        try:
            resolve_level(args.compression, args.compression_level)
        except ValueError as exc:
            build_parser().error(str(exc))
    try:
        return archive(args)
    except KeyboardInterrupt:
        return FAILED
    except Exception as exc:  # PostgreSQL must see 2, never a traceback's status
        error(f"unexpected {type(exc).__name__}: {exc}")
        return FAILED


if __name__ == "__main__":
    sys.exit(main())
