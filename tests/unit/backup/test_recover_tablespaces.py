"""``recover --tablespace NAME:LOCATION``: every rule is checked before anything is copied."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from walsupply import make_server
from walvault.backup.info import DONE, BackupInfo, Tablespace, format_tablespaces
from walvault.backup.recover import tablespace_locations
from walvault.errors import WalvaultError

SPACES = [Tablespace("extra", 16385, "/srv/extra"), Tablespace("idx", 16386, "/srv/idx")]


def _backup() -> BackupInfo:
    return BackupInfo("20261125T120000", "pg", status=DONE, tablespaces=format_tablespaces(SPACES))


def test_rules_map_oids_to_normalised_absolute_locations(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    dest = str(tmp_path / "restore" / "data")
    rules = (f"extra:{tmp_path}/new/../t1", f"idx:{tmp_path}/t2/")
    assert tablespace_locations(server, _backup(), dest, rules) == {
        "16385": f"{tmp_path}/t1",
        "16386": f"{tmp_path}/t2",
    }
    assert tablespace_locations(server, _backup(), dest, ()) == {}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("extra", "accepted: NAME:LOCATION"),
        (":/x", "accepted: NAME:LOCATION"),
        ("extra:", "accepted: NAME:LOCATION"),
        ("nope:/x", "has no tablespace 'nope' (its tablespaces: extra, idx)"),
        ("extra:relative/dir", "LOCATION must be absolute"),
        ("extra:{dest}/pg_tblspc/x", "must not contain each other"),
        ("extra:{tmp}/restore", "must not contain each other"),
        ("extra:{backups}/t", "inside the server's backups"),
        ("extra:{full}", "is not empty"),
        ("extra:{file}", "is not a directory"),
    ],
)
def test_bad_rules_are_refused_with_what_is_accepted(
    tmp_path: Path, rule: str, message: str
) -> None:
    server = make_server(tmp_path)
    dest = tmp_path / "restore" / "data"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    rule = rule.format(
        dest=dest,
        tmp=tmp_path,
        backups=server.basebackups_directory,
        full=tmp_path / "full",
        file=tmp_path / "file",
    )
    with pytest.raises(WalvaultError, match=re.escape(message)):
        tablespace_locations(server, _backup(), str(dest), (rule,))


def test_a_tablespace_or_a_location_given_twice_is_refused(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    dest = str(tmp_path / "data")
    with pytest.raises(WalvaultError, match="'extra' is relocated twice"):
        tablespace_locations(server, _backup(), dest, ("extra:/a1", "extra:/a2"))
    with pytest.raises(WalvaultError, match="/a1 is used twice"):
        tablespace_locations(server, _backup(), dest, ("extra:/a1", "idx:/a1"))


def test_a_backup_without_tablespaces_names_none(tmp_path: Path) -> None:
    plain = BackupInfo("20261125T120000", "pg", status=DONE)
    with pytest.raises(WalvaultError, match=r"its tablespaces: none"):
        tablespace_locations(make_server(tmp_path), plain, str(tmp_path / "d"), ("x:/y",))
