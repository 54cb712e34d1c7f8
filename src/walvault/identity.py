"""``identity.json``: the system identifier and major version of the cluster a server's
archive belongs to (Barman's format), recorded on first contact.

Free of psycopg: archive-wal and put-wal read it on every run without ever connecting.
It is validated when read: a JSON object whose ``systemid`` (and ``version``, when present)
are decimal numbers.  A malformed or unreadable file is a
:class:`~walvault.errors.StateFileError`: nothing is archived or checked against a guess.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from walvault.errors import StateFileError, describe_os_error

if TYPE_CHECKING:
    from walvault.config import ServerConfig


def read_identity(server: ServerConfig) -> dict[str, str] | None:
    """``identity.json`` as text values, or None before the first contact."""
    path = server.identity_path
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(path, f"unreadable: {describe_os_error(exc)}") from None
    except ValueError:
        raise StateFileError(path, "malformed: not valid JSON") from None
    if not isinstance(data, dict):
        raise StateFileError(path, "malformed: not a JSON object")
    values = {str(k): str(v) for k, v in data.items()}
    if not _is_number(values.get("systemid", "")):
        raise StateFileError(path, "malformed: 'systemid' is not a number")
    if "version" in values and not all(_is_number(p) for p in values["version"].split(".")):
        raise StateFileError(path, "malformed: 'version' is not a version number")
    return values


def _is_number(text: str) -> bool:
    """ASCII decimal digits only."""
    return text.isascii() and text.isdecimal()


def stored_system_identifier(server: ServerConfig) -> int | None:
    """The recorded system identifier, or None before the first contact."""
    identity = read_identity(server)
    return None if identity is None else int(identity["systemid"])


def write_identity(server: ServerConfig, system_identifier: int | str, version: int | str) -> None:
    """Record (durably) which cluster this server's archive belongs to."""
    from walvault.fs import durable_replace_bytes, ensure_dir

    ensure_dir(server.backup_directory)
    payload = {"systemid": str(system_identifier), "version": str(version)}
    text = json.dumps(payload, indent=4, sort_keys=True) + "\n"
    durable_replace_bytes(server.identity_path, text.encode())
