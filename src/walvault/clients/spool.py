"""The spool of walvault-wal-restore: the restore agent's home, segments fetched ahead.

Layout: ``<spool dir>/<server>@<source>/`` (both directories 0700, owned by the user
running the client; a symbolic link or someone else's directory is refused) holding:

* ``<segment>``      a prefetched, complete segment (written as ``.<segment>.*.tmp`` and
  renamed into place once validated);
* ``.state``         ``<last restored segment> <system identifier> <segment size>``,
  rewritten (atomically) by every successful restore: the prefetcher's instructions and
  the reference the spool files are checked against;
* ``.prefetch.lock`` flock-ed by the live restore agent (:mod:`walvault.clients.agent`),
  which writes its PID into it when it starts: the file's mtime is the start of the
  agent's *session*;
* ``agent.sock``     the agent's socket (:mod:`walvault.clients.agentclient`);
* ``agent.log``      the agent's output.

A spool file is served only while an agent holds the lock, only if it was written
during that agent's session (leftovers of earlier sessions are "older copies"), and
only if it is exactly one segment long with a long page header that matches its name
(page address, timeline) and the system identifier in ``.state``, which always comes from
a segment fetched directly from walvault in the current recovery.  Anything else is
deleted and the segment is fetched directly.
"""

from __future__ import annotations

import errno
import os
import stat
import sys

# Only cheap modules here: a restore served from the spool must start in a few ms.
from walvault.clients.agentclient import session_start
from walvault.wal.pagecheck import (
    LONG_HEADER_SIZE,
    header_problems,
    is_segment_name,
    unpack_long_header,
    valid_segment_size,
)

STATE = ".state"
LOCK = ".prefetch.lock"
LOG = "agent.log"
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


class SpoolError(Exception):
    """The spool directory cannot be used safely (prefetching is then skipped)."""


class SpoolState:
    """The last restored segment and the facts every spool file must agree with."""

    __slots__ = ("segment_size", "system_identifier", "wanted")

    def __init__(self, wanted: str, system_identifier: int, segment_size: int) -> None:
        self.wanted = wanted
        self.system_identifier = system_identifier
        self.segment_size = segment_size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpoolState):
            return NotImplemented
        return self.line() == other.line()

    def __hash__(self) -> int:
        return hash(self.line())

    def __repr__(self) -> str:
        return f"SpoolState({self.wanted!r}, {self.system_identifier}, {self.segment_size})"

    def line(self) -> str:
        """The ``.state`` file content."""
        return f"{self.wanted} {self.system_identifier} {self.segment_size}\n"

    @classmethod
    def parse(cls, text: str) -> SpoolState | None:
        """Parse a ``.state`` line (None when it is not one)."""
        parts = text.split()
        if len(parts) != 3 or not is_segment_name(parts[0]):
            return None
        try:
            sysid, size = int(parts[1]), int(parts[2])
        except ValueError:
            return None
        return cls(parts[0], sysid, size) if valid_segment_size(size) else None


def own_dir(path: str) -> None:
    """Create ``path`` (0700) or check an existing one is a real directory of ours, private
    (SpoolError when it cannot be used)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SpoolError(f"cannot create spool directory '{path}': {exc.strerror}") from None
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise SpoolError(f"spool directory '{path}' is a symbolic link: refused")
    if not stat.S_ISDIR(info.st_mode):
        raise SpoolError(f"spool directory '{path}' is not a directory")
    if info.st_uid != os.geteuid():
        raise SpoolError(
            f"spool directory '{path}' belongs to uid {info.st_uid}, not to us "
            f"(uid {os.geteuid()}): refused"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)


def private_dir(root: str, key: str) -> str:
    """``<root>/<key>``, both checked or created with :func:`own_dir`; an absolute path
    (an agent works from "/": a relative path would move)."""
    root = os.path.abspath(root)
    own_dir(root)
    path = os.path.join(root, key)
    own_dir(path)
    return path


def spool_key(
    server: str, source: str, config: str | None = None, *paths: str, role: str = ""
) -> str:
    """The sub-directory name for one (server, source, configuration) triple, reduced to safe
    characters: two walvault configurations with a server of the same name never share an
    agent or a spool (``config`` is named by a CRC of its absolute path, and so is each of
    ``paths``, e.g. the archive agent's pg_wal).  ``role`` prefixes it (``archive@``: an
    archive agent never shares a directory with a restore agent)."""
    raw = f"{role}{server}@{source}"
    if config or paths:
        import zlib

        for path in (config, *paths):
            raw += f"@{zlib.crc32(os.path.abspath(path).encode()):08x}" if path else "@"
    return "".join(c if c in _SAFE else "_" for c in raw).lstrip(".") or "_"


def segment_problem(fd: int, name: str, state: SpoolState) -> str | None:
    """Why the open file ``fd`` is not a valid copy of segment ``name``, or None."""
    size = os.fstat(fd).st_size
    if size != state.segment_size:
        return f"size {size}, expected {state.segment_size}"
    if not is_segment_name(name):
        return f"'{name}' is not a WAL segment name"
    try:
        fields = unpack_long_header(os.pread(fd, LONG_HEADER_SIZE, 0))
    except ValueError as exc:
        return str(exc)
    problems = header_problems(
        fields, name, system_identifier=state.system_identifier, segment_size=state.segment_size
    )
    return "; ".join(problems) or None


def copy_fd_to(fd: int, dest: str) -> None:
    """Copy the whole file ``fd`` into ``dest`` (created or truncated; across filesystems)."""
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            sent = os.sendfile(out, fd, offset, size - offset)
            if sent == 0:
                raise OSError(errno.EIO, "spool file shrank while being copied")
            offset += sent
    finally:
        os.close(out)


class Spool:
    """One (server, source) spool directory."""

    def __init__(self, root: str, key: str) -> None:
        self.path = private_dir(root, key)

    def file(self, name: str) -> str:
        """Where a prefetched segment lives."""
        return os.path.join(self.path, name)

    def read_state(self) -> SpoolState | None:
        """The current ``.state`` (None when missing or unreadable)."""
        try:
            with open(os.path.join(self.path, STATE), encoding="ascii") as handle:
                return SpoolState.parse(handle.read(200))
        except (OSError, UnicodeDecodeError):
            return None

    def write_state(self, state: SpoolState) -> None:
        """Replace ``.state`` atomically (no fsync: the spool is a cache)."""
        final = os.path.join(self.path, STATE)
        tmp = f"{final}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, state.line().encode("ascii"))
        finally:
            os.close(fd)
        os.rename(tmp, final)

    def session_start(self) -> int | None:
        """mtime (ns) of the live prefetcher's lock file, or None when none is running."""
        return session_start(os.path.join(self.path, LOCK))

    def take(self, name: str, dest: str) -> SpoolState | None:
        """Move a valid spooled ``name`` to ``dest``; return the state it was checked against.

        None means "not usable from the spool": absent, no live session, or invalid (then
        the file is deleted and a WARNING says why).
        """
        if not is_segment_name(name):  # never a path: only names of segments are spooled
            return None
        start = self.session_start()
        state = self.read_state() if start is not None else None
        if start is None or state is None:
            return None
        path = self.file(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            problem = segment_problem(fd, name, state)
            if problem is None and os.fstat(fd).st_mtime_ns < start:
                problem = "written before the current prefetch session (an older copy)"
            if problem is not None:
                print(
                    f"WARNING: discarding spooled '{name}': {problem}", file=sys.stderr, flush=True
                )
                self.remove(name)
                return None
            return state if self._deliver(fd, path, dest) else None
        finally:
            os.close(fd)

    def _deliver(self, fd: int, path: str, dest: str) -> bool:
        """Rename the checked file onto ``dest``, or copy it from ``fd`` across filesystems."""
        try:
            os.rename(path, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                return False
            copy_fd_to(fd, dest)
            self.remove(os.path.basename(path))
            return True
        info, moved = os.fstat(fd), os.stat(dest)
        return (info.st_dev, info.st_ino) == (moved.st_dev, moved.st_ino)

    def remove(self, name: str) -> None:
        """Delete a spool entry if it is there."""
        try:  # noqa: SIM105 - contextlib would cost the spool-hit path ~1 ms of imports
            os.unlink(self.file(name))
        except OSError:
            pass

    def record(self, name: str, dest: str) -> SpoolState | None:
        """After a direct fetch of segment ``name`` into ``dest``: its facts as the new state."""
        try:
            with open(dest, "rb") as handle:
                fields = unpack_long_header(handle.read(LONG_HEADER_SIZE))
                size = os.fstat(handle.fileno()).st_size
        except (OSError, ValueError):
            return None
        sysid, seg_size = fields[5], fields[6]
        if size != seg_size:
            return None  # a partial segment tells us nothing about the next ones
        return SpoolState(name, sysid, seg_size)
