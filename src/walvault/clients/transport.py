"""Where walvault-wal-restore gets WAL from: walvault on this host (in-process) or over ssh.

Both sources answer with restore_command exit codes (clients/common.py): 0 written, 1 only
when the archive itself answered "no such file", 200 for everything else -- could not ask
(ssh, a command that does not run, configuration), unreadable or wrong content, a
destination that cannot be written -- so PostgreSQL stops rather than ending recovery early.
Through a command or ssh, exit 1 counts as "not found" only together with get-wal's own
"... not found in server ..." line: sudo, ssh or a broken installation also exit 1.  Errors
are printed as one ``ERROR:`` line on stderr, which PostgreSQL copies into its log.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

from walvault.clients.common import (
    ABORT,
    LOCAL_HOST,
    NOT_FOUND,
    NOT_FOUND_MESSAGE,
    OK,
    SSH_FAILED,
    chooses_own_master,
    error,
    master_options,
    quote,
    source_label,
    ssh_argv,
    stop_master,
    warning,
)
from walvault.errors import WalvaultError

if TYPE_CHECKING:
    import _socket
    from collections.abc import Callable
    from typing import IO, Protocol

    from walvault.clients.streamsession import StreamSessions
    from walvault.config import ServerConfig

    class Source(Protocol):
        """A place WAL is fetched from."""

        label: str

        def test(self, server: str) -> int:
            """Check the server can be used (prints the get-wal --test answer)."""
            ...

        def fetch(self, server: str, name: str, dest: str, *, partial: bool) -> int:
            """Write ``name`` to ``dest``; return a restore_command exit code."""
            ...


class DestinationError(WalvaultError):
    """WAL_DEST cannot be written (barman-wal-restore exits 3, which would end recovery)."""

    exit_code = ABORT


def open_destination(dest: str) -> int:
    """Open (create or truncate) ``dest`` for writing; DestinationError if impossible."""
    try:
        return os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        message = f"Cannot open '{dest}' (WAL_DEST) for writing: {exc.strerror}"
        raise DestinationError(message) from None


def discard(dest: str) -> None:
    """Remove a destination left incomplete by a failure."""
    with contextlib.suppress(OSError):
        os.unlink(dest)


def segment_problem(dest: str, name: str) -> str | None:
    """Why the fetched copy of segment ``name`` at ``dest`` is unusable (short, no valid
    header, a header for another segment or timeline), or None."""
    from walvault.wal.pagecheck import (
        LONG_HEADER_SIZE,
        header_problems,
        unpack_long_header,
        whole_segment_problem,
    )

    with open(dest, "rb") as handle:
        head = handle.read(LONG_HEADER_SIZE)
        problem = whole_segment_problem(head, os.fstat(handle.fileno()).st_size)
    if problem is not None:
        return problem
    return "; ".join(header_problems(unpack_long_header(head), name)) or None


class LocalSource:
    """walvault on this host, called in-process: no ssh, no new interpreter."""

    label = LOCAL_HOST

    def __init__(self, config: str | None) -> None:
        self.config = config
        self._servers: dict[str, ServerConfig] = {}

    def server(self, name: str) -> ServerConfig:
        """The server's configuration, loaded once (conninfo parsing skipped: not needed)."""
        if name not in self._servers:
            from walvault.config import find_config_file, load_config
            from walvault.errors import ServerError

            path = os.path.abspath(find_config_file(self.config))
            servers = load_config(path, check_conninfo=False).servers
            server = servers.get(name)
            if server is None:
                raise ServerError(f"unknown server '{name}' in '{path}'")
            if server.disabled:
                raise ServerError(f"server '{name}' is disabled: " + "; ".join(server.messages))
            self._servers[name] = server
        return self._servers[name]

    def test(self, server: str) -> int:
        try:
            self.server(server)
        except WalvaultError as exc:
            error(exc.message)
            return ABORT
        print(f"Ready to retrieve WAL files from the server {server}", flush=True)
        return OK

    def fetch(self, server: str, name: str, dest: str, *, partial: bool) -> int:
        opened: list[int] = []

        def destination() -> int:
            opened.append(open_destination(dest))
            return opened[0]

        code = ABORT  # also when interrupted: no half-written WAL_DEST is left
        try:
            code = self._fetch_into(server, name, destination, partial=partial, shown=dest)
        finally:
            if opened:
                os.close(opened[0])
                if code != OK:
                    discard(dest)
        return code

    def fetch_fd(self, server: str, name: str, fd: int, *, partial: bool) -> int:
        """Write ``name`` into the open descriptor ``fd`` (the restore service's case: the
        client opened WAL_DEST and passed it); the caller discards it on failure."""
        return self._fetch_into(server, name, lambda: fd, partial=partial, shown="WAL_DEST")

    def _fetch_into(
        self, server: str, name: str, destination: Callable[[], int], *, partial: bool, shown: str
    ) -> int:
        """The one local fetch: the archive's verified read path into ``destination()``
        (called once the file is found, so nothing is created for a missing one)."""
        from walvault.archive import retrieve

        try:
            config = self.server(server)
            with retrieve.open_wal(config, name, partial=partial, warn=warning) as found:
                retrieve.send_fd(found, destination())
        except retrieve.WalNotFound as exc:
            if name.endswith(".history"):
                # PostgreSQL probes the next timeline's history file at the end of every
                # recovery (and at every start with recovery_target_timeline = latest):
                # its absence is the normal answer, not an error for its log
                print(
                    f"{exc.message} (the newest timeline's history is the last one)",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                error(exc.message)
            return NOT_FOUND
        except WalvaultError as exc:
            error(exc.message)
            return ABORT
        except OSError as exc:
            error(f"cannot write '{shown}': {exc.strerror}")
            return ABORT
        return OK


class ServiceSource:
    """walvault's restore service on this host (``--service SOCKET``): the two-user model.

    PostgreSQL's OS user cannot read walvault's archive (0700 directories, 0600 files) nor
    its configuration.  The client opens WAL_DEST itself and passes the open descriptor over
    the service's Unix socket; the service, run by walvault's user, checks who asks
    (``SO_PEERCRED`` against ``restore_users``), reads the archive through the verified read
    path and writes into the descriptor (:mod:`walvault.restore_service`).  The client checks
    in turn that the socket is served by the walvault user (``-U``, default ``walvault``): a
    socket left or planted by anyone else is never asked.
    """

    label = LOCAL_HOST

    def __init__(self, socket_path: str, walvault_user: str) -> None:
        self.socket_path = socket_path
        self.walvault_user = walvault_user

    def test(self, server: str) -> int:
        from walvault.restore_service.wire import test_request

        code = self._ask(test_request(server), None)
        if code == OK:
            print(f"Ready to retrieve WAL files from the server {server}", flush=True)
        return code

    def fetch(self, server: str, name: str, dest: str, *, partial: bool) -> int:
        from walvault.restore_service.wire import fetch_request

        try:
            fd = open_destination(dest)
        except DestinationError as exc:
            error(exc.message)
            return exc.exit_code
        code = ABORT
        try:
            code = self._ask(fetch_request(server, name, partial=partial), fd)
        finally:
            os.close(fd)
            if code != OK:
                discard(dest)
        if code == OK and _is_segment(name):
            problem = segment_problem(dest, name)
            if problem is not None:
                error(f"received an unusable copy of '{name}': {problem}")
                discard(dest)
                return ABORT
        return code

    def answers(self) -> bool:
        """Whether a service of the walvault user listens at the socket now (no request)."""
        import _socket

        client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            _connect(client, self.socket_path)
        except OSError:
            return False
        finally:
            client.close()
        return True

    def _expected_uid(self) -> int | None:
        import pwd

        try:
            return pwd.getpwnam(self.walvault_user).pw_uid
        except KeyError:
            error(f"walvault user '{self.walvault_user}' (-U) does not exist on this system")
            return None

    def _ask(self, request: bytes, fd: int | None) -> int:
        """Send ``request`` (with ``fd``), relay the ``LOG`` lines, return the ``EXIT`` code."""
        import _socket
        import struct

        expected = self._expected_uid()
        if expected is None:
            return ABORT
        client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            try:
                _connect(client, self.socket_path)
            except OSError as exc:
                error(
                    f"no restore service answers at '{self.socket_path}' ({exc.strerror}): "
                    "start it as the walvault user (systemctl start walvault-restore.socket, "
                    "or 'walvault restore-service')"
                )
                return ABORT
            creds = client.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != expected:
                error(
                    f"'{self.socket_path}' is served by uid {uid}, not by the walvault user "
                    f"'{self.walvault_user}' (uid {expected}): refusing to use it"
                )
                return ABORT
            if fd is None:
                client.sendall(request)
            else:
                rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", fd))]
                client.sendmsg([request], rights)
            return _read_answer(client, self.socket_path)
        except OSError as exc:
            error(f"the restore service at '{self.socket_path}' failed: {exc.strerror or exc}")
            return ABORT
        finally:
            client.close()


def _connect(client: _socket.socket, path: str) -> None:
    """Connect by the socket's name from inside its directory (a Unix socket path is limited
    to ~107 bytes; the directory's may be longer)."""
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(os.path.dirname(path) or ".")
        client.connect(os.path.basename(path))
    finally:
        os.fchdir(here)
        os.close(here)


def _read_answer(client: _socket.socket, where: str) -> int:
    """Relay ``LOG`` lines to stderr (PostgreSQL's log); the ``EXIT`` code, or ABORT when the
    service closed the connection without one."""
    pending = b""
    while True:
        data = client.recv(65536)
        if not data:
            error(f"the restore service at '{where}' closed the connection without answering")
            return ABORT
        pending += data
        while b"\n" in pending:
            raw, pending = pending.split(b"\n", 1)
            line = raw.decode("utf-8", "replace")
            if line.startswith("LOG "):
                print(line[4:], file=sys.stderr, flush=True)
            elif line.startswith("EXIT ") and line[5:].isdigit():
                return int(line[5:])


class CommandSource:
    """``walvault [-c CONFIG] get-wal ...`` run as a command on this host (no shell).

    For local restores where PostgreSQL's OS user cannot read the archive itself, e.g.
    ``--walvault-command 'sudo -n -u walvault /opt/walvault/bin/walvault'``.
    """

    kind = "Local"
    program = "walvault"

    def __init__(
        self,
        *,
        config: str | None = None,
        walvault_command: str | None = None,
        compression: str | None = None,
    ) -> None:
        self.config = config
        self.walvault_command = walvault_command or "walvault"
        self.compression = compression
        self.label = LOCAL_HOST

    def walvault_argv(self, *get_wal_args: str) -> list[str]:
        """``<walvault command> [-c CONFIG] get-wal ARGS``."""
        import shlex

        argv = shlex.split(self.walvault_command)
        if self.config:
            argv += ["-c", self.config]
        return [*argv, "get-wal", *get_wal_args]

    def command(self, *get_wal_args: str) -> list[str]:
        """The argv to run."""
        return self.walvault_argv(*get_wal_args)

    def _result(self, code: int, said_not_found: bool) -> int:
        """restore_command's status from the command's: 1 only with get-wal's own answer."""
        if code == OK:
            return OK
        if code == NOT_FOUND and said_not_found:
            return NOT_FOUND
        error(f"{self.kind} 'walvault get-wal' command has failed (exit status {code})")
        return ABORT

    def test(self, server: str) -> int:
        import subprocess

        try:
            code = subprocess.run(
                self.command("--test", server, "DUMMY"), stdin=subprocess.DEVNULL
            ).returncode
        except OSError as exc:
            error(f"cannot run {self.program}: {exc.strerror}")
            return ABORT
        return self._result(code, False)

    def fetch(self, server: str, name: str, dest: str, *, partial: bool) -> int:
        import subprocess

        args = ["--partial"] if partial else []
        if self.compression:
            args.append(f"--{self.compression}")
        cmd = self.command(*args, server, name)
        try:
            fd = open_destination(dest)
        except DestinationError as exc:
            error(exc.message)
            return exc.exit_code
        said: list[bool] = [False]
        try:
            if self.compression:
                code = _run_decompressing(cmd, self.compression, fd, said)
            else:
                with subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.PIPE
                ) as proc:
                    assert proc.stderr is not None
                    said[0] = _relay_stderr(proc.stderr)
                code = proc.returncode
        except OSError as exc:
            error(f"cannot run {self.program}: {exc.strerror}")
            code = -1
        except WalvaultError as exc:
            error(exc.message)
            code = -1
        finally:
            os.close(fd)
        result = self._result(code, said[0])
        problem = segment_problem(dest, name) if result == OK and _is_segment(name) else None
        if problem is not None:
            error(f"received an unusable copy of '{name}': {problem}")
            result = ABORT
        if result != OK:
            discard(dest)
        return result


class SshSource(CommandSource):
    """``ssh [-p PORT] -q -T USER@HOST walvault [-c CONFIG] get-wal ...`` (a remote shell)."""

    kind = "Remote"
    program = "ssh"

    def __init__(
        self,
        host: str,
        *,
        user: str,
        port: str | None = None,
        config: str | None = None,
        ssh_command: str = "ssh",
        walvault_command: str | None = None,
        compression: str | None = None,
    ) -> None:
        super().__init__(config=config, walvault_command=walvault_command, compression=compression)
        self.host, self.user, self.port = host, user, port
        self.ssh_command = ssh_command
        self.label = source_label(host, user, port)

    control_path: str | None = None

    def share_connection(self, control_path: str) -> bool:
        """Make every fetch go through one OpenSSH master connection at ``control_path``
        (the restore agent does, for the whole recovery); False when the ssh command already
        chooses its own ControlPath/ControlMaster (the user's choice wins)."""
        if chooses_own_master(self.ssh_command):
            return False
        self.control_path = control_path
        return True

    def _ssh(self) -> list[str]:
        import shlex

        ssh = shlex.split(self.ssh_command)
        if self.control_path is not None:
            ssh += master_options(self.control_path)
        return ssh

    def command(self, *get_wal_args: str) -> list[str]:
        """The ssh argv; everything after the destination is one remote shell command.

        The walvault command is passed as written (it may hold options, ``sudo ...``);
        every other word is quoted for the remote shell.
        """
        words = [quote(arg) for arg in self.walvault_argv(*get_wal_args)[self._skip() :]]
        remote = [self.walvault_command, *words]
        return ssh_argv(self._ssh(), self.user, self.host, self.port, remote)

    def close(self) -> None:
        """End the stream sessions, then the shared master connection, if this source
        started sharing one."""
        if self._streams is not None:
            self._streams.close()
        if self.control_path is not None:
            stop_master(self._ssh(), self.user, self.host, self.port)

    _streams: StreamSessions | None = None

    def stream(self) -> None:
        """Fetch through long-lived ``stream-wal`` sessions (the restore agent does: one
        remote process per fetching thread for the whole recovery); a remote end that does
        not speak it (Barman, an older walvault) makes :meth:`fetch` run get-wal per file."""
        if not self.compression:
            from walvault.clients.streamsession import StreamSessions

            self._streams = StreamSessions(lambda server: self.command_for_stream(server))

    def command_for_stream(self, server: str) -> list[str]:
        words = [quote(arg) for arg in self.walvault_argv()[self._skip() : -1]]
        remote = [self.walvault_command, *words, "stream-wal", quote(server)]
        return ssh_argv(self._ssh(), self.user, self.host, self.port, remote)

    def fetch(self, server: str, name: str, dest: str, *, partial: bool) -> int:
        if self._streams is not None:
            code = self._streams.fetch(server, name, dest, partial=partial)
            if code is not None:
                return code
        return super().fetch(server, name, dest, partial=partial)

    def _skip(self) -> int:
        """How many words of :meth:`walvault_argv` are the walvault command itself."""
        import shlex

        return len(shlex.split(self.walvault_command))

    def _result(self, code: int, said_not_found: bool) -> int:
        if code == SSH_FAILED:
            error("Connection problem with ssh")
            return ABORT
        return super()._result(code, said_not_found)


def _is_segment(name: str) -> bool:
    from walvault.wal.names import is_segment

    return is_segment(name)


def _relay_stderr(stream: IO[bytes]) -> bool:
    """Copy the command's stderr to ours (PostgreSQL's log) line by line; True when one of
    the lines is get-wal's "not found" answer."""
    said = False
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        said = said or (line.startswith("ERROR: WAL file") and NOT_FOUND_MESSAGE in line)
        print(line, file=sys.stderr, flush=True)
    return said


def _run_decompressing(cmd: list[str], algorithm: str, fd: int, said: list[bool]) -> int:
    """Run ``cmd`` and decompress its stdout into ``fd`` as it arrives (deprecated -z/-j)."""
    import subprocess
    import threading

    from walvault.compression import CompressionError, iter_decompressed

    with (
        subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as proc,
        open(fd, "wb", closefd=False) as out,
    ):
        assert proc.stdout is not None and proc.stderr is not None
        errors = proc.stderr

        def relay() -> None:
            said[0] = _relay_stderr(errors)

        relay_thread = threading.Thread(target=relay, daemon=True)
        relay_thread.start()
        try:
            for piece in iter_decompressed(proc.stdout, algorithm):
                out.write(piece)
        except CompressionError as exc:
            proc.kill()
            proc.wait()
            relay_thread.join()
            if proc.returncode not in (0, -9):
                return proc.returncode
            raise WalvaultError(f"cannot decompress what get-wal sent: {exc}") from None
        proc.wait()
        relay_thread.join()
    return proc.returncode
