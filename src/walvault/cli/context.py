"""What every command receives: global options, the lazily loaded configuration, output."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from typing import TYPE_CHECKING

from walvault.config import Config, ServerConfig, find_config_file, load_config
from walvault.errors import ServerError, WalvaultError

if TYPE_CHECKING:
    from typing import Any, TextIO

log = logging.getLogger("walvault")


class Context:
    """Global options plus the configuration, loaded on first use."""

    def __init__(
        self,
        config_option: str | None = None,
        output_format: str = "console",
        quiet: bool = False,
        debug: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.config_option = config_option
        self.output_format = output_format
        self.quiet = quiet
        self.debug = debug
        #: False for commands that never connect (see ``load_config(check_conninfo=...)``).
        self.check_conninfo = True
        self.out: TextIO = sys.stdout if out is None else out
        self.err: TextIO = sys.stderr if err is None else err
        self._config: Config | None = None
        self._started = False

    def load_config(self) -> Config:
        """The configuration, read once, without starting the log (see :attr:`config`)."""
        if self._config is None:
            path = find_config_file(self.config_option)
            self._config = load_config(os.path.abspath(path), check_conninfo=self.check_conninfo)
        return self._config

    @property
    def config(self) -> Config:
        """The configuration; the log is opened and the warnings printed on first use.

        The CLI reads it with :meth:`load_config` first, to switch to ``walvault_user``
        before anything is logged (the log file must not be created by root).
        """
        config = self.load_config()
        if not self._started:
            self._started = True
            setup_logging(config, self.quiet)
            for warning in config.warnings:
                self.warn(warning)
        return config

    def server(
        self, name: str, *, allow_inactive: bool = True, allow_disabled: bool = False
    ) -> ServerConfig:
        """The named server; a one-line error when unknown, disabled or (optionally) inactive."""
        server = self.config.servers.get(name)
        if server is None:
            known = ", ".join(self.config.servers) or "none configured"
            raise ServerError(f"unknown server '{name}' (configured: {known})")
        if not allow_disabled:
            require_enabled(server)
        if not server.active and not allow_inactive:
            raise ServerError(f"server '{name}' is inactive (active = false)")
        return server

    def servers(self, names: list[str]) -> list[ServerConfig]:
        """Servers named on the command line; ``all`` means every configured server."""
        if names == ["all"] or "all" in names:
            return list(self.config.servers.values())
        return [self.server(name, allow_disabled=True) for name in names]

    def info(self, text: str = "") -> None:
        """A line of normal output (stdout), suppressed by ``-q``."""
        if not self.quiet:
            print(text, file=self.out, flush=True)

    def result(self, text: str = "") -> None:
        """A line that is the command's answer (printed even with ``-q``)."""
        print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        """``WARNING: ...`` on stderr, and in the log."""
        log.warning(text)
        if not self.quiet:
            print(f"WARNING: {text}", file=self.err, flush=True)

    def error(self, text: str) -> None:
        """``ERROR: <text>`` on stderr and in the log, for a failure that does not end the run."""
        log.error("%s", text)
        print(f"ERROR: {text}", file=self.err, flush=True)

    def emit_json(self, data: Any) -> None:
        """Print a JSON document on stdout."""
        print(json.dumps(data, indent=4, sort_keys=True), file=self.out, flush=True)


def require_enabled(server: ServerConfig) -> None:
    """Raise :class:`ServerError` (with the reasons) when ``server`` is disabled."""
    if server.disabled:
        reasons = "; ".join(server.messages)
        raise ServerError(f"server '{server.name}' is disabled: {reasons}")


def seconds_argument(text: str) -> int:
    """argparse type for a timeout: a whole number of seconds, >= 0 (0: no limit)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0 (0 waits without limit)")
    return value


_configured = False


class LogFile(logging.Handler):
    """``log_file``: each record appended with one ``write(2)`` on an ``O_APPEND`` descriptor.

    * A new file is created 0600 (it holds hosts, paths and errors), and given to ``owner``
      when a root process creates it (``walvault_user``); an existing file keeps its mode and
      owner.
    * No buffer: a record is on disk (in the page cache) when ``emit`` returns, or lost as a
      whole; nothing half-written is kept to be glued to the next record later.
    * A write that fails (a full disk, an I/O error) loses that record and never raises or
      prints a traceback (logging's "--- Logging error ---"): one line on stderr says, once
      per process, that the log cannot be written.  If the kernel took only part of a record,
      the next record that fits starts with a newline, so the torn one stays on its own line.
    * Rotation: before each record the path is compared with the open file (device and
      inode, one ``stat``); when logrotate has moved it away (or it was deleted) the file is
      opened again -- created anew if needed -- so a long-running receive-wal never keeps
      writing into a rotated file.  :meth:`request_reopen` (SIGHUP in a detached process)
      reopens at the next record whatever the path shows.  If the new file cannot be
      opened, records keep going to the old one.
    """

    def __init__(self, path: str, owner: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.path = path
        self.owner = owner
        self._fd = -1
        self._ident: tuple[int, int] | None = None
        self._reopen = False
        self._torn = False
        self._reported = False
        self._fd, self._ident = self._open()

    def _open(self) -> tuple[int, tuple[int, int]]:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process created it meanwhile
                fd = os.open(self.path, flags)
            else:
                if self.owner is not None and os.geteuid() == 0:
                    try:
                        os.fchown(fd, *self.owner)
                    except OSError:
                        os.close(fd)
                        raise
        info = os.fstat(fd)
        return fd, (info.st_dev, info.st_ino)

    def request_reopen(self) -> None:
        """Reopen the file before the next record (async-signal safe: sets a flag)."""
        self._reopen = True

    def _moved(self) -> bool:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return (info.st_dev, info.st_ino) != self._ident

    def _reopen_if_needed(self) -> None:
        if not (self._reopen or self._moved()):
            return
        self._reopen = False
        try:
            fd, ident = self._open()
        except OSError as exc:
            self._report(exc)
            return
        old, self._fd, self._ident = self._fd, fd, ident
        self._torn = False
        with contextlib.suppress(OSError):
            os.close(old)

    def emit(self, record: logging.LogRecord) -> None:
        """Append the formatted record (see the class docstring for failures)."""
        wrote = False
        try:
            self._reopen_if_needed()
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            view = memoryview(b"\n" + data if self._torn else data)
            while view:
                count = os.write(self._fd, view)
                wrote = True
                view = view[count:]
            self._torn = False
        except Exception as exc:
            if wrote:
                self._torn = True
            self._report(exc)

    def _report(self, exc: Exception) -> None:
        if self._reported:  # once per process; shown even with -q: the log is the evidence
            return
        self._reported = True
        from walvault.errors import describe_os_error

        why = describe_os_error(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}"
        with contextlib.suppress(Exception):
            print(
                f"WARNING: cannot write to log_file '{self.path}' ({why}): "
                "log lines are lost until it can be written again",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        """Close the descriptor."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        super().close()


def log_owner(config: Config) -> tuple[int, int] | None:
    """(uid, gid) of ``walvault_user`` when this is a root process that must create files
    for it (see :mod:`walvault.privileges`), else None."""
    if not config.walvault_user or os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(config.walvault_user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def setup_logging(config: Config, quiet: bool) -> None:
    """Log to ``log_file`` in Barman's format when set; otherwise warnings go to stderr only."""
    global _configured
    if _configured:
        return
    _configured = True
    log.setLevel(config.log_level)
    log.propagate = False
    if config.log_file:
        owner = log_owner(config)
        try:
            if owner is None:
                os.makedirs(os.path.dirname(config.log_file), exist_ok=True)
            else:
                from walvault.privileges import account, prepare_directories

                prepare_directories(
                    account(str(config.walvault_user)),
                    directories=((os.path.dirname(config.log_file), 0o700),),
                    log_file=None,
                )
            handler: logging.Handler = LogFile(config.log_file, owner)
        except (OSError, WalvaultError) as exc:
            from walvault.errors import describe_os_error

            why = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            print(f"WARNING: cannot open log_file '{config.log_file}': {why}", file=sys.stderr)
            handler = logging.NullHandler()
        handler.setFormatter(logging.Formatter(config.log_format))
        log.addHandler(handler)


def log_files() -> list[LogFile]:
    """The ``log_file`` handlers of this process (none before :func:`setup_logging`)."""
    return [handler for handler in log.handlers if isinstance(handler, LogFile)]


def reopen_logs_on_sighup() -> bool:
    """In a process without a terminal (cron's detached receive-wal, a service), make SIGHUP
    reopen ``log_file`` at the next record; True when installed.  At a terminal SIGHUP keeps
    its usual meaning (the session ended: stop)."""
    import signal

    if any(stream.isatty() for stream in (sys.stdin, sys.stdout, sys.stderr) if stream):
        return False

    def reopen(_signum: int, _frame: object) -> None:
        for handler in log_files():
            handler.request_reopen()

    signal.signal(signal.SIGHUP, reopen)
    return True
