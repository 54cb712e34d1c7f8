"""Section `ssh`: restore_command over ssh, barman-wal-restore against walvault-wal-restore.

Both clients talk to the same throwaway sshd on 127.0.0.1 (the test suite's harness,
tests/sshharness.py) through the same ``ssh``: a wrapper first on PATH that adds the
harness's key and options, since barman-wal-restore has no option for them.  Each tool reads
its own zstd archive, built by its own archive-wal.  Serial, then with ``-p 4`` (Barman's
parallel peek-and-fetch into its spool; walvault's continuous prefetcher); each once with
one ssh connection per fetch, and once with OpenSSH's connection sharing (``ControlMaster``,
``ControlPersist``) in the wrapper, which either tool's users can configure (README).
"""

from __future__ import annotations

import importlib
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from wvbench.common import HERE, log
from wvbench.getwal import archived_homes, remove_homes, replay, replay_key
from wvbench.homes import restore_command
from wvbench.report import Row
from wvbench.runner import Bench, no_figure
from wvbench.tools import reap_strays

MODES = ((0, False), (4, False), (0, True), (4, True))  # (-p jobs, shared ssh connection)


def harness() -> Any:
    """tests/sshharness.py: an unprivileged sshd on a free loopback port, throwaway keys."""
    tests = HERE.parent / "tests"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    return importlib.import_module("sshharness")


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
    harness_module = harness()
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
    seconds: dict[str, float | None] = {}
    failed: dict[str, str] = {}
    try:
        target = work / "RECOVERYXLOG"
        for jobs, shared in MODES:
            wrapper = ssh_wrapper(work, sshd.ssh_command, shared)
            path = f"{wrapper}:{os.environ.get('PATH', '')}"
            for tool in ("barman", "walvault"):
                key = replay_key(tool, jobs, shared)
                if tool not in homes:
                    continue  # the table says "not installed"/"not built"
                spool = work / f"spool-{tool}-{jobs}"
                ssh = (sshd.user, sshd.port)
                cmd = f"PATH={shlex.quote(path)} " + restore_command(
                    bench.tools, homes[tool], jobs, spool, ssh
                )
                start = time.perf_counter()
                elapsed, maxrss, problem = replay(bench, names, cmd, target)
                detail[key] = {
                    "seconds": elapsed,
                    "loop_seconds": time.perf_counter() - start,
                    "maxrss_kib": maxrss,
                    "error": problem,
                }
                reap_strays(str(spool))  # walvault's prefetcher outlives the last call
                reap_strays(f"{work}/cm-")  # so does a shared connection's master
                shutil.rmtree(spool, ignore_errors=True)
                if problem:
                    failed[key] = problem
                    bench.results.errors.append(f"ssh restore ({key}): {problem}")
                    continue
                seconds[key] = elapsed
                log(f"  over ssh, {len(names)} segments, {key:22}: {elapsed:6.1f} s")
    finally:
        sshd.stop()
        remove_homes(homes)
    for jobs, shared in MODES:
        label = f"{len(names)} segments over ssh" + (
            f", both with -p {jobs}" if jobs else ", serial"
        )
        if shared:
            label += ", ssh connection shared"
        keys = {tool: replay_key(tool, jobs, shared) for tool in ("barman", "walvault")}
        failed_tools = [tool for tool, key in keys.items() if key in failed]
        bench.results.add(
            Row(
                "restore over ssh",
                f"{label}: seconds",
                "s",
                "lower",
                seconds.get(keys["barman"]),
                seconds.get(keys["walvault"]),
                no_figure("barman", failed_tools, "barman" in homes),
                no_figure("walvault", failed_tools, "walvault" in homes),
                note=NOTES[(bool(jobs), shared)],
            )
        )


NOTES = {
    (False, False): "sum of the calls' wall times; sshd and both clients on this host "
    "(127.0.0.1), one ssh connection per fetch, each segment checked and removed after its call",
    (True, False): "Barman: parallel fetch into its spool on each call; walvault: a "
    "prefetcher keeping 4 segments ahead",
    (False, True): "the same ssh for both tools, with ControlMaster=auto and "
    "ControlPersist=60: one connection, a session per fetch",
    (True, True): "the two changes above together",
}
