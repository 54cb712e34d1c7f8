"""Which disabled servers cron still archives: only those an unparsable conninfo disables."""

from __future__ import annotations

from pathlib import Path

import pytest

from walvault.config import archivable_servers

BAD = "postgresql://walvault:hunter2@[db.example/postgres"
GOOD = "host=127.0.0.1 user=walvault dbname=postgres"


def _conf(tmp_path: Path, **options: str) -> str:
    lines = "".join(f"{key} = {value}\n" for key, value in options.items())
    path = tmp_path / "w.conf"
    path.write_text(f"[walvault]\nwalvault_home = {tmp_path}\n\n[pg]\narchiver = on\n{lines}")
    return str(path)


@pytest.mark.parametrize(
    ("options", "archivable"),
    [
        ({"conninfo": BAD}, True),
        ({"conninfo": GOOD, "streaming_conninfo": BAD}, True),
        ({"conninfo": BAD, "active": "false"}, False),  # inactive: cron stops, never archives
        ({"streaming_conninfo": GOOD}, False),  # no conninfo at all: Barman disables it too
        ({"conninfo": BAD, "encryption": "gpg"}, False),  # another problem besides
    ],
)
def test_archivable(tmp_path: Path, options: dict[str, str], archivable: bool) -> None:
    assert ("pg" in archivable_servers(_conf(tmp_path, **options))) is archivable


def test_an_unknown_server_is_not_archivable(tmp_path: Path) -> None:
    assert ("other" in archivable_servers(_conf(tmp_path, conninfo=GOOD))) is False
