"""``list-processes`` and ``terminate-process``: walvault processes found through their locks."""

from __future__ import annotations

import argparse
from typing import Any

from walvault.cli.context import Context
from walvault.config import ServerConfig
from walvault.errors import WalvaultError

TASKS = ("receive-wal", "archive-wal", "backup", "cron")


def register(sub: Any) -> None:
    """Add the commands to the CLI."""
    p = sub.add_parser("list-processes", help="list the walvault processes of a server")
    p.add_argument("server_name")
    p.set_defaults(func=list_processes)
    p = sub.add_parser("terminate-process", help="stop a walvault process of a server")
    p.add_argument("server_name")
    p.add_argument("task", choices=TASKS)
    p.set_defaults(func=terminate_process)


def list_processes(ctx: Context, args: argparse.Namespace) -> int:
    """``<pid> <task>`` per running process, Barman's shape."""
    from walvault import locks

    server = ctx.server(args.server_name, allow_disabled=True)
    processes = locks.list_processes(server.lock_directory, server.name)
    if ctx.output_format == "json":
        ctx.emit_json({server.name: [{"pid": pid, "name": task} for pid, task in processes]})
        return 0
    if not processes:
        ctx.result(f"No active subprocesses found for server {server.name}.")
        return 0
    ctx.result(f"Active subprocesses for server {server.name}:")
    for pid, task in processes:
        ctx.result(f"{pid} {task}")
    return 0


def terminate_process(ctx: Context, args: argparse.Namespace) -> int:
    """Stop the process running ``task`` for the server."""
    server = ctx.server(args.server_name, allow_disabled=True)
    return terminate_task(ctx, server, args.task)


def terminate_task(ctx: Context, server: ServerConfig, task: str) -> int:
    """SIGINT the holder of the task's lock and wait for it to go (up to 10 s)."""
    from walvault import locks

    pid = locks.lock_holder(server.lock_directory, server.name, task)
    if pid is None:
        raise WalvaultError(
            f"Termination of {task} failed: no such process for server {server.name}"
        )
    if locks.terminate(pid):
        ctx.info(f"Stopped process {task}({pid})")
        return 0
    raise WalvaultError(f"Cannot terminate process {task}({pid})")
