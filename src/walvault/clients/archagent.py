"""The archive agent: a warm process that ships WAL ahead of PostgreSQL's archive_command.

PostgreSQL runs archive_command once per WAL file, one at a time, and waits for each: a cold
``walvault-wal-archive`` per segment pays the interpreter, a new ssh connection and a
remote ``walvault put-wal`` start, serially.  With ``--spool-dir`` the first call starts
this agent (:func:`walvault.clients.agentbase.spawn`: detached, one per spool directory
``<spool dir>/archive@<server>@<source>@<config>@<pg_wal>/``, 0700), which:

* **looks ahead**: lists ``archive_status/*.ready`` in the pg_wal directory every
  :data:`POLL` seconds and ships what PostgreSQL will ask for next, up to N (``--parallel
  N``) put-wal streams at a time, each carrying up to :data:`BATCH_MAX` files when there is
  a backlog (put-wal takes several files in one stream and answers for all of them);
* **keeps the connection**: every put-wal over ssh goes through one OpenSSH master
  connection (``ControlMaster``, its socket in the spool directory; unless the
  ``--ssh-command`` already chooses a ``ControlPath``); locally, ``walvault put-wal`` runs
  as it does without the agent;
* **answers** ``ARCHIVE <name> <absolute WAL_PATH>`` requests of thin clients on its socket:
  it ships the file now (or waits for the shipment already under way) and replies with
  archive_command's status and the lines for PostgreSQL's log (put-wal's one-line
  ``ERROR:`` included): 0, put-wal's own failure code (1), SEND_FAILED 2 or CONNECTION 3,
  never above 125.  A shipment that failed is remembered with its lines for the request
  that waits for it; the lookahead retries a failed file after a growing delay
  (:data:`RETRY_FIRST` to :data:`RETRY_MAX` seconds);
* removes acknowledgements nobody will take: the file's ``.ready`` is gone (PostgreSQL is
  done with it) or the ack is older than :data:`walvault.clients.acks.ACK_MAX_AGE`;
* exits after :data:`IDLE_EXIT` seconds without a request or a shipment.

**The acknowledgement contract.**  PostgreSQL is told 0 for a WAL file only when that
exact content is durable in the archive.  put-wal exits 0 only after every file of the
stream is fsynced into ``incoming/`` (or an identical copy was found already safe).  The
agent writes an ack (:mod:`walvault.clients.acks`: size and SHA-256 of the content it
read and sent, written durably) only after put-wal exited 0, and a client exits 0 only for
an ack whose size and SHA-256 match the file as PostgreSQL hands it over at that moment.
An agent killed at any instant leaves no ack it has not earned (a killed put-wal is an
exit status other than 0); PostgreSQL then asks again and the file is shipped again --
put-wal finds its identical copy safe and answers success.  A client whose agent dies
before its ``EXIT`` line ships the file itself.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from walvault.clients import acks
from walvault.clients.agentbase import AgentBase, control_path, log, spawn
from walvault.clients.agentclient import session_start
from walvault.clients.common import SEND_FAILED, chooses_own_master, master_options, stop_master
from walvault.clients.walstream import Options, ship

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

LOCK = ".agent.lock"
LOG = "agent.log"
IDLE_EXIT = 30.0
POLL = 0.02
#: archive_status is listed again this long after a look that found nothing to ship (at
#: once when a shipment ends)
RESCAN = 0.25
#: files per put-wal stream at most (walvault's put-wal takes up to four segments' worth)
BATCH_MAX = 4
RETRY_FIRST, RETRY_MAX = 0.5, 30.0
#: how often acks nobody will take are looked for (seconds)
CLEANUP_EVERY = 5.0
#: the lookahead does not ship a file again this soon after it was archived (PostgreSQL
#: may not have renamed its ``.ready`` yet); a request always ships
RESHIP_AFTER = 60.0


class Sender:
    """How the agent runs put-wal: the command line (ssh or local), its environment and
    working directory, the stream options; and the ssh master to stop at the end."""

    def __init__(
        self,
        command: list[str],
        options: Options,
        *,
        local: bool,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        ssh: list[str] | None = None,
        destination: tuple[str, str, str | None] | None = None,
    ) -> None:
        self.command = command
        self.options = options
        self.local = local
        self.env = env
        self.cwd = cwd
        self.ssh = ssh  # the ssh argv before the destination, to share a master connection
        self.destination = destination  # (user, host, port)
        self.shared = False


def start(spool_path: str, sender: Sender, pg_wal: str, parallel: int) -> None:
    """Start a detached agent unless one is running (the caller returns at once)."""
    if session_start(os.path.join(spool_path, LOCK)) is not None:
        return
    spawn(
        os.path.join(spool_path, LOG),
        lambda _router: ArchiveAgent(spool_path, sender, pg_wal, parallel).run(),
    )


class _Job:
    """One put-wal stream under way: its files and, once done, each one's answer."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.done = threading.Event()
        self.results: dict[str, tuple[int, list[str]]] = {}


class ArchiveAgent(AgentBase):
    """One archive agent session (see the module docstring)."""

    lock_name = LOCK
    title = "archive agent"
    failure = SEND_FAILED

    def __init__(self, spool_path: str, sender: Sender, pg_wal: str, parallel: int) -> None:
        super().__init__(spool_path)
        self.sender = sender
        self.pg_wal = pg_wal
        self.parallel = max(1, parallel)
        self._lock = threading.Lock()
        self._inflight: dict[str, _Job] = {}
        self._running = 0  # lookahead jobs
        self._retry_at: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._archived_at: dict[str, float] = {}
        self._next_scan = 0.0

    # ---------------------------------------------------------------- life

    def prepare(self) -> None:
        sender = self.sender
        control = control_path(self.spool_path)
        own = sender.ssh is not None and chooses_own_master(" ".join(sender.ssh))
        if sender.ssh is not None and control is not None and not own:
            options = master_options(control)
            at = len(sender.ssh)
            sender.command = [*sender.command[:at], *options, *sender.command[at:]]
            sender.ssh = [*sender.ssh, *options]
            sender.shared = True
            log("shipping through one shared ssh connection")
        elif sender.ssh is not None and not own:
            log("spool path too long for an ssh control socket: one connection per put-wal")
        log(
            f"archive agent for {self.pg_wal}: up to {self.parallel} put-wal at a time, "
            f"{BATCH_MAX} files per stream at most"
        )

    def finish(self) -> None:
        sender = self.sender
        if sender.shared and sender.ssh is not None and sender.destination is not None:
            user, host, port = sender.destination
            stop_master(sender.ssh, user, host, port)

    def loop(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            self._loop(pool)

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        next_cleanup = 0.0
        while not self.stopping:
            now = time.monotonic()
            with self._lock:
                busy = self._running > 0 or bool(self._inflight)
            if busy:
                self.last_activity = now
            elif now - self.last_activity > IDLE_EXIT:
                break
            self._schedule(pool, now)
            if now >= next_cleanup:
                self._clean_acks()
                next_cleanup = now + CLEANUP_EVERY
            time.sleep(POLL)

    # ---------------------------------------------------------------- requests

    def answer(self, request: bytes) -> tuple[int, list[str]]:
        """Ship the requested file now (see the module docstring)."""
        from walvault.errors import InvalidWalName
        from walvault.wal.names import validate_wal_name

        parts = request.decode("utf-8", "replace").rstrip("\n").split(" ", 2)
        if len(parts) != 3 or parts[0] != "ARCHIVE":
            return SEND_FAILED, ["ERROR: archive agent: malformed request"]
        _, name, path = parts
        try:
            validate_wal_name(name)
        except InvalidWalName as exc:
            return SEND_FAILED, [f"ERROR: {exc.message}"]
        if not os.path.isabs(path) or os.path.basename(path) != name or "\0" in path:
            return SEND_FAILED, [f"ERROR: archive agent: not an absolute path to '{name}'"]
        code, lines = SEND_FAILED, [f"ERROR: '{path}' kept changing while it was sent"]
        for _attempt in range(3):
            code, lines = self._ship_or_join(name, path)
            if code != 0:
                return code, lines
            if acks.take(self.spool_path, name, path):
                return 0, lines
        return code, lines

    def _ship_or_join(self, name: str, path: str) -> tuple[int, list[str]]:
        """The answer of the shipment of ``name`` under way, or of a new one of ``path``."""
        with self._lock:
            job = self._inflight.get(name)
            mine = job is None
            if job is None:
                job = _Job([name])
                self._inflight[name] = job
        if mine:
            self._ship(job, [path])
        else:
            job.done.wait()
        return job.results.get(name, (SEND_FAILED, ["ERROR: archive agent: no answer"]))

    # ---------------------------------------------------------------- lookahead

    def _ready(self) -> list[str]:
        """The WAL names PostgreSQL has marked ready for archiving, oldest first."""
        from walvault.wal.names import classify

        try:
            entries = os.listdir(os.path.join(self.pg_wal, "archive_status"))
        except OSError:
            return []
        names = (e[:-6] for e in entries if e.endswith(".ready"))
        return sorted(n for n in names if classify(n) is not None)

    def _schedule(self, pool: ThreadPoolExecutor, now: float) -> None:
        """Start lookahead shipments while fewer than N run."""
        with self._lock:
            free = self.parallel - self._running
            if free <= 0 or now < self._next_scan:
                return
            self._next_scan = now + RESCAN
            done = set(acks.names(self.spool_path))
            recent = now - RESHIP_AFTER
            todo = [
                n
                for n in self._ready()
                if n not in self._inflight
                and n not in done
                and self._retry_at.get(n, 0) <= now
                and self._archived_at.get(n, 0) < recent
            ]
            if not todo:
                return
            size = min(BATCH_MAX, -(-len(todo) // free))  # spread over the free slots
            while todo and free > 0:
                names, todo = todo[:size], todo[size:]
                job = _Job(names)
                for name in names:
                    self._inflight[name] = job
                self._running += 1
                free -= 1
                pool.submit(self._lookahead, job)

    def _lookahead(self, job: _Job) -> None:
        try:
            self._ship(job, [os.path.join(self.pg_wal, n) for n in job.names])
        finally:
            now = time.monotonic()
            with self._lock:
                self._running -= 1
                self._next_scan = 0.0
                for name in job.names:
                    code = job.results.get(name, (SEND_FAILED, []))[0]
                    if code == 0:
                        self._delay.pop(name, None)
                        self._retry_at.pop(name, None)
                        continue
                    wait = min(self._delay.get(name, RETRY_FIRST / 2) * 2, RETRY_MAX)
                    self._delay[name], self._retry_at[name] = wait, now + wait

    # ---------------------------------------------------------------- shipping

    def _ship(self, job: _Job, paths: list[str]) -> None:
        """Ship ``paths`` in one stream (each alone again if the stream failed), write the
        acks of what put-wal accepted, then release the job."""
        try:
            results = self._send(paths)
            if len(paths) > 1 and any(code != 0 for code, _ in results.values()):
                results = {}
                for path in paths:  # which of them failed, and why
                    results.update(self._send([path]))
            job.results.update(results)
        except Exception as exc:  # a shipment must never take the agent down
            message = f"ERROR: archive agent: unexpected {type(exc).__name__}: {exc}"
            log(message)
            for name in job.names:
                job.results.setdefault(name, (SEND_FAILED, [message]))
        finally:
            with self._lock:
                for name in job.names:
                    if self._inflight.get(name) is job:
                        del self._inflight[name]
            job.done.set()

    def _send(self, paths: list[str]) -> dict[str, tuple[int, list[str]]]:
        """One put-wal stream of ``paths``: each name's status and lines; acks written for
        what put-wal accepted."""
        sender = self.sender
        lines: list[str] = []
        started = time.monotonic()
        shipment = ship(
            sender.options,
            sender.command,
            paths,
            lines.append,
            local=sender.local,
            env=sender.env,
            cwd=sender.cwd,
            capture=True,
        )
        names = [os.path.basename(p) for p in paths]
        code = shipment.code
        for sent in shipment.sent:
            try:
                acks.write(self.spool_path, sent.name, sent.size, sent.sha256)
            except OSError as exc:
                message = f"ERROR: cannot write the acknowledgement of '{sent.name}': {exc}"
                lines.append(message)
                code = SEND_FAILED
        elapsed = time.monotonic() - started
        what = ", ".join(names)
        log(f"shipped {what}: exit {code} in {elapsed:.2f} s" + "".join(f"\n  {x}" for x in lines))
        if code == 0:
            now = time.monotonic()
            self.last_activity = now
            with self._lock:
                self._archived_at.update((name, now) for name in names)
        return {name: (code, list(lines)) for name in names}

    def _clean_acks(self) -> None:
        """Remove the acks nobody will take (see the module docstring)."""
        status = os.path.join(self.pg_wal, "archive_status")
        limit = time.time() - acks.ACK_MAX_AGE
        for name in acks.names(self.spool_path):
            path = acks.ack_path(self.spool_path, name)
            try:
                old = os.stat(path).st_mtime < limit
            except OSError:
                continue
            if old or not os.path.exists(os.path.join(status, name + ".ready")):
                acks.remove(self.spool_path, name)
        recent = time.monotonic() - RESHIP_AFTER
        with self._lock:
            for name in [n for n, t in self._archived_at.items() if t < recent]:
                del self._archived_at[name]
