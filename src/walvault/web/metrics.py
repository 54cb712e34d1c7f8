"""``/metrics``: the service's status snapshot rendered in Prometheus' text format (0.0.4).

The metrics are a rendering of the same values as ``/api/status`` and the status page
(:mod:`walvault.web.snapshot`), never computed a second way.  Every series carries
``server="<name>"``; ``walvault_check_ok`` mirrors the lines of ``walvault check``.  A value
that is not known (no lag sample yet, no backup) is left out rather than written as 0, so
an alert on it does not fire on a guess; ``absent()`` catches a service that stopped.

Written by hand rather than with ``prometheus_client``: the format is a few lines (HELP,
TYPE, samples with escaped label values) and the service keeps one dependency fewer.
The tests parse the output with ``prometheus_client``'s own parser.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[dict[str, str], float]


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a decimal point, NaN and infinities by their names."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class Family:
    """One metric: name, type, help and its samples."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.samples: list[Sample] = []

    def add(self, value: float | int | bool | None, **labels: str) -> None:
        """Add a sample; ``None`` (unknown) adds nothing."""
        if value is None:
            return
        self.samples.append((labels, float(value)))

    def render(self) -> str:
        """HELP, TYPE and sample lines (a counter's samples are named ``<name>``, which
        ends in ``_total``)."""
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            text = ",".join(f'{key}="{escape_label(val)}"' for key, val in labels.items())
            selector = f"{self.name}{{{text}}}" if text else self.name
            lines.append(f"{selector} {format_value(value)}")
        return "\n".join(lines) + "\n"


def render(families: Iterable[Family]) -> str:
    """The exposition text of ``families``."""
    return "".join(family.render() for family in families)


def families_of(snapshot: dict[str, Any]) -> list[Family]:
    """The metric families of a status snapshot (see :mod:`walvault.web.snapshot`)."""
    build = Family("walvault_build_info", "gauge", "walvault serve is running (value 1)")
    build.add(1, version=str(snapshot["service"]["version"]))
    up = Family(
        "walvault_receiver_up",
        "gauge",
        "1 while pg_receivewal runs for the server under a receive-wal that holds its lock",
    )
    lag = Family(
        "walvault_streaming_lag_bytes",
        "gauge",
        "bytes between the WAL source's current LSN and what the receiver has written "
        "(the 'streaming lag' check); absent while unknown",
    )
    archived = Family(
        "walvault_archived_wal_last_timestamp_seconds",
        "gauge",
        "time recorded in the catalogue for the newest archived WAL file (its mtime)",
    )
    backlog = Family(
        "walvault_archive_backlog_files",
        "gauge",
        "WAL files waiting in streaming/ (the live .partial not counted) or incoming/",
    )
    restarts = Family(
        "walvault_receiver_restarts_total",
        "counter",
        "starts of receive-wal after the first (kept in walvault-receiver.json)",
    )
    failures = Family(
        "walvault_receiver_consecutive_failures",
        "gauge",
        "receive-wal runs that failed in a row (back-off grows with it)",
    )
    gaps = Family(
        "walvault_wal_gaps",
        "gauge",
        "recorded WAL gaps not superseded by a later backup (the 'WAL gaps' check)",
    )
    backup = Family(
        "walvault_backup_last_completed_timestamp_seconds",
        "gauge",
        "end time of the newest DONE backup; absent without one",
    )
    checks = Family(
        "walvault_check_ok", "gauge", "1 when the line of 'walvault check' is OK, 0 when FAILED"
    )
    checked = Family(
        "walvault_check_last_run_timestamp_seconds", "gauge", "when the checks last ran"
    )
    errors_dir = Family(
        "walvault_archive_error_files", "gauge", "files set aside in the errors/ directory"
    )
    requests = Family(
        "walvault_storage_requests_total", "counter", "requests made to the storage by driver"
    )
    request_errors = Family(
        "walvault_storage_request_errors_total",
        "counter",
        "storage requests that failed (after the driver's retries)",
    )
    for server in snapshot["servers"]:
        name = server["name"]
        receiver = server["receiver"]
        if receiver["wanted"]:
            up.add(receiver["up"], server=name)
            restarts.add(receiver["restarts"], server=name)
            failures.add(receiver["consecutive_failures"], server=name)
            lag.add(server["lag"]["bytes"], server=name)
        archive = server["archive"]
        archived.add(archive["last_time"], server=name)
        for source in ("streaming", "incoming"):
            backlog.add(archive["backlog"][source], server=name, source=source)
        errors_dir.add(archive["error_files"], server=name)
        gaps.add(server["coverage"]["open_gaps"], server=name)
        backup.add(server["coverage"]["last_done_backup_time"], server=name)
        if server["checks"]["at"] is not None:
            checked.add(server["checks"]["at"], server=name)
        for result in server["checks"]["results"]:
            checks.add(result["ok"], server=name, check=result["name"])
        for driver, operation, count, failed in server["storage"]:
            requests.add(count, server=name, driver=str(driver), op=str(operation))
            request_errors.add(failed, server=name, driver=str(driver), op=str(operation))
    return [
        build,
        up,
        lag,
        archived,
        backlog,
        restarts,
        failures,
        gaps,
        backup,
        checks,
        checked,
        errors_dir,
        requests,
        request_errors,
    ]


def metrics_text(snapshot: dict[str, Any]) -> str:
    """``/metrics`` for ``snapshot``."""
    return render(families_of(snapshot))
