"""pg_basebackup: its command line (built in one place, password kept out of argv) and its run."""

from __future__ import annotations

import collections
import logging
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from walvault.backup.info import Tablespace
from walvault.backup.progress import Progress
from walvault.config import ServerConfig
from walvault.conninfo import mask_text
from walvault.subprocesses import ClientCommand, client_connection, start_client
from walvault.wal.names import parse_lsn

log = logging.getLogger("walvault.backup")
BASEBACKUP_NAMES = ("pg_basebackup",)
_END_RE = re.compile(r"write-ahead log end point: ([0-9A-Fa-f]+/[0-9A-Fa-f]+)")
#: ``--progress``'s line: ``NNN/TTT kB (NN%), 0/1 tablespace`` (TTT is its estimate)
PROGRESS_RE = re.compile(r"(\d+)/(\d+) kB")
KEPT_LINES = 20


class BaseBackupCommand(ClientCommand):
    """argv and the extra environment for pg_basebackup."""


def _escape_mapping(path: str) -> str:
    return path.replace("=", "\\=")


def build_basebackup_command(
    server: ServerConfig,
    program_path: str,
    backup_dir: str,
    tablespaces: list[Tablespace],
    incremental: str | None = None,
    progress: bool = False,
) -> BaseBackupCommand:
    """``pg_basebackup --dbname=... -v --no-password --pgdata=<backup_dir>/data --no-slot
    --wal-method=none [--checkpoint=fast] [--max-rate=<bandwidth_limit>k]
    [--tablespace-mapping=OLD=<backup_dir>/<oid>] [--incremental=<parent's manifest>]``.

    Tablespaces are mapped into the backup directory (Barman's ``base/<id>/<oid>``), so a
    plain-format copy never writes into the server's own tablespace paths.
    """
    conninfo = server.streaming_conninfo
    assert conninfo, "a server without a streaming conninfo cannot be backed up"
    dsn, env, _ = client_connection(server, conninfo, server.streaming_backup_name)
    argv = [
        program_path,
        f"--dbname={dsn}",
        "-v",
        "--no-password",
        f"--pgdata={os.path.join(backup_dir, 'data')}",
        "--no-slot",
        "--wal-method=none",
    ]
    if server.immediate_checkpoint:
        argv.append("--checkpoint=fast")
    if server.bandwidth_limit:
        argv.append(f"--max-rate={server.bandwidth_limit}k")
    for space in tablespaces:
        target = os.path.join(backup_dir, str(space.oid))
        argv.append(
            f"--tablespace-mapping={_escape_mapping(space.location)}={_escape_mapping(target)}"
        )
    if incremental is not None:
        argv.append(f"--incremental={incremental}")
    if progress:  # only for a progress display: its lines are not logged
        argv.append("--progress")
    env["LC_MESSAGES"] = "C"  # its progress lines are parsed
    return BaseBackupCommand(tuple(argv), env)


@dataclass(frozen=True)
class BaseBackupRun:
    """How pg_basebackup ended: exit code, its last lines (masked), its reported end LSN."""

    returncode: int
    last_lines: tuple[str, ...]
    end_lsn: int | None

    def failure(self) -> str:
        """One line for the user and for backup.info's ``error``."""
        how = (
            f"terminated by signal {-self.returncode}"
            if self.returncode < 0
            else f"exit code {self.returncode}"
        )
        errors = [line for line in self.last_lines if "error" in line.lower()] or list(
            self.last_lines[-3:]
        )
        detail = " / ".join(line.strip() for line in errors[-3:] if line.strip())
        return f"pg_basebackup failed ({how})" + (f": {detail}" if detail else "")


def run_basebackup(
    server: ServerConfig,
    command: BaseBackupCommand,
    on_line: Callable[[str], None],
    progress: Progress | None = None,
) -> BaseBackupRun:
    """Run pg_basebackup to its end; every output line (masked) goes to the log and ``on_line``
    but ``--progress``'s, which go to ``progress``.

    An interruption (KeyboardInterrupt) stops pg_basebackup before propagating.
    """
    log.info("%s: running %s", server.name, command.shown())
    secrets = server.secrets()
    lines: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)
    end_lsn = None
    proc = start_client(command)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = mask_text(raw.rstrip("\n"), secrets)
            if progress is not None and (counted := PROGRESS_RE.search(line)):
                progress.set_total(int(counted.group(2)) * 1024)
                progress.add(int(counted.group(1)) * 1024 - progress.done)
                continue
            if not line.strip():
                continue
            log.info("%s: %s", server.name, line)
            lines.append(line)
            on_line(line)
            match = _END_RE.search(line)
            if match:
                end_lsn = parse_lsn(match.group(1))
        code = proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    return BaseBackupRun(code, tuple(lines), end_lsn)
