"""``walvault serve``: cron's work for every server, continuously, in one service.

One asyncio loop in one thread does the supervising; everything that can block runs in a
forked worker (:mod:`walvault.supervise.children`; what each runs:
:mod:`walvault.supervise.workers`):

* **receivers** -- a worker per streamed server runs :func:`walvault.receiver.service.
  receive_wal`, exactly what ``walvault receive-wal`` runs (preflight, slot, gap-safe
  positioning, pg_receivewal, its exit reason in ``walvault-receiver.json``).  When it ends,
  the next start follows cron's rules (:func:`walvault.supervise.cron.receiver_start_due`:
  at once after one failure, then 1, 2, 4... minutes while it keeps failing, every start
  after the first counted as a restart), so a killed pg_receivewal streams again within a
  second.  A receiver of ours stopped by someone else (``receive-wal --stop``,
  ``terminate-process``) is started again after :data:`STOPPED_PAUSE` seconds, as cron
  would at its next pass: that leaves room for ``receive-wal --reset``;
* **archiving** -- every :data:`POLL` seconds the staging directories are looked at (a
  stat, and a listing of names when they may have changed: :meth:`Service._changed`) and the
  batch archive-wal would take is computed (:mod:`walvault.archive.batch`);
  when there is one, a worker runs :func:`walvault.archive.archiver.archive_wal` and then
  settles WAITING_FOR_WALS backups.  A segment pg_receivewal completes or put-wal lands is
  in the archive within about a second;
* **maintenance** -- every :data:`MAINTENANCE_EVERY` seconds per server, under its cron lock:
  stop the receive-wal of an inactive server or one with ``streaming_archiver = off``,
  settle backups, apply the retention policy (cron's own functions);
* **probe** -- one worker samples the streaming lag and runs the checks
  (:mod:`walvault.supervise.probe`).

Locks are the commands' and cron's: a receiver is started only under the server's cron lock
after seeing no receive-wal lock held, and the cron lock is kept until the new worker holds
the receive-wal lock (read from the lock file, never probed: probing takes a free lock for an
instant).  So cron, manual commands and serve start one receiver between them; a receiver
started by someone else is watched (``external``) and taken over when it ends.

Signals: SIGTERM and SIGINT stop every worker (receivers first: pg_receivewal gets SIGINT
and leaves its ``.partial``) and exit 0; SIGHUP re-reads the configuration: servers added
are started, removed ones stopped, changed ones restarted (a change that disables a
server leaves its running receiver alone, as cron does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from walvault import locks
from walvault.archive.batch import list_names, select_incoming, select_streaming
from walvault.config import Config, ServerConfig, load_config
from walvault.errors import ConfigError, LockBusy, WalvaultError
from walvault.receiver.state import load_state
from walvault.supervise.children import Child, Emit, fork_child
from walvault.supervise.cron import prepare_directories, receiver_start_due
from walvault.supervise.notify import notify
from walvault.supervise.runtime import ServerRuntime
from walvault.supervise.workers import archive_target, maintenance_target, preload, receiver_target
from walvault.web.coverage import CoverageReader
from walvault.web.http import HttpServer, Response, listening_socket
from walvault.web.metrics import CONTENT_TYPE, metrics_text
from walvault.web.page import page_html
from walvault.web.snapshot import STOPPED_BY_REQUEST, snapshot

log = logging.getLogger("walvault.serve")
Echo = Callable[[str], None]

POLL = 0.5
MAINTENANCE_EVERY = 60.0
STOPPED_PAUSE = 60.0
LOCK_WAIT = 15.0
ARCHIVE_GRACE = 10.0
RELIST_EVERY = 30.0
STOP_TIMEOUT = 25.0


class Service:
    """The running service: its servers, its workers and its HTTP side."""

    def __init__(
        self,
        config: Config,
        listen: tuple[str, int],
        *,
        check_interval: float,
        sample_interval: float,
        say: Echo,
        warn: Echo,
    ) -> None:
        self.config = config
        self.listen = listen
        self.check_interval = check_interval
        self.sample_interval = sample_interval
        self.say = say
        self.warn = warn
        self.runtimes: dict[str, ServerRuntime] = {}
        self.children: set[Child] = set()
        self.prober: Child | None = None
        self.next_prober = 0.0
        self.stopping = False
        self.reload_requested = False
        self.started_at = time.time()
        self.service_errors: list[str] = []
        self.sock: socket.socket | None = None
        self.http: HttpServer | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- the loop
    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a requested stop."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        host, port = self.listen
        try:
            self.sock = listening_socket(host, port)
        except OSError as exc:
            raise WalvaultError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self.http = HttpServer(
            self.sock,
            {"/": self._page, "/metrics": self._metrics, "/api/status": self._status},
        )
        await self.http.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self.apply_config(self.config)
        bound = self.sock.getsockname()
        self.say(
            f"walvault serve: {len(self.runtimes)} servers; status page and metrics on "
            f"http://{_shown_host(bound[0])}:{bound[1]}/"
        )
        notify("READY=1", f"STATUS=serving {len(self.runtimes)} servers")
        while not self.stopping:
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL)
            self._wake.clear()
        await self.shutdown()
        return 0

    def request_stop(self) -> None:
        """SIGTERM/SIGINT."""
        self.stopping = True
        self.kick()

    def request_reload(self) -> None:
        """SIGHUP."""
        self.reload_requested = True
        self.kick()

    def kick(self) -> None:
        """Run the next pass now rather than at the next poll."""
        if self._wake is not None:
            self._wake.set()

    def tick(self) -> None:
        """One pass over every server: start what should run and is not running."""
        now = time.time()
        for name, rt in list(self.runtimes.items()):
            if rt.removed:
                if not rt.children() and not rt.receiver_starting:
                    del self.runtimes[name]
                continue
            try:
                self._tick_server(rt, now)
            except Exception as exc:  # (a fork that fails: no memory, no process slot)
                log.exception("serve: pass over server %s failed", name)
                rt.error("serve", f"{type(exc).__name__}: {exc}; retrying in 30 s")
                rt.next_archive = rt.next_maintenance = now + 30.0
        if self.prober is None and now >= self.next_prober:
            try:
                self._start_prober()
            except Exception as exc:
                self._service_error(f"cannot start the probe worker: {exc}; retrying in 30 s")
                self.next_prober = now + 30.0

    def _tick_server(self, rt: ServerRuntime, now: float) -> None:
        if rt.receiver is not None and not rt.wants_receiver:
            self._stop_receiver(rt)
        if (
            rt.wants_receiver
            and rt.receiver is None
            and not rt.receiver_starting
            and now >= rt.next_receiver_start
        ):
            rt.receiver_starting = True  # before the task runs: never two starts at once
            self._spawn(self._start_receiver(rt))
        idle = rt.archives and rt.archiver is None and now >= rt.next_archive
        if idle and self._has_work(rt, now):
            self._start_archiver(rt)
        if not rt.server.disabled and rt.maintenance is None and now >= rt.next_maintenance:
            rt.next_maintenance = now + MAINTENANCE_EVERY
            self._start_maintenance(rt)

    # ---------------------------------------------------------------- workers
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fork(
        self,
        name: str,
        target: Callable[[Emit], int],
        on_line: Callable[[dict[str, Any]], None],
        on_exit: Callable[[Child, int], None],
    ) -> Child:
        child = fork_child(name, target, sockets=[self.sock] if self.sock else [])
        self.children.add(child)
        loop = asyncio.get_running_loop()
        loop.add_reader(child.out_fd, self._read, child, on_line)
        loop.add_reader(child.pidfd, self._exited, child, on_line, on_exit)
        return child

    def _read(self, child: Child, on_line: Callable[[dict[str, Any]], None]) -> None:
        lines, eof = child.read_lines()
        if eof:
            asyncio.get_running_loop().remove_reader(child.out_fd)
        for line in lines:
            on_line(line)

    def _exited(
        self,
        child: Child,
        on_line: Callable[[dict[str, Any]], None],
        on_exit: Callable[[Child, int], None],
    ) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(child.pidfd)
        lines, _ = child.read_lines()  # what it wrote just before the end
        loop.remove_reader(child.out_fd)
        code = child.reap()
        child.close()
        self.children.discard(child)
        for line in lines:
            on_line(line)
        on_exit(child, code)
        self.kick()

    def _has_work(self, rt: ServerRuntime, now: float) -> bool:
        """Whether archive-wal would take a file now (the same selection, names only)."""
        server = rt.server
        if server.streaming_archiver:
            directory = server.streaming_wals_directory
            changed = self._changed(rt, directory, now)
            if changed and select_streaming(directory, list_names(directory), 1).size:
                return True
        if server.archiver:
            directory = server.incoming_wals_directory
            changed = self._changed(rt, directory, now)
            if changed and select_incoming(directory, list_names(directory), 1).size:
                return True
        return False

    @staticmethod
    def _changed(rt: ServerRuntime, directory: str, now: float) -> bool:
        """Whether ``directory`` may have changed since it was last listed: its mtime moved,
        or is too recent to trust (file system timestamps are coarse), or the last listing
        is :data:`RELIST_EVERY` seconds old.  A stat costs a few microseconds, a listing and
        selection some 50: most polls of an idle directory are a stat."""
        try:
            mtime = os.stat(directory).st_mtime_ns
        except OSError:
            return True
        seen = rt.listed.get(directory)
        if seen and seen[0] == mtime and now - mtime / 1e9 > 1.0 and now - seen[1] < RELIST_EVERY:
            return False
        rt.listed[directory] = (mtime, now)
        return True

    async def _start_receiver(self, rt: ServerRuntime) -> None:
        server = rt.server
        rt.receiver_starting = True
        try:
            lock = locks.ServerLock(server.lock_directory, server.name, locks.CRON)
            try:
                lock.acquire()
            except LockBusy:  # a cron pass (or our maintenance) holds it: soon again
                rt.next_receiver_start = time.time() + 1.0
                return
            try:
                await self._start_receiver_locked(rt)
            finally:
                lock.release()
        except WalvaultError as exc:
            rt.error("receiver", exc.message)
            rt.next_receiver_start = time.time() + 30.0
        except Exception as exc:  # a fork that fails
            log.exception("serve: starting the receiver of %s failed", server.name)
            rt.error("receiver", f"cannot start receive-wal: {exc}; retrying in 30 s")
            rt.next_receiver_start = time.time() + 30.0
        finally:
            rt.receiver_starting = False

    async def _start_receiver_locked(self, rt: ServerRuntime) -> None:
        server = rt.server
        holder = locks.lock_holder(server.lock_directory, server.name, locks.RECEIVE_WAL)
        if holder is not None:
            if rt.external_receiver != holder:
                self.say(
                    f"receive-wal for server {server.name} runs outside serve (PID {holder}); "
                    "serve takes over when it ends"
                )
            rt.external_receiver = holder
            rt.next_receiver_start = time.time() + 5.0
            return
        rt.external_receiver = None
        next_attempt = receiver_start_due(server, self.say)
        if next_attempt is not None:
            rt.next_receiver_start = next_attempt
            return
        self.say(f"Starting streaming archiver for server {server.name}")
        rt.receiver_stop_requested = False
        child = self._fork(
            f"receive-wal {server.name}",
            receiver_target(server),
            lambda _line: None,
            lambda child, code: self._receiver_exited(rt, child, code),
        )
        rt.receiver = child
        path = locks.lock_path(server.lock_directory, server.name, locks.RECEIVE_WAL)
        deadline = time.monotonic() + LOCK_WAIT
        while time.monotonic() < deadline and child.exit_code is None:
            if locks.read_lock_pid(path) == child.pid:
                return
            await asyncio.sleep(0.02)

    def _receiver_exited(self, rt: ServerRuntime, child: Child, code: int) -> None:
        if rt.receiver is child:
            rt.receiver = None
        if self.stopping:
            return
        name = rt.name
        state = load_state(rt.server)
        ran = state.started_at is not None and state.started_at >= child.started - 1.0
        reason = state.exit_reason if ran else None
        if rt.receiver_stop_requested:
            rt.receiver_stop_requested = False
            rt.next_receiver_start = 0.0
        elif reason == STOPPED_BY_REQUEST:
            rt.next_receiver_start = time.time() + STOPPED_PAUSE
            message = f"stopped on request; serve starts it again in {STOPPED_PAUSE:.0f} s"
            rt.error("receiver", message)
            self.say(f"receive-wal for server {name} {message}")
        else:
            message = reason or f"receive-wal ended with exit code {code}"
            rt.error("receiver", message)
            self.warn(f"receive-wal for server {name} ended: {message}")
            rt.next_receiver_start = 0.0  # receiver_start_due decides about back-off

    def _stop_receiver(self, rt: ServerRuntime) -> None:
        if rt.receiver is not None and not rt.receiver_stop_requested:
            rt.receiver_stop_requested = True
            self.say(f"Stopping receive-wal for server {rt.name}")
            rt.receiver.signal(signal.SIGTERM)

    def _start_archiver(self, rt: ServerRuntime) -> None:
        settle = not rt.server.disabled
        rt.archiver = self._fork(
            f"archive-wal {rt.name}",
            archive_target(rt.server, settle),
            lambda data: self._archive_report(rt, data),
            lambda child, code: self._archiver_exited(rt, code),
        )

    def _archive_report(self, rt: ServerRuntime, data: dict[str, Any]) -> None:
        rt.add_storage(data.get("storage", []))
        if data.get("error"):
            rt.error("archive-wal", str(data["error"]))
        for kind, names in (data.get("errors") or {}).items():
            rt.error("archive-wal", f"moved to errors/ ({kind}): {', '.join(names)}")
        for name, why in data.get("failed") or []:
            rt.error("archive-wal", f"{name} left in place: {why}")
        if data.get("busy"):
            rt.next_archive = time.time() + 1.0

    def _archiver_exited(self, rt: ServerRuntime, code: int) -> None:
        rt.archiver = None
        rt.listed.clear()  # list again: files left behind (busy, failed, batch size) wait
        now = time.time()
        if code == 0:
            rt.archive_failures = 0
            rt.next_archive = max(rt.next_archive, now)
            return
        rt.archive_failures += 1
        rt.next_archive = now + min(60.0, 2.0**rt.archive_failures)
        if code < 0 or code == 70:
            rt.error("archive-wal", f"archive-wal worker ended with {code} (see the log)")

    def _start_maintenance(self, rt: ServerRuntime) -> None:
        rt.maintenance = self._fork(
            f"maintenance {rt.name}",
            maintenance_target(rt.server),
            lambda data: self._report_error(rt, "maintenance", data),
            lambda child, code: self._maintenance_exited(rt, code),
        )

    def _report_error(self, rt: ServerRuntime, source: str, data: dict[str, Any]) -> None:
        rt.add_storage(data.get("storage", []))
        if data.get("error"):
            rt.error(source, str(data["error"]))

    def _maintenance_exited(self, rt: ServerRuntime, code: int) -> None:
        rt.maintenance = None
        if code < 0 or code == 70:
            rt.error("maintenance", f"maintenance worker ended with {code} (see the log)")

    def _start_prober(self) -> None:
        from walvault.supervise.probe import probe_loop

        servers = [
            rt.server for rt in self.runtimes.values() if rt.server.active and not rt.removed
        ]
        checks, samples = self.check_interval, self.sample_interval
        self.prober = self._fork(
            "probe",
            lambda emit: probe_loop(servers, emit, check_interval=checks, sample_interval=samples),
            self._probe_report,
            self._prober_exited,
        )

    def _probe_report(self, data: dict[str, Any]) -> None:
        rt = self.runtimes.get(str(data.get("server")))
        if rt is None:
            return
        if data.get("kind") == "lag":
            rt.add_lag(float(data["at"]), data.get("lag"), data.get("error"))
            if data.get("segment_size"):
                rt.segment_size = int(data["segment_size"])
        elif data.get("kind") == "checks":
            rt.add_storage(data.get("storage", []))
            rt.checks = list(data.get("results") or [])
            rt.checks_at = float(data["at"])

    def _prober_exited(self, child: Child, code: int) -> None:
        if self.prober is child:
            self.prober = None
        if not self.stopping and code != -signal.SIGTERM:
            self._service_error(f"the probe worker ended with {code}; restarting it in 5 s")
            self.next_prober = time.time() + 5.0

    def _restart_prober(self) -> None:
        if self.prober is not None:
            self.prober.signal(signal.SIGTERM)
            self.prober = None  # its exit is still reaped; a new one starts now
        self.next_prober = 0.0

    def _service_error(self, message: str) -> None:
        self.service_errors.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}")
        del self.service_errors[:-20]
        self.warn(message)

    # ---------------------------------------------------------------- configuration
    def apply_config(self, config: Config) -> None:
        """Bring the servers in line with ``config`` (at start and on SIGHUP)."""
        from walvault.config import archivable_servers

        archivable: set[str] | None = None
        for name, server in config.servers.items():
            archive_only = False
            if server.disabled:
                if archivable is None:
                    archivable = archivable_servers(config.path)
                archive_only = name in archivable
            rt = self.runtimes.get(name)
            if rt is None:
                rt = ServerRuntime(server, archive_only=archive_only)
                self.runtimes[name] = rt
            elif rt.removed or rt.server != server or rt.archive_only != archive_only:
                self._update(rt, server, archive_only)
            if server.active and not server.disabled:
                try:
                    prepare_directories(server)
                except OSError as exc:
                    rt.error("configuration", f"cannot create the server's directories: {exc}")
        for name, rt in self.runtimes.items():
            if name not in config.servers and not rt.removed:
                self.say(f"Server '{name}' is no longer configured: stopping its workers")
                rt.removed = True
                self._stop_receiver(rt)
        self.config = config

    def _update(self, rt: ServerRuntime, server: ServerConfig, archive_only: bool) -> None:
        was_removed = rt.removed
        rt.removed = False
        if server.xlogdb_path != rt.server.xlogdb_path:
            rt.coverage = CoverageReader(server.xlogdb_path)
        changed = rt.server != server
        rt.server, rt.archive_only = server, archive_only
        rt.next_receiver_start = 0.0
        if was_removed:
            self.say(f"Server '{server.name}' is configured again")
        if not changed:
            return
        if server.disabled:
            self.warn(
                f"Server '{server.name}' is now disabled ({'; '.join(server.messages)}): "
                "a running receive-wal keeps its old settings until the configuration is fixed"
            )
            return
        self.say(f"Configuration of server '{server.name}' changed")
        if rt.receiver is not None:
            self._stop_receiver(rt)  # restarted with the new settings once it has ended

    def reload(self) -> None:
        """SIGHUP: read the configuration again; keep the old one if the new one is broken."""
        notify("RELOADING=1")
        try:
            config = load_config(self.config.path)
        except ConfigError as exc:
            self._service_error(f"configuration not reloaded: {exc.message}")
            notify("READY=1")
            return
        for warning in config.warnings:
            self.warn(warning)
        self.say(f"Reloading the configuration from {config.path}")
        self.apply_config(config)
        self._restart_prober()
        notify("READY=1", f"STATUS=serving {len(self.runtimes)} servers")

    # ---------------------------------------------------------------- stopping
    async def shutdown(self) -> None:
        """Stop every worker: receivers and the probe at once, archive-wal after it had
        :data:`ARCHIVE_GRACE` seconds to finish its batch; SIGKILL what is left after
        :data:`STOP_TIMEOUT` seconds."""
        notify("STOPPING=1")
        self.say("Stopping: ending every receive-wal")
        if self.http is not None:
            self.http.close()
        while self._tasks:  # a receiver start in progress finishes first
            await asyncio.sleep(0.02)
        archivers = {rt.archiver for rt in self.runtimes.values() if rt.archiver}
        for child in list(self.children):
            if child not in archivers:
                child.signal(signal.SIGTERM)
        start = time.monotonic()
        while self.children:
            waited = time.monotonic() - start
            if waited > ARCHIVE_GRACE:
                for child in archivers & self.children:
                    child.signal(signal.SIGTERM)
            if waited > STOP_TIMEOUT:
                for child in list(self.children):
                    self._service_error(f"{child.name} did not stop: killing it")
                    child.signal(signal.SIGKILL)
                start = time.monotonic() - STOP_TIMEOUT + 5.0
            await asyncio.sleep(0.05)
        self.say("walvault serve stopped")

    # ---------------------------------------------------------------- HTTP routes
    def snapshot(self) -> dict[str, Any]:
        """The status document (see :mod:`walvault.web.snapshot`)."""
        host, port = self.sock.getsockname()[:2] if self.sock else self.listen
        return snapshot(
            list(self.runtimes.values()),
            started_at=self.started_at,
            listen=f"{_shown_host(host)}:{port}",
            service_errors=self.service_errors,
        )

    def _status(self) -> Response:
        body = json.dumps(self.snapshot(), indent=1, sort_keys=True).encode()
        return Response(200, "application/json", body)

    def _metrics(self) -> Response:
        return Response(200, CONTENT_TYPE, metrics_text(self.snapshot()).encode())

    def _page(self) -> Response:
        html, csp = page_html(self.snapshot())
        return Response(
            200, "text/html; charset=utf-8", html.encode(), {"Content-Security-Policy": csp}
        )


def _shown_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run_service(
    config: Config,
    listen: tuple[str, int],
    *,
    check_interval: float,
    sample_interval: float,
    say: Echo,
    warn: Echo,
) -> int:
    """Run the service in the foreground until it is stopped."""
    preload()
    service = Service(
        config,
        listen,
        check_interval=check_interval,
        sample_interval=sample_interval,
        say=say,
        warn=warn,
    )
    return asyncio.run(service.run())
