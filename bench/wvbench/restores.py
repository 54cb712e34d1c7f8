"""restore_command runs shared by the `getwal`, `ssh` and `s3` sections, and the restore agent.

A run goes through ``/bin/sh -c``, as PostgreSQL runs restore_command, into ``RECOVERYXLOG``,
which is removed before each call (PostgreSQL does) and checked (sha256) after it.

walvault's ``walvault-wal-restore`` starts a *restore agent* on its first call: a process
forked from the client (so its command line is the client's, ``--spool-dir`` included),
detached, that answers the later calls over a socket in the spool and outlives the last of
them until it has been idle for 30 s.  GNU time does not see it (the client does not wait
for it), so its peak memory is read from ``/proc/<pid>/status`` (``VmHWM``) before the bench
stops it; its PID is in ``.prefetch.lock`` of its spool directory, and ``agent.log`` there
says whether it shares one ssh connection.  The bench gives every walvault run a spool
directory of its own (never the default ``/var/tmp/walrestore``, which other runs on the
machine may use) and stops its agents through that path (:func:`stop_agents`).
"""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wvbench.common import SEG, median, sha256_file
from wvbench.tools import Run, reap_strays, run_timed

#: the line in agent.log of an agent that fetches through one shared ssh connection
SHARED_SSH_LOG = "fetching through one shared ssh connection"


@dataclass
class Replay:
    """The calls of one replay-style restore (see :func:`replay`)."""

    times: list[float] = field(default_factory=list)  # each call's wall time, in order
    maxrss_kib: int = 0  # the largest peak RSS of a call (GNU time)
    problem: str | None = None  # the first thing that went wrong, else None
    loop_seconds: float = 0.0  # the whole loop, the bench's checks included

    @property
    def seconds(self) -> float:
        """The sum of the calls' wall times."""
        return sum(self.times)

    @property
    def first(self) -> float | None:
        return self.times[0] if self.times else None

    @property
    def rest_median(self) -> float | None:
        """The median call after the first (the first may start an agent)."""
        return median(self.times[1:])

    def detail(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "loop_seconds": self.loop_seconds,
            "first_call_seconds": self.first,
            "median_other_calls_seconds": self.rest_median,
            "maxrss_kib": self.maxrss_kib,
            "error": self.problem,
            "call_seconds": [round(t, 4) for t in self.times],
        }


def expand(command: str, name: str, target: Path) -> str:
    """``command`` with %f and %p filled in, as PostgreSQL fills them."""
    return command.replace("%f", name).replace("%p", shlex.quote(str(target)))


def one_call(command: str, name: str, target: Path, env: dict[str, str] | None = None) -> Run:
    """One restore_command call for ``name`` into ``target`` (removed first, as PostgreSQL
    removes RECOVERYXLOG before it runs restore_command: a 16 MiB file left from the call
    before would cost its truncation, which a real recovery never pays).  A call that
    exits 0 without writing one whole segment counts as failed."""
    target.unlink(missing_ok=True)
    run = run_timed(["/bin/sh", "-c", expand(command, name, target)], capture=True, env=env)
    if run.ok:
        size = target.stat().st_size if target.exists() else None
        if size != SEG:
            run.returncode = -1
            run.stderr = f"{target} has {size} bytes after exit 0"
    return run


def replay(
    hashes: dict[str, str],
    names: list[str],
    command: str,
    target: Path,
    env: dict[str, str] | None = None,
) -> Replay:
    """Run ``command`` (%f, %p unexpanded) for each name in turn, as PostgreSQL would.

    Like PostgreSQL, which replays RECOVERYXLOG and then removes it, each restored segment
    is checked against ``hashes`` and deleted: keeping them would pile up dirty page cache,
    and the kernel's writeback throttling would then slow every later write of both tools.
    """
    import time

    result = Replay()
    start = time.perf_counter()
    bad: list[str] = []
    for name in names:
        run = one_call(command, name, target, env)
        if not run.ok:
            result.problem = run.describe()
            break
        result.times.append(run.elapsed)
        result.maxrss_kib = max(result.maxrss_kib, run.maxrss_kib)
        if sha256_file(target) != hashes[name]:
            bad.append(name)
    target.unlink(missing_ok=True)
    result.loop_seconds = time.perf_counter() - start
    if bad and result.problem is None:
        result.problem = f"{len(bad)} restored segments differ (first {bad[0]})"
    return result


# --------------------------------------------------------------------------- the restore agent


def _agent_dirs(spool: Path) -> list[Path]:
    """The per-(server, source, configuration) directories of a spool."""
    with contextlib.suppress(OSError):
        return sorted(p for p in spool.iterdir() if p.is_dir())
    return []


def _peak_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM), 0 when it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


@dataclass
class AgentReport:
    """What the agents of one spool were, just before the bench stopped them."""

    agents: int = 0  # agents found running
    peak_kib: int = 0  # the largest VmHWM among them
    shared_ssh: bool = False  # an agent's log says it shares one ssh connection
    stopped: int = 0  # processes stopped (agents, their ssh master connections)
    #: from agent.log: requests served from the spool, requests fetched there and then,
    #: segments prefetched into the spool (more prefetched + fetched than requested means
    #: some segments were fetched twice)
    served_from_spool: int = 0
    fetched_on_request: int = 0
    prefetched: int = 0

    def detail(self) -> dict[str, Any]:
        return {
            "agents": self.agents,
            "peak_kib": self.peak_kib,
            "shared_ssh": self.shared_ssh,
            "processes_stopped": self.stopped,
            "served_from_spool": self.served_from_spool,
            "fetched_on_request": self.fetched_on_request,
            "prefetched": self.prefetched,
        }


def stop_agents(spool: Path) -> AgentReport:
    """Read the peak memory and the log of every agent of ``spool``, then stop them (and
    whatever else names the spool: an ssh master connection, a prefetch thread's child)."""
    report = AgentReport()
    for directory in _agent_dirs(spool):
        with contextlib.suppress(OSError, ValueError):
            pid = int((directory / ".prefetch.lock").read_text().split()[0])
            peak = _peak_kib(pid)
            if peak:
                report.agents += 1
                report.peak_kib = max(report.peak_kib, peak)
        with contextlib.suppress(OSError):
            text = (directory / "agent.log").read_text(errors="replace")
            report.shared_ssh = report.shared_ssh or SHARED_SSH_LOG in text
            for line in text.splitlines():
                # the agent's own log lines: "served NAME from the spool", "fetched NAME
                # on request: exit N", "spooled NAME"
                words = line.split()
                if "served" in words and line.endswith("from the spool"):
                    report.served_from_spool += 1
                elif "fetched" in words and "on request:" in line:
                    report.fetched_on_request += 1
                elif len(words) >= 2 and words[-2] == "spooled":
                    report.prefetched += 1
    report.stopped = len(reap_strays(str(spool)))
    return report


def interleaved(calls: dict[str, Any], picks: list[str]) -> dict[str, list[Run]]:
    """Call ``calls[key](name)`` (returning a Run) for each name of ``picks``, every key once
    per name, the order rotating from name to name so that no kind always goes first (on
    a "warmer" or busier machine).  A key whose call fails is dropped after that call."""
    runs: dict[str, list[Run]] = {key: [] for key in calls}
    keys = list(calls)
    failed: set[str] = set()
    for i, name in enumerate(picks):
        shift = i % len(keys) if keys else 0
        for key in keys[shift:] + keys[:shift]:
            if key in failed:
                continue
            run = calls[key](name)
            runs[key].append(run)
            if not run.ok:
                failed.add(key)
    return runs
