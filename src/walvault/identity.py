"""``identity.json``: the system identifier and major version of the cluster a server's
archive belongs to (Barman's format), recorded on first contact.

Free of psycopg: archive-wal and put-wal read it on every run without ever connecting.
"""

from __future__ import annotations

import json

from walvault.errors import WalvaultError

# mypy reads this name as typing.TYPE_CHECKING: get-wal's serve path reads identity.json to
# check every segment's system identifier, and must not import typing or the fs module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from walvault.config import ServerConfig


def read_identity(server: ServerConfig) -> dict[str, str] | None:
    """``identity.json`` as text values, or None before the first contact."""
    try:
        with open(server.identity_path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError:
        raise WalvaultError(f"{server.identity_path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise WalvaultError(f"{server.identity_path} is not a JSON object")
    return {str(k): str(v) for k, v in data.items()}


def stored_system_identifier(server: ServerConfig) -> int | None:
    """The recorded system identifier, or None when none (or no number) is recorded."""
    value = (read_identity(server) or {}).get("systemid", "")
    return int(value) if value.isdigit() else None


def write_identity(server: ServerConfig, system_identifier: int | str, version: int | str) -> None:
    """Record (durably) which cluster this server's archive belongs to."""
    from walvault.fs import durable_replace_bytes, ensure_dir

    ensure_dir(server.backup_directory)
    payload = {"systemid": str(system_identifier), "version": str(version)}
    text = json.dumps(payload, indent=4, sort_keys=True) + "\n"
    durable_replace_bytes(server.identity_path, text.encode())
