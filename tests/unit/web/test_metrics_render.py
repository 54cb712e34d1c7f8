"""/metrics rendering: Prometheus' own parser reads back every series with its value."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from walvault.web.metrics import escape_label, format_value, metrics_text


def server(name: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "receiver": {"wanted": True, "up": True, "restarts": 3, "consecutive_failures": 1},
        "lag": {"bytes": 4096},
        "archive": {
            "last_time": 1_700_000_000.5,
            "backlog": {"streaming": 2, "incoming": 0},
            "error_files": 1,
        },
        "coverage": {"open_gaps": 1, "last_done_backup_time": 1_699_999_000.0},
        "checks": {
            "at": 1_700_000_001.0,
            "results": [
                {"name": "receive-wal running", "ok": True, "hint": ""},
                {"name": "WAL gaps", "ok": False, "hint": "a hint never exported"},
            ],
        },
        "storage": [["s3", "put", 10, 2]],
    }
    base.update(changes)
    return base


def parsed(snapshot: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics_text(snapshot)
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_every_series_parses_back_with_its_value() -> None:
    snapshot = {"service": {"version": "0.1.0"}, "servers": [server("pg")]}
    got = parsed(snapshot)
    pg = (("server", "pg"),)
    assert got[("walvault_build_info", (("version", "0.1.0"),))] == 1
    assert got[("walvault_receiver_up", pg)] == 1
    assert got[("walvault_receiver_restarts_total", pg)] == 3
    assert got[("walvault_receiver_consecutive_failures", pg)] == 1
    assert got[("walvault_streaming_lag_bytes", pg)] == 4096
    assert got[("walvault_archived_wal_last_timestamp_seconds", pg)] == 1_700_000_000.5
    assert got[("walvault_archive_backlog_files", (*pg, ("source", "streaming")))] == 2
    assert got[("walvault_archive_backlog_files", (*pg, ("source", "incoming")))] == 0
    assert got[("walvault_archive_error_files", pg)] == 1
    assert got[("walvault_wal_gaps", pg)] == 1
    assert got[("walvault_backup_last_completed_timestamp_seconds", pg)] == 1_699_999_000
    assert got[("walvault_check_ok", (("check", "receive-wal running"), *pg))] == 1
    assert got[("walvault_check_ok", (("check", "WAL gaps"), *pg))] == 0
    assert got[("walvault_check_last_run_timestamp_seconds", pg)] == 1_700_000_001
    storage = (("driver", "s3"), ("op", "put"), *pg)
    assert got[("walvault_storage_requests_total", storage)] == 10
    assert got[("walvault_storage_request_errors_total", storage)] == 2
    assert "a hint never exported" not in metrics_text(snapshot)


def test_unknown_values_are_left_out_not_zero() -> None:
    quiet = server(
        "idle",
        lag={"bytes": None},
        coverage={"open_gaps": 0, "last_done_backup_time": None},
        checks={"at": None, "results": []},
        storage=[],
    )
    quiet["archive"]["last_time"] = None
    off = server("off", receiver={"wanted": False, "up": False, "restarts": 0})
    got = parsed({"service": {"version": "x"}, "servers": [quiet, off]})
    names = {name for name, labels in got if ("server", "idle") in labels}
    assert "walvault_streaming_lag_bytes" not in names
    assert "walvault_backup_last_completed_timestamp_seconds" not in names
    assert "walvault_archived_wal_last_timestamp_seconds" not in names
    assert "walvault_receiver_up" in names
    off_names = {name for name, labels in got if ("server", "off") in labels}
    assert "walvault_receiver_up" not in off_names  # no receiver is wanted there


def test_label_escaping_and_values() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert format_value(3.0) == "3" and format_value(0.5) == "0.5"
    assert format_value(float("nan")) == "NaN" and format_value(float("inf")) == "+Inf"
    odd = server("pg")
    odd["checks"]["results"] = [{"name": 'a "quoted"\\ check\nname', "ok": True, "hint": ""}]
    got = parsed({"service": {"version": "x"}, "servers": [odd]})
    assert (
        got[("walvault_check_ok", (("check", 'a "quoted"\\ check\nname'), ("server", "pg")))] == 1
    )
