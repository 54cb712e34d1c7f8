"""``quickstart``: walvault's whole job on a throwaway local PostgreSQL (needs no configuration)."""

from __future__ import annotations

import argparse
from typing import Any

from walvault.cli.context import Context


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(
        "quickstart",
        help="stream, back up, crash and recover a throwaway local PostgreSQL, then count",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="length of the write load")
    p.add_argument("--keep", action="store_true", help="keep everything for a look around")
    p.set_defaults(func=quickstart, needs_config=False)


def quickstart(ctx: Context, args: argparse.Namespace) -> int:
    """Run it (no configuration file is read)."""
    from walvault.quickstart.run import run_quickstart

    return run_quickstart(ctx.result, seconds=args.seconds, keep=args.keep)
