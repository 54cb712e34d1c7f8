"""backup's --bwlimit (bandwidth_limit) becomes pg_basebackup's --max-rate; its range."""

from __future__ import annotations

import pytest

from walvault.backup.pgbasebackup import build_basebackup_command
from walvault.config import ServerConfig
from walvault.config.parsers import parse_bandwidth


def _server(**kw: object) -> ServerConfig:
    return ServerConfig(
        name="pg",
        walvault_home="/h",
        lock_directory="/h",
        streaming_conninfo="host=h user=s",
        **kw,  # type: ignore[arg-type]
    )


def test_bandwidth_limit_is_max_rate_in_kilobytes() -> None:
    argv = build_basebackup_command(_server(bandwidth_limit=4096), "/bin/pg_basebackup", "/b", [])
    assert "--max-rate=4096k" in argv.argv
    plain = build_basebackup_command(_server(), "/bin/pg_basebackup", "/b", [])
    assert not any(arg.startswith("--max-rate") for arg in plain.argv)


@pytest.mark.parametrize("raw", ["10", "2000000", "-1", "fast"])
def test_a_rate_pg_basebackup_refuses_is_refused_first(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_bandwidth(raw)
    assert parse_bandwidth("0") == 0 and parse_bandwidth("32") == 32
