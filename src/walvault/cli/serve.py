"""``serve``: the long-running service (receivers, archiving, metrics, status page)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from walvault.cli.context import Context

DEFAULT_LISTEN = "127.0.0.1:9781"
DEFAULT_CHECK_INTERVAL = 60
DEFAULT_SAMPLE_INTERVAL = 10


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(
        "serve",
        help="run in the foreground: keep every server's WAL moving, serve metrics and a "
        "status page",
    )
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address of /metrics, /api/status and the status page (default {DEFAULT_LISTEN};"
        " an IP address, [::1]:PORT for IPv6)",
    )
    p.add_argument(
        "--check-interval",
        type=_interval,
        default=DEFAULT_CHECK_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between two runs of the checks (default {DEFAULT_CHECK_INTERVAL})",
    )
    p.add_argument(
        "--sample-interval",
        type=_interval,
        default=DEFAULT_SAMPLE_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between two streaming lag samples (default {DEFAULT_SAMPLE_INTERVAL})",
    )
    p.set_defaults(func=serve)


def _interval(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of seconds") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is too short: at least 1 second")
    return value


def serve(ctx: Context, args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT (exit 0)."""
    from walvault.errors import WalvaultError
    from walvault.supervise.serve import run_service
    from walvault.web.http import is_loopback, parse_listen

    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise WalvaultError(f"--listen: {exc}") from None
    config = ctx.config
    if not is_loopback(host):
        ctx.warn(
            f"serving the status page and metrics on {args.listen}, beyond this host, without "
            "authentication: put it behind a firewall or a reverse proxy"
        )
    log = logging.getLogger("walvault.serve")

    def say(text: str) -> None:
        log.info("%s", text)
        ctx.info(text)

    return run_service(
        config,
        (host, port),
        check_interval=args.check_interval,
        sample_interval=args.sample_interval,
        say=say,
        warn=ctx.warn,
    )
