"""``check``: run the checks of servers and render them (console, JSON, Nagios)."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from walvault.checks import CheckResult
from walvault.cli.context import Context
from walvault.config import ServerConfig


def register(sub: Any) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser("check", help="check that servers are healthy (no side effects)")
    p.add_argument("server_name", nargs="+", help="server names, or 'all'")
    p.add_argument("--nagios", action="store_true", help="Nagios plugin output")
    p.add_argument("--check-timeout", type=int, help="seconds for each server's checks")
    p.set_defaults(func=check)


class CheckTimeout(BaseException):
    """Raised by the alarm when a server's checks run out of time.

    A BaseException, so that no ``except Exception`` inside a check (a query, a guarded
    line) can take it for that check's own failure and print its class name.
    """


@contextmanager
def check_deadline(seconds: int) -> Iterator[None]:
    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise CheckTimeout

    if seconds <= 0:
        yield
        return
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def results_for(server: ServerConfig, timeout: int | None) -> list[CheckResult]:
    """The checks of one server within its time budget: past it, the lines already computed
    and ``check timeout: FAILED``."""
    from walvault.checks.runner import iter_checks

    limit = timeout if timeout is not None else server.check_timeout
    results: list[CheckResult] = []
    try:
        with check_deadline(limit):
            for result in iter_checks(server):
                results.append(result)
    except CheckTimeout:
        hint = (
            f"walvault check command timed out after {limit} s (check_timeout or "
            "--check-timeout); the lines above were complete, the others were not run"
        )
        results.append(CheckResult("check timeout", False, hint))
    return results


def json_key(name: str) -> str:
    """Barman's JSON mangling: lower case, spaces and '-' to '_', dots removed."""
    return name.lower().replace(" ", "_").replace("-", "_").replace(".", "")


def check(ctx: Context, args: argparse.Namespace) -> int:
    """Any FAILED line of an active server makes the exit code 1 (2 with --nagios)."""
    servers = ctx.servers(args.server_name)
    report = [(s, results_for(s, args.check_timeout)) for s in servers]
    failing = [s for s, results in report if s.active and any(not r.ok for r in results)]
    if args.nagios:
        _nagios(ctx, report, failing)
        return 2 if failing else 0
    if ctx.output_format == "json":
        ctx.emit_json(
            {
                s.name: {json_key(r.name): {"status": r.status, "hint": r.hint} for r in results}
                for s, results in report
            }
        )
        return 1 if failing else 0
    for server, results in report:
        state = " (WARNING: disabled)" if server.disabled else ""
        state = state or (" (inactive)" if not server.active else "")
        ctx.result(f"Server {server.name}{state}:")
        for result in results:
            hint = f" ({result.hint})" if result.hint else ""
            ctx.result(f"\t{result.name}: {result.status}{hint}")
            for line in result.details:
                ctx.result(f"\t\t{line}")
    return 1 if failing else 0


def _nagios(
    ctx: Context, report: list[tuple[ServerConfig, list[CheckResult]]], failing: list[ServerConfig]
) -> None:
    perf = []
    for server, results in report:
        for result in results:
            for label, value in result.perfdata:
                perf.append(f"{server.name}_{label}={value}B")
    perfdata = ("|" + " ".join(perf)) if perf else ""
    if not report:
        ctx.result("WALVAULT OK - No server configured")
        return
    if not failing:
        if len(report) == 1:
            ctx.result(f"WALVAULT OK - Ready to serve WAL for {report[0][0].name}{perfdata}")
        else:
            names = " * ".join(s.name for s, _ in report)
            ctx.result(
                f"WALVAULT OK - Ready to serve WAL for {len(report)} servers * {names}{perfdata}"
            )
        return
    details = []
    for server, results in report:
        bad = [r for r in results if not r.ok]
        if bad and server in failing:
            details.append(f"{server.name} FAILED: " + ", ".join(r.name for r in bad))
    if len(report) == 1:
        head = f"WALVAULT CRITICAL - server {failing[0].name} has issues"
    else:
        head = f"WALVAULT CRITICAL - {len(failing)} server out of {len(report)} have issues"
    ctx.result(f"{head} * " + " * ".join(details) + perfdata)
    for server, results in report:
        if server not in failing:
            continue
        for result in results:
            if not result.ok:
                ctx.result(f"{server.name}.{result.name}: FAILED ({result.hint})")
