"""``diagnose``: everything a support request needs, as one JSON document, secrets masked.

What ``show-servers``, ``status`` and ``list-backups -f json`` say for every server, the global
settings, the receiver's record, the recorded gaps and forks, and facts about this host
(walvault, Python, the operating system, PostgreSQL's client programs).  Secrets never
appear: connection strings are masked by the configuration loader (``*****``), and every value
whose option name says it is a secret (``password``, ``key``, ``secret``, ``token``,
``credential``) is replaced by ``*****`` here; free text (pg_receivewal's lines, errors) has
every configured password masked out.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

from walvault.cli.context import Context

if TYPE_CHECKING:
    from walvault.config import Config, ServerConfig

MASK = "*****"
_SECRET_NAME = re.compile(r"password|secret|token|credential|(?<!kms_)key(?!_id)", re.I)


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(
        "diagnose", help="everything about this installation as JSON, secrets masked"
    )
    p.set_defaults(func=diagnose)


def mask_secrets(value: Any, secrets: list[str], name: str = "") -> Any:
    """``value`` with secret options and every string in ``secrets`` masked (pure)."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(v, secrets, name) for v in value]
    if isinstance(value, str):
        if name and _SECRET_NAME.search(name) and value not in ("", "None"):
            return MASK
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    return value


def _passwords(config: Config) -> list[str]:
    from walvault.conninfo import SECRET_KEYS, parse_conninfo

    found: list[str] = []
    for server in config.servers.values():
        for conninfo in server.secrets():
            try:
                params = parse_conninfo(conninfo)
            except ValueError:
                continue
            found += [params[key] for key in SECRET_KEYS if params.get(key)]
        found += [str(v) for k, v in server.storage_options if _SECRET_NAME.search(k) and v]
    return sorted(set(found), key=len, reverse=True)


def _system() -> dict[str, Any]:
    import os
    import platform
    import sys

    from walvault import __version__
    from walvault.privileges import current_user

    return {
        "walvault_version": __version__,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "user": current_user(),
        "uid": os.geteuid(),
    }


def _programs(server: ServerConfig) -> dict[str, str | None]:
    import shutil

    return {
        program: shutil.which(program, path=server.search_path)
        for program in ("pg_receivewal", "pg_basebackup", "pg_verifybackup")
    }


def _server(server: ServerConfig) -> dict[str, Any]:
    from walvault.cli import backup as backup_cli
    from walvault.cli.servers import server_rows
    from walvault.cli.status import collect, rows_as_json

    entry: dict[str, Any] = {
        "config": dict(server_rows(server, False)),
        "msg_list": list(server.messages),
    }
    entry["programs"] = _programs(server)
    if server.disabled:
        return entry
    entry["status"] = rows_as_json(collect(server))
    try:
        from walvault.backup.catalog import server_backups

        entry["backups"] = [backup_cli._as_json(s) for s in server_backups(server)]
    except Exception as exc:  # a part that cannot be read is said, the rest still shown
        entry["backups"] = f"cannot read: {exc}"
    return entry


def diagnose(ctx: Context, _args: argparse.Namespace) -> int:
    """Print the document."""
    config = ctx.config
    document: dict[str, Any] = {
        "global": {
            "config": {
                "config_file": config.path,
                "files": list(config.files),
                "walvault_home": config.walvault_home,
                "walvault_user": config.walvault_user,
                "walvault_lock_directory": config.lock_directory,
                "log_file": config.log_file,
                "log_level": config.log_level,
                "restore_socket": config.restore_socket,
                "restore_users": list(config.restore_users),
                "warnings": list(config.warnings),
            },
            "system_info": _system(),
        },
        "servers": {name: _server(server) for name, server in config.servers.items()},
    }
    ctx.emit_json(mask_secrets(document, _passwords(config)))
    return 0
