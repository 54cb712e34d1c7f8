"""``state files``: every file walvault keeps beside the archive can be read and makes sense.

``walvault-gaps.json``, ``walvault-receiver.json``, ``identity.json``, every
``meta/<id>-backup.info`` and the archive-wal journal are read with the same validating
readers the commands use; each one that fails is named with what is wrong.  (Commands work
around a bad file where they safely can: see each reader's module.)
"""

from __future__ import annotations

from collections.abc import Callable

from walvault.archive.journal import read_journal
from walvault.backup.info import scan_backups
from walvault.checks import CheckResult
from walvault.config import ServerConfig
from walvault.errors import StateFileError, describe_os_error
from walvault.identity import read_identity
from walvault.receiver.gaps import load_gaps
from walvault.receiver.state import load_state


def problems(server: ServerConfig) -> list[str]:
    """One line per state file that cannot be used."""
    found: list[str] = []
    readers: list[Callable[[ServerConfig], object]] = [
        load_gaps,
        lambda s: load_state(s, strict=True),
        read_identity,
        read_journal,
    ]
    for reader in readers:
        try:
            reader(server)
        except StateFileError as exc:
            found.append(exc.message)
    try:
        found += [problem.message for problem in scan_backups(server)[1]]
    except OSError as exc:
        found.append(f"{server.meta_directory}: cannot be listed: {describe_os_error(exc)}")
    return found


def check_state_files(server: ServerConfig) -> CheckResult:
    """FAILED naming each unusable state file."""
    found = problems(server)
    if not found:
        return CheckResult("state files", True)
    hint = "; ".join(found) + " (what to do: 'State files' in docs/operations.md)"
    return CheckResult("state files", False, hint)
