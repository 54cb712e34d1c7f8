"""identity.json: Barman's format, read and written without psycopg."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from walsupply import SYSID, make_server
from walvault.errors import WalvaultError
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


def test_missing_or_bad_values(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    identity = Path(server.identity_path)
    identity.parent.mkdir(parents=True, exist_ok=True)
    identity.write_text('{"version": "15"}')
    assert stored_system_identifier(server) is None
    identity.write_text('{"systemid": "12x"}')
    assert stored_system_identifier(server) is None
    identity.write_text("{not json")
    with pytest.raises(WalvaultError, match="not valid JSON"):
        stored_system_identifier(server)
    identity.write_text("[1, 2]")
    with pytest.raises(WalvaultError, match="not a JSON object"):
        read_identity(server)
