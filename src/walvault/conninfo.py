"""libpq connection strings: parsing with libpq's own rules, masking secrets, adding defaults."""

from __future__ import annotations

# psycopg is imported inside the functions: importing it costs ~80 ms, which commands that
# never parse a connection string (get-wal, the restore client) must not pay.

#: Keys whose values are secrets and never shown.
SECRET_KEYS = frozenset({"password", "sslpassword"})
MASK = "*****"
#: What libpq's own messages about a connection string put in double quotes.
_LIBPQ_QUOTES = frozenset({"=", "]", ":", "/"})


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """Parse a key=value or URI conninfo with libpq's rules.

    Raises :class:`ValueError` with libpq's reason, without the pieces of the string libpq
    quotes in it (see :func:`_unquoted_reason`), so a password in it cannot leak.
    """
    from psycopg import Error as PsycopgError
    from psycopg.conninfo import conninfo_to_dict

    try:
        parsed = conninfo_to_dict(conninfo)
    except PsycopgError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unparsable"
        raise ValueError(f"invalid connection string: {_unquoted_reason(reason)}") from None
    return {key: str(value) for key, value in parsed.items() if value is not None}


def _unquoted_reason(reason: str) -> str:
    """libpq's reason with everything from its first quoted piece of the string masked.

    libpq quotes what it could not parse, which may be a password or a whole URI:
    ``missing "=" after "passwordhunter2" in connection info string``.  The separators libpq
    itself quotes (``"="``, ``"]"``, ``":"``, ``"/"``) stay; from any other quoted piece on,
    the rest becomes ``"*****"`` (a quote inside a secret could shift what looks quoted).
    """
    parts = reason.split('"')
    kept = [parts[0]]
    for index in range(1, len(parts), 2):
        quoted = parts[index]
        if quoted not in _LIBPQ_QUOTES or index + 1 == len(parts):
            kept.append(f'"{MASK}"')
            break
        kept.append(f'"{quoted}"{parts[index + 1]}')
    return "".join(kept).rstrip()


def mask_conninfo(conninfo: str) -> str:
    """Return ``conninfo`` with every secret replaced by ``*****`` (keys sorted for stability)."""
    from psycopg.conninfo import make_conninfo

    try:
        params = parse_conninfo(conninfo)
    except ValueError:
        return "<invalid connection string>"
    return make_conninfo(
        "", **{key: (MASK if key in SECRET_KEYS else value) for key, value in params.items()}
    )


def with_defaults(conninfo: str, **defaults: str) -> str:
    """Add each of ``defaults`` to ``conninfo`` only where the user did not set it."""
    from psycopg.conninfo import make_conninfo

    params = parse_conninfo(conninfo)
    for key, value in defaults.items():
        params.setdefault(key, value)
    return make_conninfo("", **params)


def with_overrides(conninfo: str, **overrides: str) -> str:
    """Set each of ``overrides`` in ``conninfo``, replacing what the user set."""
    from psycopg.conninfo import make_conninfo

    params = parse_conninfo(conninfo)
    params.update(overrides)
    return make_conninfo("", **params)


#: What a physical replication connection sends: ``replication=true``, and the database
#: name ``replication``.  libpq looks ``.pgpass`` up by the database name it is given (the
#: user name when none is), with no special case for replication, and a physical walsender
#: ignores the database; pg_receivewal, pg_basebackup and the walreceiver all replace the
#: user's ``dbname`` with ``replication``, so that the ``.pgpass`` line PostgreSQL documents
#: for replication (database field ``replication``) matches.  walvault's own replication
#: connections (IDENTIFY_SYSTEM, slots, TIMELINE_HISTORY) do the same.
PHYSICAL_REPLICATION = {"replication": "true", "dbname": "replication"}


def physical_replication(conninfo: str) -> str:
    """``conninfo`` as a physical replication connection (see :data:`PHYSICAL_REPLICATION`)."""
    return with_overrides(conninfo, **PHYSICAL_REPLICATION)


def mask_text(text: str, conninfos: list[str]) -> str:
    """Remove from free text every password that appears in ``conninfos`` (for log lines)."""
    for conninfo in conninfos:
        try:
            params = parse_conninfo(conninfo)
        except ValueError:
            continue
        for key in SECRET_KEYS:
            secret = params.get(key)
            if secret:
                text = text.replace(secret, MASK)
    return text
