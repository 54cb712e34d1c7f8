"""The restore service: walvault's OS user serves WAL to PostgreSQL's OS user, without sudo.

Why a service.  In the two-user model PostgreSQL runs as ``postgres`` and walvault as
``walvault``; the archive is private to walvault (directories 0700, files 0600) and so is its
configuration (it may hold passwords and cloud credentials).  PostgreSQL's restore_command
still has to read that archive.  The alternatives and why they were not taken:

* *group read access* to the archive: every writer would need group modes (archive-wal,
  put-wal, the catalogue, the digests...), and pg_receivewal creates ``streaming/`` files 0600
  whatever we do (it copies the *source* cluster's ``data_directory_mode``), so the streamed
  ``.partial`` -- the last seconds of WAL, RPO 0 -- would stay unreadable; PostgreSQL's user
  would also need the configuration and the bucket's credentials;
* *sudo* (``--walvault-command 'sudo -u walvault ...'``): a sudoers rule per host, a new
  interpreter per segment, and a rule too wide is a root-equivalent mistake;
* *ssh to walvault@localhost* (works, and is what walvault-wal-restore does across hosts):
  an sshd, keys to manage, two processes and a handshake per segment.

The service is one process of walvault's user (started by systemd's socket activation --
contrib/walvault-restore.socket -- or ``walvault restore-service`` under any supervisor) that
listens on a Unix socket (``restore_socket``, default ``/run/walvault/restore.sock``).  The
restore client (``walvault-wal-restore --service SOCKET local SERVER %f %p``, which
``recover --recovery-owner`` writes) opens WAL_DEST itself and sends the open descriptor with
its request (:mod:`walvault.restore_service.wire`).  The service:

* asks the kernel who is calling (``SO_PEERCRED``) and answers only walvault's own user and
  the users in ``restore_users`` (the socket file is 0666: the credential check is the
  authorisation, not the file mode);
* validates the request strictly (server and WAL names), accepts exactly one descriptor,
  which must be a regular file open for writing, and never opens a path given by the
  client -- so PostgreSQL's user gets WAL and nothing else, and keeps its own files;
* reads through the archive's one verified read path (``LocalSource.fetch_fd``: digests,
  header against the name, system identifier, exact size) into the descriptor, and answers
  with restore_command's exit code (0, 1 only for "not in the archive", 200 otherwise) and the
  lines for PostgreSQL's log;
* serves requests in parallel (the client's restore agent prefetches with ``-p N``), up to
  ``MAX_CLIENTS`` at once; a client that does not send its request within ``REQUEST_TIMEOUT``
  is dropped;
* logs every refusal and failure (and, at DEBUG, every fetch) with the caller's user name;
* on SIGHUP re-reads the configuration and reopens ``log_file``; on SIGTERM/SIGINT stops;
  with ``--idle-exit N`` it stops after N seconds without a request (socket activation starts
  it again on the next connection).

The client checks the other side too: the socket must be served by walvault's user (``-U``),
so a stale or planted socket is never asked.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import io
import logging
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from walvault.clients.common import ABORT, OK
from walvault.errors import WalvaultError
from walvault.restore_service import wire

if TYPE_CHECKING:
    from walvault.clients.transport import LocalSource

log = logging.getLogger("walvault")

MAX_CLIENTS = 32
REQUEST_TIMEOUT = 10.0
#: systemd's socket activation: the first passed descriptor (sd_listen_fds(3))
SD_LISTEN_FDS_START = 3


class Peer(NamedTuple):
    """Who is on the other end of a connection (``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int


def peer_of(conn: socket.socket) -> Peer:
    """The connecting process's credentials, as the kernel recorded them at ``connect``."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return Peer(*struct.unpack("3i", creds))


def user_name(uid: int) -> str:
    """The name of ``uid`` (or the number)."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def allowed_uids(names: tuple[str, ...], warn: Callable[[str], None]) -> dict[int, str]:
    """``{uid: name}`` of this process's user and of ``names`` (``restore_users``); an unknown
    name is a warning (the service still answers the others)."""
    import pwd

    allowed = {os.geteuid(): user_name(os.geteuid())}
    for name in names:
        try:
            allowed[pwd.getpwnam(name).pw_uid] = name
        except KeyError:
            warn(f"restore_users: OS user '{name}' does not exist: it is not answered")
    return allowed


class _Lines(io.TextIOBase):
    """stderr while the service runs: what a request's fetch prints (its ``ERROR:`` and
    ``WARNING:`` lines) goes back to that request's client; anything else to real stderr."""

    def __init__(self, fallback: io.TextIOBase) -> None:
        self.fallback = fallback
        self._local = threading.local()

    def collect(self) -> list[str]:
        lines: list[str] = []
        self._local.lines = lines
        return lines

    def stop(self) -> None:
        self._local.lines = None

    def write(self, text: str) -> int:
        lines = getattr(self._local, "lines", None)
        if lines is None:
            return self.fallback.write(text)
        lines.extend(line for line in text.splitlines() if line)
        return len(text)

    def flush(self) -> None:
        self.fallback.flush()


def check_destination_fd(fd: int) -> str | None:
    """Why a passed descriptor is no WAL_DEST (not a regular file, not open for writing)."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        return "the descriptor passed is not a regular file"
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
        return "the descriptor passed is not open for writing"
    return None


def _received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % fds.itemsize
            fds.frombytes(data[:usable])
    return list(fds)


class RestoreService:
    """One running service (see the module docstring).

    ``source``: makes the :class:`LocalSource` requests are served from (called again on
    SIGHUP, to re-read the configuration); ``allowed``: ``{uid: name}`` of the users
    answered; ``idle_exit``: seconds without a request before stopping (None: never).
    """

    def __init__(
        self,
        source: Callable[[], LocalSource],
        allowed: Mapping[int, str],
        *,
        idle_exit: float | None = None,
    ) -> None:
        self._make_source = source
        self.source = source()
        self.allowed = dict(allowed)
        self.idle_exit = idle_exit
        self.stopping = False
        self.reload_requested = False
        self.last_activity = time.monotonic()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._active = 0
        self._active_lock = threading.Lock()
        self._lines: _Lines | None = None

    # ---------------------------------------------------------------- running

    def run(self, listener: socket.socket) -> int:
        """Accept until stopped (or idle); returns the exit status."""
        self._lines = _Lines(sys.stderr)  # type: ignore[arg-type]
        sys.stderr = self._lines
        listener.settimeout(0.5)
        try:
            while not self.stopping:
                if self.reload_requested:
                    self._reload()
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    if self._idle():
                        log.info("restore-service: idle for %.0f s: stopping", self.idle_exit)
                        break
                    continue
                except InterruptedError:
                    continue
                self._slots.acquire()
                self.last_activity = time.monotonic()
                with self._active_lock:
                    self._active += 1
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        finally:
            sys.stderr = self._lines.fallback
        return 0

    def _idle(self) -> bool:
        if self.idle_exit is None:
            return False
        with self._active_lock:
            busy = self._active > 0
        return not busy and time.monotonic() - self.last_activity > self.idle_exit

    def stop(self, *_: object) -> None:
        """SIGTERM/SIGINT: stop accepting; requests being answered finish (daemon threads
        end with the process)."""
        self.stopping = True

    def request_reload(self, *_: object) -> None:
        """SIGHUP: re-read the configuration before the next connection, reopen the log."""
        self.reload_requested = True
        from walvault.cli.context import log_files

        for handler in log_files():
            handler.request_reopen()

    def _reload(self) -> None:
        self.reload_requested = False
        try:
            self.source = self._make_source()
        except WalvaultError as exc:
            log.error("restore-service: configuration not reloaded: %s", exc.message)
            return
        log.info("restore-service: configuration reloaded (SIGHUP)")

    # ---------------------------------------------------------------- one request

    def _handle(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._answer(conn)
        except Exception as exc:  # one connection must never take the service down
            log.error("restore-service: unexpected %s: %s", type(exc).__name__, exc)
        finally:
            with self._active_lock:
                self._active -= 1
            self.last_activity = time.monotonic()
            self._slots.release()

    def _answer(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            peer = peer_of(conn)
            conn.settimeout(REQUEST_TIMEOUT)
            if peer.uid not in self.allowed:  # answered at once: a stranger holds no slot
                lines, code = self.refuse(peer)
                with contextlib.suppress(OSError):
                    conn.sendall(wire.reply(lines, code))
                return
            line, fds = self._read_request(conn)
            if not line and not fds:  # a probe ("does a service answer?"): nothing to say
                return
            lines, code = self.serve(peer, line, fds)
            conn.settimeout(REQUEST_TIMEOUT)
            with contextlib.suppress(OSError):
                conn.sendall(wire.reply(lines, code))
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    @staticmethod
    def _read_request(conn: socket.socket) -> tuple[bytes, list[int]]:
        """The request line and the descriptors sent with it (closed by the caller)."""
        data = b""
        fds: list[int] = []
        space = socket.CMSG_SPACE(4 * array.array("i").itemsize)
        try:
            while b"\n" not in data and len(data) <= wire.MAX_REQUEST:
                chunk, ancillary, flags, _ = conn.recvmsg(wire.MAX_REQUEST + 1, space)
                fds += _received_fds(ancillary)
                if flags & socket.MSG_CTRUNC:
                    fds.append(-1)  # more descriptors than allowed were sent
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, OSError):
            pass
        return data, fds

    def serve(self, peer: Peer, line: bytes, fds: list[int]) -> tuple[list[str], int]:
        """The answer (lines for the client, exit code) to one request; logs it."""
        who = f"{self.allowed.get(peer.uid) or user_name(peer.uid)} (uid {peer.uid})"
        if peer.uid not in self.allowed:
            return self.refuse(peer)
        try:
            verb, server, name, partial = wire.parse_request(line)
        except wire.RequestError as exc:
            log.warning("restore-service: malformed request from %s: %s", who, exc)
            return [f"ERROR: restore service: malformed request: {exc}"], ABORT
        if verb == wire.TEST:
            if fds:
                return ["ERROR: restore service: TEST takes no descriptor"], ABORT
            return self._run(who, f"TEST {server}", lambda: self._test(server))
        if len(fds) != 1 or fds[0] < 0:
            count = len(fds)
            return [f"ERROR: restore service: FETCH takes one descriptor, not {count}"], ABORT
        problem = check_destination_fd(fds[0])
        if problem is not None:
            return [f"ERROR: restore service: {problem}"], ABORT
        assert name is not None
        fd = fds[0]
        return self._run(
            who,
            f"{name} of {server}",
            lambda: self.source.fetch_fd(server, name, fd, partial=partial),
        )

    def refuse(self, peer: Peer) -> tuple[list[str], int]:
        """The answer to a user who is neither walvault_user nor in restore_users."""
        who = f"{user_name(peer.uid)} (uid {peer.uid})"
        message = (
            f"restore service: user {who} may not restore WAL from walvault: add it to "
            "restore_users in walvault's configuration"
        )
        log.warning("restore-service: refused %s (pid %d): not in restore_users", who, peer.pid)
        return [f"ERROR: {message}"], ABORT

    def _test(self, server: str) -> int:
        try:
            self.source.server(server)
        except WalvaultError as exc:
            print(f"ERROR: {exc.message}", file=sys.stderr)
            return ABORT
        return OK

    def _run(self, who: str, what: str, work: Callable[[], int]) -> tuple[list[str], int]:
        started = time.monotonic()
        lines = self._lines.collect() if self._lines is not None else []
        try:
            code = work()
        except Exception as exc:
            lines.append(f"ERROR: restore service: unexpected {type(exc).__name__}: {exc}")
            code = ABORT
        finally:
            if self._lines is not None:
                self._lines.stop()
        took = time.monotonic() - started
        level = logging.DEBUG if code == OK else logging.INFO if code == 1 else logging.WARNING
        detail = f": {lines[-1]}" if lines and code != OK else ""
        log.log(
            level, "restore-service: %s for %s: exit %d in %.2f s%s", what, who, code, took, detail
        )
        return lines, code


# -------------------------------------------------------------------- the socket


def systemd_listener() -> socket.socket | None:
    """The socket systemd passed (socket activation), or None; the variables are cleared so
    no child inherits them."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    if count < 1:
        return None
    if count > 1:
        raise WalvaultError("systemd passed more than one socket: give the service one")
    listener = socket.socket(fileno=SD_LISTEN_FDS_START)
    if listener.family != socket.AF_UNIX or listener.type != socket.SOCK_STREAM:
        raise WalvaultError("the socket systemd passed is not a Unix stream socket")
    return listener


def listen(path: str) -> socket.socket:
    """Bind the service's socket at ``path`` (0666: see the module docstring), in a directory
    created 0755 when missing; a stale socket of a dead service is replaced, a live one or
    anything that is not a socket is an error."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o755, exist_ok=True)
        os.chmod(directory, 0o755)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None:
        if not stat.S_ISSOCK(info.st_mode):
            raise WalvaultError(f"'{path}' exists and is not a socket: refusing to replace it")
        if _answers(path):
            raise WalvaultError(f"a restore service already answers at '{path}'")
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    old = os.umask(0o111)
    try:
        os.chdir(directory)  # bound by its name: a Unix socket path has ~107 bytes at most
        listener.bind(os.path.basename(path))
    finally:
        os.umask(old)
        os.fchdir(here)
        os.close(here)
    listener.listen(64)
    return listener


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(os.path.dirname(path))
        probe.connect(os.path.basename(path))
    except OSError:
        return False
    finally:
        os.fchdir(here)
        os.close(here)
        probe.close()
    return True


def install_signals(service: RestoreService) -> None:
    """SIGTERM/SIGINT stop, SIGHUP reloads (main thread only)."""
    signal.signal(signal.SIGTERM, service.stop)
    signal.signal(signal.SIGINT, service.stop)
    signal.signal(signal.SIGHUP, service.request_reload)
