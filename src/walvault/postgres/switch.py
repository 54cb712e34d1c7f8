"""Closing the current WAL segment of a server (``pg_switch_wal``), optionally after CHECKPOINT."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from walvault.errors import WalvaultError
from walvault.postgres.connection import describe_error
from walvault.postgres.status import Conn

_CURRENT_FILE = "SELECT pg_walfile_name(pg_current_wal_insert_lsn())"


class CheckpointPrivilegesRequired(WalvaultError):
    """The user may not run CHECKPOINT (needs superuser, or ``pg_checkpoint`` on PG 15+)."""


class SwitchPrivilegesRequired(WalvaultError):
    """The user may not execute ``pg_switch_wal()``."""


@dataclass(frozen=True)
class SwitchResult:
    """What a switch did: ``closed_wal`` is the closed segment, ``""`` when none was needed.

    On a standby nothing is attempted: ``in_recovery`` is true and ``closed_wal`` is None.
    """

    in_recovery: bool
    closed_wal: str | None


def _scalar(conn: Conn, query: str) -> object:
    row = conn.execute(query).fetchone()
    assert row is not None, query
    return row[0]


def current_user(conn: Conn) -> str:
    """The role the connection runs as."""
    return str(_scalar(conn, "SELECT current_user"))


def is_in_recovery(conn: Conn) -> bool:
    """True on a standby (or a server in archive recovery)."""
    return bool(_scalar(conn, "SELECT pg_is_in_recovery()"))


def has_checkpoint_privileges(conn: Conn) -> bool:
    """Superuser, or a member of ``pg_checkpoint`` (which exists from PostgreSQL 15)."""
    return bool(
        _scalar(
            conn,
            "SELECT usesuper OR (current_setting('server_version_num')::int >= 150000 "
            "AND pg_has_role(current_user, 'pg_checkpoint', 'MEMBER')) "
            "FROM pg_user WHERE usename = current_user",
        )
    )


def can_switch_wal(conn: Conn) -> bool:
    """True when the user may execute ``pg_switch_wal()`` (superusers always may)."""
    return bool(_scalar(conn, "SELECT has_function_privilege('pg_switch_wal()', 'EXECUTE')"))


def checkpoint(conn: Conn) -> None:
    """Run ``CHECKPOINT``; raises :class:`CheckpointPrivilegesRequired` when not allowed."""
    if not has_checkpoint_privileges(conn):
        raise CheckpointPrivilegesRequired(
            "walvault switch-wal --force requires superuser rights or the 'pg_checkpoint' role "
            f"(user '{current_user(conn)}')"
        )
    try:
        conn.execute("CHECKPOINT")
    except psycopg.Error as exc:
        raise WalvaultError(f"CHECKPOINT failed: {describe_error(exc, '')}") from None


def switch_wal(conn: Conn, *, force: bool = False) -> SwitchResult:
    """Close the current segment, comparing the insert position's file before and after.

    ``pg_switch_wal()`` does nothing when no WAL was written since the last switch, and its
    result alone cannot tell that case apart, so the file under the insert position is read
    before and after: when it moved on, the one before is the segment that was closed.
    With ``force`` a CHECKPOINT runs first (see :func:`checkpoint`), so there is always WAL
    to close. On a standby nothing is run.
    """
    if is_in_recovery(conn):
        return SwitchResult(in_recovery=True, closed_wal=None)
    if force:
        checkpoint(conn)
    if not can_switch_wal(conn):
        user = current_user(conn)
        raise SwitchPrivilegesRequired(
            f"user '{user}' may not execute pg_switch_wal(): use a superuser or run "
            f"GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {user}"
        )
    try:
        before = str(_scalar(conn, _CURRENT_FILE))
        conn.execute("SELECT pg_walfile_name(pg_switch_wal())")
        after = str(_scalar(conn, _CURRENT_FILE))
    except psycopg.Error as exc:
        raise WalvaultError(f"pg_switch_wal() failed: {describe_error(exc, '')}") from None
    return SwitchResult(in_recovery=False, closed_wal=before if before < after else "")
