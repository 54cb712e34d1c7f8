"""Finding Barman, walvault and PostgreSQL, and running commands with time and memory measured."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from wvbench.common import (
    BARMAN_VERSION,
    GNU_TIME,
    HERE,
    PG_MAJOR,
    BenchError,
    log,
    scratch_dir,
    tail,
)

# --------------------------------------------------------------------------- running commands


@dataclass
class Run:
    """One timed command."""

    argv: list[str]
    elapsed: float
    returncode: int | None
    maxrss_kib: int  # 0 when unknown (GNU time not available, or the command was killed)
    timed_out: bool
    cpu_seconds: float = 0.0  # user + system, the command and its children
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        what = " ".join(shlex.quote(a) for a in self.argv)
        if self.timed_out:
            return f"`{what}` did not finish within {self.elapsed:.0f} s"
        return (
            f"`{what}` exited {self.returncode}: "
            f"{tail(self.stderr) or tail(self.stdout) or '(no output)'}"
        )


def run_timed(
    argv: Sequence[str],
    *,
    stdout_path: Path | None = None,
    capture: bool = True,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Run:
    """Run ``argv`` and measure its wall time, CPU time and peak RSS.

    Peak RSS comes from GNU time (``%M``: the largest resident set of the command and the
    children it waited for). It is not taken from this process's ``wait4``: a child forked
    from this (big) Python process keeps the parent's RSS high-water mark across ``exec``,
    which would put a floor of this script's own size under every figure.
    stdout goes to ``stdout_path`` if given, else is captured (``capture``) or discarded.
    stderr is captured through a file (no pipe that could fill up while we wait). With
    ``timeout`` the whole process group is killed when it is exceeded.
    """
    scratch = scratch_dir()
    scratch.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{threading.get_ident()}"
    err_file = open(scratch / f"stderr.{tag}", "w+b")  # noqa: SIM115
    rss_path = scratch / f"rss.{tag}"
    launch = list(argv)
    if os.access(GNU_TIME, os.X_OK):
        launch = [GNU_TIME, "-f", "%M", "-o", str(rss_path), *argv]
    out_file: IO[bytes] | None = None
    try:
        if stdout_path is not None:
            out_file = open(stdout_path, "wb")  # noqa: SIM115
        elif capture:
            out_file = open(scratch / f"stdout.{os.getpid()}.{threading.get_ident()}", "w+b")  # noqa: SIM115
        stdout: Any = out_file if out_file is not None else subprocess.DEVNULL
        timed_out = threading.Event()
        start = time.perf_counter()
        proc = subprocess.Popen(
            launch,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=err_file,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        timer = None
        if timeout is not None:

            def kill() -> None:
                timed_out.set()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            # interrupted (SIGINT/SIGTERM): the command runs in its own session, so take it
            # down with us rather than leave it working in a directory about to be removed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, 0)
            proc.returncode = -signal.SIGKILL
            raise
        finally:
            if timer is not None:
                timer.cancel()
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err_file.seek(0)
        stderr = err_file.read().decode(errors="replace")
        out = ""
        if stdout_path is None and out_file is not None:
            out_file.seek(0)
            out = out_file.read().decode(errors="replace")
        maxrss = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            # GNU time writes "Command exited with non-zero status N" first when it fails
            maxrss = int(rss_path.read_text().split()[-1])
        return Run(
            argv=list(argv),
            elapsed=elapsed,
            returncode=proc.returncode,
            maxrss_kib=maxrss,
            timed_out=timed_out.is_set(),
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            stdout=out,
            stderr=stderr,
        )
    finally:
        with contextlib.suppress(OSError):
            rss_path.unlink()
        for handle in (err_file, out_file):
            if handle is not None:
                name = handle.name
                handle.close()
                if stdout_path is None or name != str(stdout_path):
                    with contextlib.suppress(OSError):
                        os.unlink(name)


def processes_mentioning(marker: str) -> list[tuple[int, list[str]]]:
    """(pid, argv) of every process whose command line mentions ``marker``."""
    found: list[tuple[int, list[str]]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if marker in " ".join(words):
            found.append((int(entry), words))
    return found


def reap_strays(marker: str, grace: float = 10.0) -> list[int]:
    """Stop the processes whose command line mentions ``marker`` (a path unique to this run).

    These are processes the bench started indirectly and that outlive the command that
    started them, e.g. walvault-wal-restore's prefetch worker. SIGTERM, then SIGKILL after
    ``grace`` seconds. Returns their PIDs.
    """
    found = [pid for pid, _ in processes_mentioning(marker) if pid != os.getpid()]
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(found)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists()]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found


# --------------------------------------------------------------------------- the tools


@dataclass
class Tools:
    pg_bindir: Path
    barman: Path | None
    barman_version: str | None
    walvault: Path | None
    walvault_version: str | None
    walvault_commands: set[str]
    wal_restore: Path | None
    wal_restore_help: str
    missing: list[str] = field(default_factory=list)

    def has(self, command: str) -> bool:
        return self.walvault is not None and command in self.walvault_commands

    def exe(self, tool: str) -> Path:
        """The ``barman`` or ``walvault`` program (the caller checked it is installed)."""
        path = self.barman if tool == "barman" else self.walvault
        assert path is not None
        return path


def find_pg_bindir() -> Path:
    candidates = [Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            candidates.append(Path(out))
    for bindir in candidates:
        postgres = bindir / "postgres"
        if not os.access(postgres, os.X_OK):
            continue
        out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True).stdout
        if re.search(rf"\(PostgreSQL\)\s+{PG_MAJOR}\.", out):
            return bindir
    raise BenchError(
        f"PostgreSQL {PG_MAJOR} server binaries not found (looked in "
        f"{', '.join(map(str, candidates))}); install postgresql-{PG_MAJOR}"
    )


def find_tools(barman_venv: Path, install_barman: bool, walvault_bindir: Path) -> Tools:
    """Barman in ``barman_venv`` (installed if asked), walvault's programs in
    ``walvault_bindir``, and PostgreSQL's binaries; what is missing is listed, not fatal."""
    missing: list[str] = []
    pg_bindir = find_pg_bindir()

    barman_path = barman_venv / "bin" / "barman"
    barman: Path | None = barman_path
    if not os.access(barman_path, os.X_OK) and install_barman:
        log(f"Barman is not installed in {barman_venv}: running bench/barman_env.sh")
        proc = subprocess.run(
            ["bash", str(HERE / "barman_env.sh"), str(barman_venv)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            missing.append(f"Barman: bench/barman_env.sh failed: {tail(proc.stderr, 5)}")
    barman_version = None
    if os.access(barman_path, os.X_OK):
        out = subprocess.run([str(barman_path), "--version"], capture_output=True, text=True).stdout
        barman_version = out.split()[0] if out.split() else None
        if barman_version != BARMAN_VERSION:
            missing.append(f"Barman in {barman_venv} is {barman_version}, not {BARMAN_VERSION}")
    else:
        missing.append(f"Barman: not installed in {barman_venv} (run bench/barman_env.sh)")
        barman = None

    bindir = walvault_bindir
    candidate = bindir / "walvault"
    walvault = candidate if os.access(candidate, os.X_OK) else None
    commands: set[str] = set()
    walvault_version = None
    if walvault is None:
        missing.append(f"walvault: no `walvault` executable in {bindir}")
    else:
        proc = subprocess.run([str(walvault), "--help"], capture_output=True, text=True)
        # the sub-commands are listed as "    name   help text" under "COMMAND"
        commands = set(re.findall(r"^ {4}([a-z][a-z0-9-]+)", proc.stdout, flags=re.M))
        ver = subprocess.run([str(walvault), "--version"], capture_output=True, text=True)
        walvault_version = (ver.stdout or ver.stderr).strip() or None
        for command in ("archive-wal", "get-wal"):
            if command not in commands:
                missing.append(f"walvault {command}: not built yet (`walvault --help` lacks it)")

    wal_restore: Path | None = bindir / "walvault-wal-restore"
    wal_restore_help = ""
    if not os.access(bindir / "walvault-wal-restore", os.X_OK):
        wal_restore = None
    if wal_restore is not None:
        proc = subprocess.run([str(wal_restore), "--help"], capture_output=True, text=True)
        if proc.returncode == 0 and "usage" in proc.stdout.lower():
            wal_restore_help = proc.stdout
        else:
            wal_restore = None
    if wal_restore is None:
        missing.append("walvault-wal-restore: not built yet (no working `--help`)")
    elif not has_local_mode(wal_restore_help):
        missing.append("walvault-wal-restore: no local mode ('local' host) in its --help")
    return Tools(
        pg_bindir=pg_bindir,
        barman=barman,
        barman_version=barman_version,
        walvault=walvault,
        walvault_version=walvault_version,
        walvault_commands=commands,
        wal_restore=wal_restore,
        wal_restore_help=wal_restore_help,
        missing=missing,
    )


def has_local_mode(wal_restore_help: str) -> bool:
    """walvault-wal-restore's local mode: the host argument 'local' (no ssh)."""
    return "'local'" in wal_restore_help
