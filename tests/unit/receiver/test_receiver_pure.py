"""pg_receivewal: version parsing, synchronous_standby_names, the command line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from walvault.config.server import ServerConfig
from walvault.errors import WalvaultError
from walvault.postgres.programs import (
    ClientProgram,
    find_program,
    parse_version,
    require_compatible,
    serves,
)
from walvault.receiver.command import build_receiver_command
from walvault.receiver.sync import parse_sync_standby_names


@pytest.mark.parametrize(
    ("text", "major_num", "major"),
    [
        ("pg_receivewal (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", 150000, "15"),
        ("pg_receivewal (PostgreSQL) 16devel", 160000, "16"),
        ("pg_receivewal (PostgreSQL) 17beta2", 170000, "17"),
        ("pg_receivewal (PostgreSQL) 16rc1", 160000, "16"),
        ("1:13.0-1.pgdg110+1", 130000, "13"),
        ("pg_receivexlog (PostgreSQL) 9.6.24", 90600, "9.6"),
        ("15.8.1", 150000, "15"),
    ],
)
def test_parse_version(text: str, major_num: int, major: str) -> None:
    version = parse_version(text)
    assert version.major_num == major_num
    assert version.major == major


def test_parse_version_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="cannot find a PostgreSQL version"):
        parse_version("Usage: pg_wrapper ...")


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_find_program_skips_shims_and_follows_order(tmp_path: Path) -> None:
    shim, real, other = tmp_path / "shim", tmp_path / "real", tmp_path / "other"
    for d in (shim, real, other):
        d.mkdir()
    _script(shim / "pg_receivewal", "echo 'Error: no cluster' >&2; exit 1")
    _script(real / "pg_receivexlog", "echo 'pg_receivexlog (PostgreSQL) 9.6.3'")
    _script(real / "pg_receivewal", "echo 'pg_receivewal (PostgreSQL) 15.18 (Debian)'")
    _script(other / "pg_receivewal", "echo 'pg_receivewal (PostgreSQL) 16.1'")
    found = find_program(
        ("pg_receivewal", "pg_receivexlog"), os.pathsep.join(map(str, (shim, real, other)))
    )
    assert found is not None
    assert found.path == str(real / "pg_receivewal")
    assert found.version.major == "15"
    assert find_program(("pg_receivewal",), str(shim)) is None


def test_require_compatible() -> None:
    found = find_program(("pg_receivewal",), "/usr/lib/postgresql/15/bin")
    if found is None:
        pytest.skip("no PostgreSQL 15 client here")
    require_compatible(found, "pg_receivewal", 150018)
    require_compatible(found, "pg_receivewal", 140005)
    with pytest.raises(WalvaultError, match=r"is 15, the server is 16 \(pg_receivewal 15 works"):
        require_compatible(found, "pg_receivewal", 160002)
    with pytest.raises(WalvaultError, match="not present"):
        require_compatible(None, "pg_receivewal", 150000)


@pytest.mark.parametrize(
    ("name", "client", "server", "ok"),
    [
        # the newest client serves every older server, down to its protocol's oldest
        ("pg_receivewal", "18.6", 140023, True),
        ("pg_receivewal", "18.6", 180006, True),
        ("pg_receivewal", "18.6", 90300, True),
        ("pg_receivewal", "18.6", 90224, False),  # streaming messages changed in 9.3
        ("pg_receivexlog", "9.6.24", 90300, True),
        ("pg_basebackup", "18.6", 90100, True),  # BASE_BACKUP exists from 9.1
        ("pg_basebackup", "18.6", 90024, False),
        # never a server newer than the client, not even by a minor-looking step
        ("pg_receivewal", "17.11", 180000, False),
        ("pg_receivewal", "14.23", 150001, False),
        ("pg_basebackup", "16.15", 170000, False),
        ("pg_receivexlog", "9.6.24", 100000, False),
        # a development client counts as its major
        ("pg_receivewal", "19devel", 180006, True),
        ("pg_receivewal", "18beta1", 180000, True),
    ],
)
def test_serves_is_postgresqls_rule(name: str, client: str, server: int, ok: bool) -> None:
    assert serves(name, parse_version(client), server) is ok


def test_require_compatible_says_what_to_do() -> None:
    old = ClientProgram("/opt/pg14/bin/pg_receivewal", parse_version("14.23"))
    with pytest.raises(WalvaultError) as newer:
        require_compatible(old, "pg_receivewal", 180006)
    assert str(newer.value) == (
        "pg_receivewal version not compatible with PostgreSQL server version: "
        "/opt/pg14/bin/pg_receivewal is 14, the server is 18 (pg_receivewal 14 works with "
        "servers from 9.3 to 14: use the pg_receivewal of PostgreSQL 18 or newer, e.g. "
        "through path_prefix)"
    )
    new = ClientProgram("/opt/pg18/bin/pg_basebackup", parse_version("18.6"))
    with pytest.raises(WalvaultError, match=r"the server is 9.0 .*PostgreSQL 9.0 is too old"):
        require_compatible(new, "pg_basebackup", 90024)
    require_compatible(new, "pg_basebackup", 140023)


@pytest.mark.parametrize(
    ("setting", "listed", "not_listed"),
    [
        ("", [], ["walvault_receive_wal"]),
        ("walvault_receive_wal", ["walvault_receive_wal", "WALVAULT_RECEIVE_WAL"], ["x"]),
        ("a, b ,walvault_receive_wal", ["walvault_receive_wal", "a"], ["c"]),
        ("FIRST 1 (walvault_receive_wal)", ["walvault_receive_wal"], ["first"]),
        ('first 2 (s1, "My Streamer")', ["my streamer", "s1"], ["My"]),
        ("ANY 1 (s1, walvault_receive_wal)", ["walvault_receive_wal"], ["any"]),
        ("2 (s1, s2)", ["s1", "s2"], ["2"]),
        ("*", ["anything"], []),
        ('"a""b", c', ['a"b', "c"], ["a"]),
    ],
)
def test_sync_standby_names(setting: str, listed: list[str], not_listed: list[str]) -> None:
    parsed = parse_sync_standby_names(setting)
    for name in listed:
        assert parsed.lists(name), (setting, name)
    for name in not_listed:
        assert not parsed.lists(name), (setting, name)


def test_sync_standby_names_methods() -> None:
    assert parse_sync_standby_names("ANY 2 (a, b, c)").method == "any"
    assert parse_sync_standby_names("ANY 2 (a, b, c)").count == 2
    assert parse_sync_standby_names("a").method == "first"
    with pytest.raises(ValueError):
        parse_sync_standby_names("FIRST 1 (a")


def _server(conninfo: str, **kw: object) -> ServerConfig:
    return ServerConfig(
        name="pg",
        walvault_home="/h",
        lock_directory="/h",
        conninfo=conninfo,
        streaming_conninfo=conninfo,
        streaming_wals_directory="/h/pg/streaming",
        slot_name="walvault",
        path_prefix=("/usr/lib/postgresql/15/bin",),
        **kw,  # type: ignore[arg-type]
    )


def test_command_line_keeps_user_options_and_hides_password() -> None:
    server = _server("host=127.0.0.1 user=s password=sekret options='-c search_path=x'")
    cmd = build_receiver_command(server, "/bin/pg_receivewal", synchronous=True)
    assert cmd.argv[0] == "/bin/pg_receivewal"
    dbname = cmd.argv[1]
    assert dbname.startswith("--dbname=")
    assert "sekret" not in cmd.shown()
    assert "options='-c search_path=x'" in dbname
    assert "application_name=walvault_receive_wal" in dbname
    assert "replication=true" in dbname
    assert cmd.env["PGPASSWORD"] == "sekret"
    assert cmd.env["PATH"].startswith("/usr/lib/postgresql/15/bin:")
    assert list(cmd.argv[2:]) == [
        "--verbose",
        "--no-loop",
        "--no-password",
        "--directory=/h/pg/streaming",
        "--status-interval=1",
        "--slot=walvault",
        "--synchronous",
    ]
    assert cmd.application_name == "walvault_receive_wal"


def test_command_line_respects_user_application_name() -> None:
    server = _server("host=h application_name=my_receiver")
    cmd = build_receiver_command(server, "/bin/pg_receivewal", synchronous=False)
    assert cmd.application_name == "my_receiver"
    assert "application_name=my_receiver" in cmd.argv[1]
    assert "--synchronous" not in cmd.argv


def test_wal_streaming_conninfo_replaces_streaming_conninfo() -> None:
    server = _server("host=standby", wal_streaming_conninfo="host=primary")
    cmd = build_receiver_command(server, "/bin/pg_receivewal", synchronous=False)
    assert "host=primary" in cmd.argv[1]
