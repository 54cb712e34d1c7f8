"""``list-servers`` and ``show-servers``: what is configured, with secrets masked."""

from __future__ import annotations

import argparse
from typing import Any

from walvault.cli.context import Context


def register(sub: Any) -> None:
    """Add the commands to the CLI."""
    p = sub.add_parser("list-servers", help="list the configured servers")
    p.add_argument("--minimal", action="store_true", help="print only the server names")
    p.set_defaults(func=list_servers)
    p = sub.add_parser(
        "show-servers",
        aliases=["show-server"],
        help="show the resolved configuration of servers",
    )
    p.add_argument("server_name", nargs="+", help="server names, or 'all'")
    p.set_defaults(func=show_servers)


def list_servers(ctx: Context, args: argparse.Namespace) -> int:
    """One line per server: ``name - description``, with its state when not plain active."""
    servers = ctx.config.servers
    if ctx.output_format == "json":
        ctx.emit_json(
            {
                name: {"description": s.description, "active": s.active, "disabled": s.disabled}
                for name, s in servers.items()
            }
        )
        return 0
    for name, server in servers.items():
        if args.minimal:
            ctx.result(name)
            continue
        state = ""
        if server.disabled:
            state = " (WARNING: disabled)"
        elif not server.active:
            state = " (inactive)"
        ctx.result(f"{name} - {server.description or ''}{state}".rstrip())
    return 0


def show_servers(ctx: Context, args: argparse.Namespace) -> int:
    """Every resolved option of each server, sorted, as ``\\tkey: value`` lines."""
    servers = ctx.servers(args.server_name)
    if ctx.output_format == "json":
        ctx.emit_json(
            {s.name: {**dict(server_rows(s, False)), "msg_list": list(s.messages)} for s in servers}
        )
        return 0
    for server in servers:
        state = " (WARNING: disabled)" if server.disabled else ""
        state = state or (" (inactive)" if not server.active else "")
        ctx.result(f"Server {server.name}{state}:")
        for key, value in server_rows(server):
            ctx.result(f"\t{key}: {value}")
    return 0


def server_rows(server: Any, with_messages: bool = True) -> list[tuple[str, str]]:
    rows = [
        *server.shown,
        ("active", str(server.active)),
        ("disabled", str(server.disabled)),
        ("config_file", str(server.config_file)),
        ("name", server.name),
        ("walvault_home", server.walvault_home),
        ("walvault_lock_directory", server.lock_directory),
    ]
    rows = list(dict(rows).items())
    rows.sort()
    if with_messages:
        rows += [("msg_list", m) for m in server.messages]
    return rows
