"""Recovery targets: validated against the backup and the archive, rendered as settings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from walvault.errors import WalvaultError
from walvault.wal.names import format_lsn, parse_lsn

ACTIONS = ("pause", "promote", "shutdown")


@dataclass(frozen=True)
class RecoveryTarget:
    """At most one target, plus timeline, action and inclusiveness."""

    time: datetime | None = None
    xid: str | None = None
    lsn: int | None = None
    name: str | None = None
    immediate: bool = False
    tli: str | None = None  # "latest", "current" or a number
    action: str | None = None
    exclusive: bool = False

    @property
    def is_pitr(self) -> bool:
        """True when recovery stops before the end of the archived WAL."""
        return any(
            (self.time is not None, self.xid, self.lsn is not None, self.name, self.immediate)
        )

    def settings(self) -> list[tuple[str, str]]:
        """``postgresql.auto.conf`` settings (values quoted for the file)."""
        out: list[tuple[str, str]] = []
        if self.time is not None:
            out.append(("recovery_target_time", conf_quote(self.time.isoformat(sep=" "))))
        if self.xid:
            out.append(("recovery_target_xid", conf_quote(self.xid)))
        if self.lsn is not None:
            out.append(("recovery_target_lsn", conf_quote(format_lsn(self.lsn))))
        if self.name:
            out.append(("recovery_target_name", conf_quote(self.name)))
        if self.immediate:
            out.append(("recovery_target", "'immediate'"))
        if self.exclusive and (self.time is not None or self.xid or self.lsn is not None):
            out.append(("recovery_target_inclusive", "false"))
        out.append(("recovery_target_timeline", conf_quote(self.tli or "latest")))
        if self.action:
            out.append(("recovery_target_action", conf_quote(self.action)))
        return out


def conf_quote(value: str) -> str:
    """``value`` as a quoted string of a PostgreSQL configuration file.

    PostgreSQL's reader undoes ``''`` and the backslash escapes (``\\\\``, ``\\n``...), and a
    quoted value cannot span lines: backslashes, quotes and line breaks are escaped, so any
    text (a path with a quote or a backslash) reads back exactly.
    """
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r")
    return "'" + escaped + "'"


_XID_RE = re.compile(r"\d{1,20}")
_TLI_RE = re.compile(r"latest|current|\d{1,10}")


def parse_target(
    *,
    time: str | None = None,
    xid: str | None = None,
    lsn: str | None = None,
    name: str | None = None,
    immediate: bool = False,
    tli: str | None = None,
    action: str | None = None,
    exclusive: bool = False,
) -> tuple[RecoveryTarget, list[str]]:
    """Validate the command-line targets; return the target and warnings."""
    given = [t for t in (time, xid, lsn, name) if t is not None] + (["x"] if immediate else [])
    if len(given) > 1:
        raise WalvaultError("You cannot specify multiple targets for the recovery operation")
    warnings: list[str] = []
    when = None
    if time is not None:
        try:
            when = datetime.fromisoformat(time)
        except ValueError:
            raise WalvaultError(
                f"invalid --target-time '{time}': accepted: an ISO 8601 time such as "
                "'2026-11-25 16:00:00+00:00'"
            ) from None
        if when.tzinfo is None:
            when = when.astimezone()
            warnings.append(
                "No time zone has been specified through '--target-time': the time zone of "
                f"this host was assumed ({when.isoformat(sep=' ')})"
            )
    if xid is not None and not _XID_RE.fullmatch(xid):
        raise WalvaultError(f"invalid --target-xid '{xid}': accepted: a transaction id (digits)")
    target_lsn = None
    if lsn is not None:
        try:
            target_lsn = parse_lsn(lsn)
        except ValueError:
            raise WalvaultError(f"invalid --target-lsn '{lsn}': accepted: X/X (hex)") from None
    if name is not None and (not name or len(name) > 63 or "\n" in name):
        raise WalvaultError("invalid --target-name: accepted: a restore point name (1-63 chars)")
    if tli is not None and not _TLI_RE.fullmatch(tli.lower()):
        raise WalvaultError(f"invalid --target-tli '{tli}': accepted: latest, current, a number")
    if action is not None:
        if action not in ACTIONS:
            raise WalvaultError(
                f"invalid --target-action '{action}': accepted: pause, promote, shutdown"
            )
        if not given:
            raise WalvaultError(
                "--target-action needs a recovery target (time, xid, lsn, name, immediate)"
            )
    if exclusive and not (time or xid or lsn):
        raise WalvaultError("--exclusive applies only to a time, xid or lsn target")
    target = RecoveryTarget(
        time=when,
        xid=xid,
        lsn=target_lsn,
        name=name,
        immediate=immediate,
        tli=tli.lower() if tli else None,
        action=action,
        exclusive=exclusive,
    )
    return target, warnings
