"""contrib/walvault-alerts.yml: valid rules that only use series walvault serve exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from walvault.web.metrics import families_of

RULES = Path(__file__).resolve().parents[3] / "contrib" / "walvault-alerts.yml"


def exported_names() -> set[str]:
    snapshot = {"service": {"version": "x"}, "servers": []}
    return {family.name for family in families_of(snapshot)}


def test_every_rule_uses_exported_series_only() -> None:
    document = yaml.safe_load(RULES.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert len(rules) >= 10
    names = exported_names()
    seen: set[str] = set()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical")
        used = set(re.findall(r"\bwalvault_[a-z_]+", rule["expr"]))
        assert used, rule["alert"]
        assert used <= names, (rule["alert"], used - names)
        seen |= used
    for required in (
        "walvault_receiver_up",
        "walvault_streaming_lag_bytes",
        "walvault_archived_wal_last_timestamp_seconds",
        "walvault_wal_gaps",
        "walvault_backup_last_completed_timestamp_seconds",
        "walvault_build_info",
    ):
        assert required in seen, required
