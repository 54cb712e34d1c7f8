"""identity.json: Barman's format, read and written without psycopg."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from walsupply import SYSID, make_server
from walvault.errors import StateFileError
from walvault.identity import read_identity, stored_system_identifier, write_identity


def test_write_then_read_in_barmans_format(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    assert read_identity(server) is None and stored_system_identifier(server) is None
    write_identity(server, SYSID, 15)
    text = Path(server.identity_path).read_text()
    assert json.loads(text) == {"systemid": str(SYSID), "version": "15"}
    assert text.startswith('{\n    "systemid"')  # Barman's indent=4, sorted keys
    assert read_identity(server) == {"systemid": str(SYSID), "version": "15"}
    assert stored_system_identifier(server) == SYSID


def test_missing_or_bad_values_are_named_never_guessed(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    identity = Path(server.identity_path)
    identity.parent.mkdir(parents=True, exist_ok=True)
    cases = [
        ('{"version": "15"}', "'systemid' is not a number"),
        ('{"systemid": "12x"}', "'systemid' is not a number"),
        ('{"systemid": "1", "version": "x"}', "'version' is not a version number"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
    ]
    for text, problem in cases:
        identity.write_text(text)
        with pytest.raises(StateFileError) as caught:
            stored_system_identifier(server)
        assert caught.value.message == f"{identity}: malformed: {problem}", text
    identity.write_text('{"systemid": "7"}')  # no version: Barman's early files
    assert stored_system_identifier(server) == 7
    identity.write_text('{"systemid": "7", "version": "9.6"}')  # Barman's major versions
    assert stored_system_identifier(server) == 7
