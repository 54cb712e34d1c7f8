"""walvault-wal-archive: PostgreSQL's archive_command, sending a WAL file to ``walvault put-wal``.

    archive_command = 'walvault-wal-archive -U walvault backuphost pg %p'
    archive_command = 'walvault-wal-archive -c /etc/walvault.conf local pg %p'

The payload is Barman's put-wal tar stream: the WAL file under its base name (compressed
first with ``-z/-j/--xz/--zstd/--lz4``), then ``SHA256SUMS`` (``MD5SUMS`` with ``--md5``)
over the bytes actually sent.  WALVAULT_HOST ``local`` pipes it into ``walvault put-wal``
on this host (no ssh); any other value runs ``walvault put-wal`` there through
``ssh -q -T``.  ``--walvault-command`` names the walvault program on the receiving side.

Exit codes, for PostgreSQL: 0 only once put-wal has made the file durable (or found an
identical copy already safe); put-wal's own failure code (1) passed through; 2 when the
file could not be sent (WAL_PATH a directory or unreadable, a program not runnable, a
receiver killed, interrupted); 3 a connection problem (ssh's 255).  Never a status above
125: PostgreSQL's archiver would treat it as fatal.

Start-up is kept lean (one call per segment): no configuration is read, psycopg is never
imported, and the compression codecs only when asked for.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, BinaryIO

from walvault import __version__
from walvault.clients.common import LOCAL_HOST, SSH_FAILED, error, quote, ssh_argv

if TYPE_CHECKING:
    import argparse
    import subprocess

DEFAULT_USER = "walvault"
OK, FAILED, CONNECTION = 0, 2, 3
#: a compressed payload larger than this is spooled to a temporary file, not kept in memory
MEMORY_SPOOL_MAX = 64 << 20
_CHUNK = 1 << 20
_BLOCK = 512  # tar block
_COMPRESSIONS = (
    ("-z", "--gzip", "gzip"),
    ("-j", "--bzip2", "bzip2"),
    (None, "--xz", "xz"),
    (None, "--zstd", "zstd"),
    (None, "--lz4", "lz4"),
)


def build_parser() -> argparse.ArgumentParser:
    """The command line of barman-wal-archive (less -p), plus --ssh-command/--walvault-command."""
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
    p.add_argument("walvault_host", metavar="WALVAULT_HOST", help="ssh host, or 'local'")
    p.add_argument("server_name", metavar="SERVER_NAME")
    p.add_argument("wal_path", metavar="WAL_PATH", nargs="?", help="%%p (not needed with -t)")
    return p


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
    """Map the receiver's exit status to archive_command's."""
    if code == OK:
        return OK
    local = args.walvault_host == LOCAL_HOST
    if code == SSH_FAILED and not local:
        error("Connection problem with ssh")
        return CONNECTION
    if code < 0:
        error(f"'walvault put-wal' was killed by signal {-code}")
        return FAILED
    error(f"{'Local' if local else 'Remote'} 'walvault put-wal' command has failed!")
    return code if code <= 125 else FAILED


def _payload(args: argparse.Namespace, handle: BinaryIO) -> tuple[BinaryIO, int]:
    """The bytes to send for the open WAL file and their size (compressed if asked)."""
    if args.compression is None:
        return handle, os.fstat(handle.fileno()).st_size
    import io

    from walvault.archive.compression import compress_stream

    size = os.fstat(handle.fileno()).st_size
    if size <= MEMORY_SPOOL_MAX:
        spool: BinaryIO = io.BytesIO()
    else:
        import tempfile

        spool = tempfile.TemporaryFile()  # noqa: SIM115 (returned open)
    written = compress_stream(args.compression, args.compression_level, handle, spool)
    spool.seek(0)
    return spool, written


def _header(name: str, size: int, mtime: float) -> bytes:
    """The PAX header block(s) of a regular member (tarfile's encoder)."""
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o600
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return bytes(-size % _BLOCK)


def _write_stream(args: argparse.Namespace, handle: BinaryIO, out: IO[bytes]) -> None:
    """Write the tar stream (WAL file, its checksum file, end of archive) into ``out``.

    Assembled here around tarfile's header encoder, so the data goes from the file to the
    pipe in large pieces, hashed on the way (tarfile's stream writer copies 16 KiB at a
    time through a buffer it keeps re-slicing).
    """
    import hashlib
    import time

    name = os.path.basename(args.wal_path)
    mtime = os.fstat(handle.fileno()).st_mtime
    payload, size = _payload(args, handle)
    digest = hashlib.new("md5" if args.md5 else "sha256", usedforsecurity=False)
    out.write(_header(name, size, mtime))
    left = size
    while left:
        chunk = payload.read(min(_CHUNK, left))
        if not chunk:
            raise OSError(f"'{args.wal_path}' became shorter while it was being sent")
        digest.update(chunk)
        out.write(chunk)
        left -= len(chunk)
    sums = f"{digest.hexdigest()} *{name}\n".encode()
    sums_name = "MD5SUMS" if args.md5 else "SHA256SUMS"
    out.write(_padding(size) + _header(sums_name, len(sums), time.time()) + sums)
    out.write(_padding(len(sums)) + bytes(2 * _BLOCK))


def _send(args: argparse.Namespace, handle: BinaryIO, proc: subprocess.Popen[bytes]) -> int:
    """Stream into the receiver; return its exit status (or FAILED for a local problem)."""
    import contextlib

    assert proc.stdin is not None
    problem: str | None = None
    try:
        _write_stream(args, handle, proc.stdin)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the receiver stopped reading: its exit status says why
    except (OSError, ValueError) as exc:  # a local read or compression failure
        problem = f"cannot send '{args.wal_path}': {exc}"
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # on a local failure, the receiver sees a truncated stream
    code = proc.wait()
    if problem is not None:
        error(problem)
        return FAILED
    return result(args, code)


def archive(args: argparse.Namespace) -> int:
    """Send WAL_PATH (or, with -t, ask put-wal whether it would accept files)."""
    import subprocess

    command = build_command(args)
    env = _child_env(args)
    if args.test:
        try:
            code = subprocess.run(command, stdin=subprocess.DEVNULL, env=env).returncode
        except OSError as exc:
            error(f"cannot run '{command[0]}': {exc.strerror}")
            return FAILED
        return result(args, code)
    if os.path.isdir(args.wal_path):
        error(f"WAL_PATH cannot be a directory: {args.wal_path}")
        return FAILED
    try:
        handle = open(args.wal_path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        error(f"Cannot read '{args.wal_path}' (WAL_PATH): {exc.strerror}")
        return FAILED
    with handle:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, env=env)
        except OSError as exc:
            error(f"cannot run '{command[0]}': {exc.strerror}")
            return FAILED
        return _send(args, handle, proc)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code for PostgreSQL."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.wal_path is None and not args.test:
        parser.error("the following arguments are required: WAL_PATH")
    if args.compression is not None and args.compression_level is not None:
        from walvault.archive.compression import resolve_level

        try:
            resolve_level(args.compression, args.compression_level)
        except ValueError as exc:
            parser.error(str(exc))
    try:
        return archive(args)
    except KeyboardInterrupt:
        return FAILED
    except Exception as exc:  # PostgreSQL must see 2, never a traceback's status
        error(f"unexpected {type(exc).__name__}: {exc}")
        return FAILED


if __name__ == "__main__":
    sys.exit(main())
