"""Section `ssh`: restore_command over ssh, barman-wal-restore against walvault-wal-restore.

Both clients talk to the same throwaway sshd on 127.0.0.1 (the test suite's harness,
tests/sshharness.py) through the same ``ssh``: a wrapper first on PATH that adds the
harness's key and options, since barman-wal-restore has no option for them.  Each tool reads
its own zstd archive, built by its own archive-wal.  Serial, then with ``-p 4`` (Barman's
parallel peek-and-fetch into its spool; walvault's continuous prefetcher); each once with
one ssh connection per fetch, and once with OpenSSH's connection sharing (``ControlMaster``,
``ControlPersist``) in the wrapper, which either tool's users can configure (README).

walvault's restore agent (started by the first call) shares one ssh connection by itself:
it adds ``ControlMaster``/``ControlPath`` options to its ssh unless ``--ssh-command`` names a
``ControlPath`` -- here ``--ssh-command`` is the plain ``ssh`` of the wrapper, so without the
wrapper's sharing the agent makes its own master connection, and with it, ssh takes the
wrapper's options (the first value of an option wins).  Its ``ControlPath`` lies in the spool
directory and must stay under ~90 characters: the bench's spool paths are short (about as
long as the default ``/var/tmp/walrestore``'s), and the JSON records from the agent's log
whether it did share.  ``walvault --no-agent`` (one connection per fetch, as before the agent)
runs once, serially without the wrapper's sharing, for reference.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from wvbench.common import log, test_harness
from wvbench.getwal import archived_homes, remove_homes, replay_key
from wvbench.homes import restore_command
from wvbench.report import Row
from wvbench.restores import Replay, replay, stop_agents
from wvbench.runner import Bench, no_figure
from wvbench.tools import reap_strays

MODES = ((0, False), (4, False), (0, True), (4, True))  # (-p jobs, shared ssh connection)
#: (tool, agent) run in each mode; walvault --no-agent only serially, without sharing
RUNS = (("barman", True), ("walvault", True), ("walvault", False))


def ssh_wrapper(directory: Path, ssh_command: str, shared: bool) -> Path:
    """A directory holding an ``ssh`` that is ``ssh_command`` (the harness's key and options),
    with connection sharing when ``shared``."""
    bindir = directory / ("sshbin-shared" if shared else "sshbin")
    bindir.mkdir(exist_ok=True)
    argv = shlex.split(ssh_command)
    if shared:
        control = ["ControlMaster=auto", f"ControlPath={directory}/cm-%C", "ControlPersist=60"]
        argv += [word for option in control for word in ("-o", option)]
    real = shutil.which(argv[0]) or argv[0]
    script = bindir / "ssh"
    script.write_text(f'#!/bin/sh\nexec {shlex.join([real, *argv[1:]])} "$@"\n')
    script.chmod(0o755)
    return bindir


def loopback_sshd(bench: Bench, directory: Path) -> tuple[Any, str | None]:
    """A started sshd of the test harness whose sessions find both tools on PATH, or
    (None, why it cannot run here)."""
    harness_module = test_harness("sshharness")  # an unprivileged sshd, throwaway keys
    why = harness_module.sshd_available()
    if why is not None:
        return None, why
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation
    bins = [p.parent for p in (bench.tools.barman, bench.tools.walvault) if p is not None]
    remote_path = ":".join([*(str(b) for b in bins), "/usr/local/bin", "/usr/bin", "/bin"])
    sshd = harness_module.Sshd(directory, path=remote_path)
    sshd.start()
    return sshd, None


def ssh_restore(bench: Bench) -> None:
    detail: dict[str, Any] = {}
    bench.results.details["ssh_restore"] = detail
    names = bench.segments[: bench.params.ssh_segments]
    detail["segments"] = len(names)
    work = bench.work / "ssh"
    work.mkdir()
    homes = archived_homes(bench, names, detail)
    sshd, why = loopback_sshd(bench, work / "sshd")
    if why is not None:
        detail["skipped"] = why
        bench.results.errors.append(f"ssh: {why}")
        remove_homes(homes)
        return
    results: dict[str, Replay] = {}
    try:
        target = work / "RECOVERYXLOG"
        for jobs, shared in MODES:
            wrapper = ssh_wrapper(work, sshd.ssh_command, shared)
            path = f"{wrapper}:{os.environ.get('PATH', '')}"
            for tool, agent in RUNS:
                if not agent and (jobs or shared):
                    continue
                key = replay_key(tool, jobs, shared, agent)
                if tool not in homes:
                    continue  # the table says "not installed"/"not built"
                spool = bench.new_spool()
                ssh = (sshd.user, sshd.port)
                cmd = f"PATH={shlex.quote(path)} " + restore_command(
                    bench.tools, homes[tool], jobs, spool, ssh, agent=agent
                )
                result = replay(bench.hashes, names, cmd, target)
                results[key] = result
                detail[key] = result.detail()
                if tool == "walvault":
                    detail[key]["agent"] = stop_agents(spool).detail()
                else:
                    reap_strays(str(spool))
                reap_strays(f"{work}/cm-")  # a shared connection's master outlives the calls
                shutil.rmtree(spool, ignore_errors=True)
                if result.problem:
                    bench.results.errors.append(f"ssh restore ({key}): {result.problem}")
                    continue
                log(
                    f"  over ssh, {len(names)} segments, {key:33}: {result.seconds:6.1f} s "
                    f"(first call {result.first:.3f} s, then median {result.rest_median:.3f} s)"
                )
    finally:
        sshd.stop()
        remove_homes(homes)

    def figure(key: str, what: str = "seconds") -> float | None:
        result = results.get(key)
        if result is None or result.problem:
            return None
        return {"seconds": result.seconds, "first": result.first, "rest": result.rest_median}[what]

    def add(label: str, keys: dict[str, str], note: str, what: str = "seconds") -> None:
        failed_tools = [t for t, k in keys.items() if k in results and results[k].problem]
        bench.results.add(
            Row(
                "restore over ssh",
                f"{label}: seconds",
                "s",
                "lower",
                figure(keys["barman"], what),
                figure(keys["walvault"], what),
                no_figure("barman", failed_tools, "barman" in homes),
                no_figure("walvault", failed_tools, "walvault" in homes),
                note=note,
            )
        )

    n = len(names)
    for jobs, shared in MODES:
        label = f"{n} segments over ssh" + (f", both with -p {jobs}" if jobs else ", serial")
        if shared:
            label += ", ssh connection shared"
        keys = {tool: replay_key(tool, jobs, shared) for tool in ("barman", "walvault")}
        add(label, keys, NOTES[(bool(jobs), shared)])
        if not jobs and not shared:
            add("serial: the first call", keys, NOTES["first"], "first")
            add(f"serial: the other {n - 1} calls, median", keys, NOTES["rest"], "rest")
    add(
        f"{n} segments over ssh, serial, walvault --no-agent",
        {"barman": replay_key("barman", 0), "walvault": replay_key("walvault", 0, agent=False)},
        NOTES["no-agent"],
    )


NOTES: dict[object, str] = {
    (False, False): "sum of the calls' wall times; sshd and both clients on this host "
    "(127.0.0.1), each segment checked and removed after its call; barman-wal-restore opens "
    "one ssh connection per fetch; walvault's first call starts its restore agent, which "
    "fetches through one ssh connection of its own",
    (True, False): "Barman: parallel fetch into its spool on each call; walvault: the agent "
    "keeping 4 segments ahead",
    (False, True): "the same ssh for both tools, with ControlMaster=auto and "
    "ControlPersist=60: one connection, a session per fetch",
    (True, True): "the two changes above together",
    "first": "walvault: the call that starts the agent and its ssh connection",
    "rest": "the median of the calls after the first, in the same run",
    "no-agent": "walvault-wal-restore --no-agent: one ssh connection per fetch, like "
    "barman-wal-restore (Barman column: its serial figure)",
}
