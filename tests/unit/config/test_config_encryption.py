"""The encryption options: Barman's names, what disables a server, what is never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from walvault.config import ServerConfig, load_config


def _server(tmp_path: Path, **options: str) -> ServerConfig:
    lines = "".join(f"{key} = {value}\n" for key, value in options.items())
    path = tmp_path / "w.conf"
    path.write_text(
        f"[walvault]\nwalvault_home = {tmp_path}\n\n[pg]\nconninfo = host=x\narchiver = on\n{lines}"
    )
    return load_config(str(path)).servers["pg"]


def test_gpg_needs_a_key_and_takes_barmans_options(tmp_path: Path) -> None:
    server = _server(tmp_path, encryption="gpg")
    assert server.disabled
    assert any("needs encryption_key_id" in m for m in server.messages)
    server = _server(
        tmp_path,
        encryption="GPG",
        encryption_key_id="backup@example.com",
        encryption_passphrase_command="cat /etc/walvault/passphrase",
    )
    assert not server.disabled
    assert server.encryption == "gpg"
    assert server.encryption_key_id == "backup@example.com"
    assert server.encryption_passphrase_command == "cat /etc/walvault/passphrase"
    shown = dict(server.shown)
    assert shown["encryption_passphrase_command"] == "*****"
    assert shown["encryption_key_id"] == "backup@example.com"
    # reading needs no key: a restore host with encryption = none and only the command
    reader = _server(tmp_path, encryption_passphrase_command="cat /p")
    assert not reader.disabled and reader.encryption == "none"


@pytest.mark.parametrize("value", ["-oops", "a\x07b", "x" * 300])
def test_a_key_id_gpg_could_misread_is_refused(tmp_path: Path, value: str) -> None:
    server = _server(tmp_path, encryption="gpg", encryption_key_id=value)
    assert server.disabled
    assert any("encryption_key_id" in m for m in server.messages)
