"""libpq's reasons for refusing a connection string never carry its secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from walvault.config import load_config
from walvault.conninfo import _unquoted_reason, parse_conninfo


@pytest.mark.parametrize(
    "conninfo",
    [
        "postgresql://walvault:hunter2@[db.example/postgres",  # the whole URI was quoted
        "postgresql://u:hun%zzter2@h/db",  # the bad token was quoted
        "host=x passwordhunter2",  # missing "=" after "passwordhunter2"
        "host=x password='hunter2",  # unterminated quoted string
        'host=x password"hunter2" port=5',
        "postgresql://h/db?password=hunter2&bogus%zz=1",
    ],
)
def test_a_refused_conninfo_never_shows_its_password(conninfo: str) -> None:
    with pytest.raises(ValueError, match="invalid connection string") as caught:
        parse_conninfo(conninfo)
    assert "hunter2" not in str(caught.value)


def test_the_server_is_disabled_without_showing_the_password(tmp_path: Path) -> None:
    conf = tmp_path / "w.conf"
    conf.write_text(
        f"[walvault]\nwalvault_home = {tmp_path}\n\n[pg]\n"
        "conninfo = postgresql://walvault:hunter2@[db.example/postgres\n"
    )
    server = load_config(str(conf)).servers["pg"]
    assert server.disabled
    assert "hunter2" not in " ".join(server.messages)
    assert "invalid connection string" in " ".join(server.messages)


@pytest.mark.parametrize(
    ("reason", "shown"),
    [
        ('missing "=" after "pw" in connection info string', 'missing "=" after "*****"'),
        (
            'matching "]" in IPv6 host address in URI: "x://a@[b"',
            'matching "]" in IPv6 host address in URI: "*****"',
        ),
        (
            "unterminated quoted string in connection info string",
            "unterminated quoted string in connection info string",
        ),
        ('odd "', 'odd "*****"'),
        ('"=" then "a"b" c', '"=" then "*****"'),
    ],
)
def test_quoted_pieces_are_masked(reason: str, shown: str) -> None:
    assert _unquoted_reason(reason) == shown


def test_a_one_character_quote_from_the_string_is_masked() -> None:
    # libpq: unexpected character "%c" at position %d in URI (expected ":" or "/"): "%s"
    reason = 'unexpected character "h" at position 9 in URI (expected ":" or "/"): "x"'
    assert _unquoted_reason(reason) == 'unexpected character "*****"'
