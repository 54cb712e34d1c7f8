"""Opening psycopg connections (normal and replication) with errors that never leak secrets."""

from __future__ import annotations

import psycopg

from walvault.conninfo import mask_text, physical_replication, with_defaults
from walvault.errors import WalvaultError

DEFAULT_CONNECT_TIMEOUT = 10


class ConnectionFailed(WalvaultError):
    """A PostgreSQL connection could not be opened or a query failed."""


def describe_error(exc: BaseException, conninfo: str) -> str:
    """A one-line description of a psycopg error, with any password masked out."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return mask_text(text, [conninfo])


def connect(
    conninfo: str,
    *,
    application_name: str = "walvault",
    timeout: int = DEFAULT_CONNECT_TIMEOUT,
) -> psycopg.Connection[tuple[object, ...]]:
    """A normal (SQL) autocommit connection."""
    dsn = with_defaults(
        conninfo, application_name=application_name, connect_timeout=str(max(timeout, 2))
    )
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        raise ConnectionFailed(describe_error(exc, conninfo)) from None


def connect_replication(
    conninfo: str,
    *,
    application_name: str = "walvault",
    timeout: int = DEFAULT_CONNECT_TIMEOUT,
) -> psycopg.Connection[tuple[object, ...]]:
    """A physical replication connection (``replication=true dbname=replication``: see
    :data:`walvault.conninfo.PHYSICAL_REPLICATION`), for replication commands."""
    dsn = physical_replication(conninfo)
    dsn = with_defaults(
        dsn, application_name=application_name, connect_timeout=str(max(timeout, 2))
    )
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        raise ConnectionFailed(describe_error(exc, conninfo)) from None
