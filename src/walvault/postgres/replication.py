"""Replication-protocol commands: IDENTIFY_SYSTEM, TIMELINE_HISTORY, physical slots."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import errors as pgerrors

from walvault.errors import WalvaultError
from walvault.wal.names import parse_lsn


@dataclass(frozen=True)
class SystemIdentity:
    """What ``IDENTIFY_SYSTEM`` answers."""

    system_identifier: str
    timeline: int
    xlogpos: int


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode()
    return str(value)


def identify_system(conn: psycopg.Connection[tuple[object, ...]]) -> SystemIdentity:
    """Run ``IDENTIFY_SYSTEM`` on a replication connection."""
    row = conn.execute("IDENTIFY_SYSTEM").fetchone()
    if row is None:
        raise WalvaultError("IDENTIFY_SYSTEM returned no row")
    return SystemIdentity(_text(row[0]), int(_text(row[1])), parse_lsn(_text(row[2])))


def timeline_history(conn: psycopg.Connection[tuple[object, ...]], tli: int) -> bytes:
    """The content of timeline ``tli``'s history file, as the server sends it.

    ``TIMELINE_HISTORY`` answers one row (file name, content); timeline 1 has no history
    file, so callers never ask for it.
    """
    if not isinstance(tli, int) or isinstance(tli, bool) or not 2 <= tli <= 0xFFFFFFFF:
        raise ValueError(f"no history file for timeline {tli!r}")
    try:
        row = conn.execute(f"TIMELINE_HISTORY {tli}").fetchone()
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        raise WalvaultError(f"TIMELINE_HISTORY {tli} failed: {reason}") from None
    if row is None or len(row) < 2:
        raise WalvaultError(f"TIMELINE_HISTORY {tli} returned no file")
    content = row[1]
    if isinstance(content, bytes | bytearray | memoryview):
        return bytes(content)
    return str(content).encode()


class SlotExists(WalvaultError):
    """The replication slot already exists."""


class SlotMissing(WalvaultError):
    """The replication slot does not exist."""


class SlotInUse(WalvaultError):
    """The replication slot is active."""


def create_physical_slot(
    conn: psycopg.Connection[tuple[object, ...]], slot_name: str, server: str
) -> None:
    """Create a physical slot that reserves WAL at once (``RESERVE_WAL``).

    Unlike a slot created without it, the server keeps WAL from this moment on, even before
    the first pg_receivewal connects. ``slot_name`` has been validated (``[0-9a-z_]+``).
    """
    try:
        conn.execute(f"CREATE_REPLICATION_SLOT {slot_name} PHYSICAL RESERVE_WAL")
    except pgerrors.DuplicateObject:
        raise SlotExists(f"Replication slot '{slot_name}' already exists") from None
    except pgerrors.ConfigurationLimitExceeded:
        raise WalvaultError(
            f"All replication slots for server '{server}' are in use\n"
            "Free one or increase the max_replication_slots value on your PostgreSQL server."
        ) from None
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        raise WalvaultError(
            f"Cannot create replication slot '{slot_name}' on server '{server}': {reason}"
        ) from None


def drop_physical_slot(
    conn: psycopg.Connection[tuple[object, ...]], slot_name: str, server: str
) -> None:
    """Drop a physical slot; refuse (SlotInUse) while a receiver is attached."""
    try:
        conn.execute(f"DROP_REPLICATION_SLOT {slot_name}")
    except pgerrors.UndefinedObject:
        raise SlotMissing(f"Replication slot '{slot_name}' does not exist") from None
    except pgerrors.ObjectInUse:
        raise SlotInUse(
            f"Cannot drop replication slot '{slot_name}' on server '{server}' because it is in use."
        ) from None
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        raise WalvaultError(
            f"Cannot drop replication slot '{slot_name}' on server '{server}': {reason}"
        ) from None
