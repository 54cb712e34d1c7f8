"""Section `sshpush`: archive_command over ssh, barman-wal-archive against walvault-wal-archive.

Both clients push the same real 16 MiB segments (the bench pool) into their own server home
on this host (``archiver = on``: put-wal lands them in ``incoming/``), through the same
sshd on 127.0.0.1 (tests/sshharness.py) and the same ``ssh``: a wrapper first on PATH with
the harness's key, since barman-wal-archive has no option for it.  Each tool is called as
PostgreSQL's archiver calls it: once per segment, in order, the next call only after the
previous one exited 0 (``.ready`` renamed to ``.done``), with every segment's ``.ready`` in
``archive_status`` from the start -- a backlog, which is when archiving speed matters.

Modes: serial, one ssh connection per call; serial through one shared ssh connection
(OpenSSH ``ControlMaster`` in the wrapper, which either tool's users can configure); and in
parallel: ``barman-wal-archive -p 4`` (Barman 3.20's parallel archiver) against
``walvault-wal-archive -p 4 --spool-dir`` (the archive agent, which shares its own ssh
connection).  The agent runs a second time with one file per put-wal stream, which tells
what its batching is worth.  Every segment must land in ``incoming/`` with its original
bytes (SHA-256), or the mode's figure is an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from wvbench.common import log, sha256_file, tail
from wvbench.homes import Home
from wvbench.report import Row
from wvbench.runner import Bench, no_figure
from wvbench.sshrestore import loopback_sshd, ssh_wrapper
from wvbench.tools import reap_strays

#: (key, label, -p jobs, shared ssh connection)
MODES = (
    ("serial", "serial, one ssh connection per call", 0, False),
    ("shared", "serial, ssh connection shared", 0, True),
    ("parallel", "both with -p 4", 4, False),
)
#: the walvault client with its agent shipping one file per put-wal stream
ONE_PER_STREAM = (
    "import sys\n"
    "from walvault.clients import archagent, walarchive\n"
    "archagent.BATCH_MAX = 1\n"
    "sys.exit(walarchive.main(sys.argv[1:]))\n"
)


def _pg_wal(bench: Bench, directory: Path, names: list[str]) -> Path:
    """A data directory whose pg_wal holds ``names`` (links to the pool), all ready."""
    status = directory / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    for name in names:
        os.link(bench.pool / name, directory / "pg_wal" / name)
        (status / f"{name}.ready").touch()
    return directory


def _archive(data: Path, names: list[str], argv: list[str], env: dict[str, str]) -> float | str:
    """PostgreSQL's archiver: ``argv pg_wal/<name>`` for each name, in order; the seconds
    it took, or what went wrong."""
    status = data / "pg_wal" / "archive_status"
    start = time.perf_counter()
    for name in names:
        run = subprocess.run(
            [*argv, f"pg_wal/{name}"],
            cwd=data,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if run.returncode != 0:
            return f"{argv[0]} ... {name} exited {run.returncode}: {tail(run.stderr)}"
        (status / f"{name}.ready").rename(status / f"{name}.done")
    return time.perf_counter() - start


def _landed(bench: Bench, home: Home, names: list[str]) -> str | None:
    """None when every segment is in incoming/ with its bytes, else what is wrong."""
    incoming = home.server / "incoming"
    for name in names:
        path = incoming / name
        if not path.is_file():
            return f"{name} is not in {incoming}"
        if sha256_file(path) != bench.hashes[name]:
            return f"{path} differs from the original segment"
    return None


def _command(
    bench: Bench, tool: str, home: Home, jobs: int, spool: Path, ssh: tuple[str, int]
) -> list[str]:
    user, port = ssh
    if tool == "barman":
        client = [str(bench.tools.exe("barman").parent / "barman-wal-archive")]
        if jobs:
            client += ["-p", str(jobs), "--prefetch-cache-dir", str(spool)]
    else:
        bindir = bench.tools.exe("walvault").parent
        if tool == "walvault-1":
            client = [str(bindir / "python"), "-c", ONE_PER_STREAM]
        else:
            client = [str(bindir / "walvault-wal-archive")]
        if jobs:
            client += ["-p", str(jobs), "--spool-dir", str(spool)]
    return [*client, "-U", user, "--port", str(port), "-c", str(home.conf), "127.0.0.1", "pg"]


def ssh_push(bench: Bench) -> None:
    names = bench.segments[: bench.params.push_segments]
    detail: dict[str, Any] = {"segments": len(names)}
    bench.results.details["ssh_push"] = detail
    work = bench.work / "sshpush"
    work.mkdir()
    sshd, why = loopback_sshd(bench, work / "sshd")
    if why is not None:
        detail["skipped"] = why
        bench.results.errors.append(f"sshpush: {why}")
        return
    ready = {"barman": bench.tools.barman is not None, "walvault": bench.tools.walvault is not None}
    seconds: dict[tuple[str, str], float] = {}
    failed: dict[tuple[str, str], str] = {}
    # a short spool directory: the agent's ssh ControlPath must stay under ~90 bytes
    spools = Path(tempfile.mkdtemp(prefix="wvpush", dir="/tmp"))
    try:
        for mode, _label, jobs, shared in MODES:
            wrapper = ssh_wrapper(work, sshd.ssh_command, shared)
            env = {**os.environ, "PATH": f"{wrapper}:{os.environ.get('PATH', '')}"}
            tools = ["barman", "walvault"] + (["walvault-1"] if jobs else [])
            for tool in tools:
                if not ready["barman" if tool == "barman" else "walvault"]:
                    continue
                home = bench.new_home(
                    "barman" if tool == "barman" else "walvault",
                    "none",
                    {"archiver": "on", "streaming_archiver": "off"},
                )
                data = _pg_wal(bench, work / f"data-{tool}-{mode}", names)
                spool = spools / f"{tool}-{mode}"
                argv = _command(bench, tool, home, jobs, spool, (sshd.user, sshd.port))
                os.sync()
                outcome = _archive(data, names, argv, env)
                reap_strays(str(spool))  # walvault's agent outlives the last call
                reap_strays(f"{work}/cm-")  # so does a shared connection's master
                problem = outcome if isinstance(outcome, str) else _landed(bench, home, names)
                if problem is None and isinstance(outcome, float):
                    seconds[(tool, mode)] = outcome
                    log(
                        f"  archive over ssh, {len(names)} segments, {mode:8} {tool:10}: "
                        f"{outcome:6.1f} s ({len(names) / outcome:5.1f} segments/s)"
                    )
                else:
                    failed[(tool, mode)] = str(problem)
                    bench.results.errors.append(f"sshpush ({tool}, {mode}): {problem}")
                shutil.rmtree(home.root, ignore_errors=True)
                shutil.rmtree(data, ignore_errors=True)
    finally:
        sshd.stop()
        shutil.rmtree(spools, ignore_errors=True)
    detail["seconds"] = {f"{tool} {mode}": s for (tool, mode), s in seconds.items()}
    detail["errors"] = {f"{tool} {mode}": e for (tool, mode), e in failed.items()}
    _rows(bench, names, seconds, failed, ready)


def _rows(
    bench: Bench,
    names: list[str],
    seconds: dict[tuple[str, str], float],
    failed: dict[tuple[str, str], str],
    ready: dict[str, bool],
) -> None:
    count = len(names)

    def rate(tool: str, mode: str) -> float | None:
        elapsed = seconds.get((tool, mode))
        return count / elapsed if elapsed else None

    serial = rate("walvault", "serial")
    for mode, label, _jobs, _shared in MODES:
        broken = [t for t in ("barman", "walvault") if (t, mode) in failed]
        note = NOTES[mode]
        agent = rate("walvault", mode)
        if mode == "parallel" and agent and serial:
            note += f"; walvault: agent {agent / serial:.1f}x its serial client"
            single = rate("walvault-1", mode)
            if single:
                note += f", {agent / single:.2f}x the agent with one file per put-wal"
        bench.results.add(
            Row(
                "archive over ssh",
                f"{count} segments, {label}: segments/s",
                "seg/s",
                "higher",
                rate("barman", mode),
                agent,
                no_figure("barman", broken, ready["barman"]),
                no_figure("walvault", broken, ready["walvault"]),
                note=note,
            )
        )


NOTES = {
    "serial": "PostgreSQL's archiver loop over a backlog, 16 MiB segments, no compression; "
    "sshd and both clients on this host, one ssh connection per call",
    "shared": "the same ssh for both, with ControlMaster=auto and ControlPersist=60",
    "parallel": "Barman: up to 3 more ready segments in parallel per call; walvault: the "
    "archive agent (--spool-dir), 4 put-wal at a time, up to 4 files per stream, one shared "
    "ssh connection",
}
