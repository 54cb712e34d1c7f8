"""Handing a restored tree over, and the checks recover makes before copying."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from walvault import privileges
from walvault.cli.context import Context
from walvault.cli.recover import _owner_checks
from walvault.errors import WalvaultError


def _me() -> privileges.Account:
    return privileges.account(privileges.current_user())


def test_hand_over_changes_what_the_copy_made_and_refuses_hard_links(tmp_path: Path) -> None:
    top = tmp_path / "data"
    (top / "base").mkdir(parents=True)
    (top / "base" / "1").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (top / "pg_tblspc").mkdir()
    (top / "pg_tblspc" / "16384").symlink_to(outside)  # not descended into
    me = _me()
    assert privileges.hand_over(str(top), creator=me.uid, owner=me) == 5
    os.link(outside / "secret", top / "base" / "linked")
    with pytest.raises(WalvaultError, match="were not created by the copy") as refused:
        privileges.hand_over(str(top), creator=me.uid, owner=me)
    assert "linked" in str(refused.value)


def test_hand_over_refuses_entries_of_another_uid(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    me = _me()
    with pytest.raises(WalvaultError, match="2 entries"):
        privileges.hand_over(str(tmp_path), creator=me.uid + 1, owner=me)


def test_make_destination_and_undo(tmp_path: Path) -> None:
    made = privileges.make_destination(str(tmp_path / "a" / "b" / "data"), None)
    assert [Path(p).name for p in made] == ["a", "b", "data"]
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "a" / "b" / "data").stat().st_mode & 0o777 == 0o700
    privileges.remove_if_empty(made)
    assert not (tmp_path / "a").exists()


def test_must_switch_refuses_another_unprivileged_user() -> None:
    if os.geteuid() == 0:
        pytest.skip("as root every walvault_user is switched to")
    assert privileges.must_switch(None) is None
    assert privileges.must_switch(privileges.current_user()) is None
    with pytest.raises(WalvaultError, match="please run walvault as the 'root' user"):
        privileges.must_switch("root")
    with pytest.raises(WalvaultError, match="does not exist"):
        privileges.must_switch("no-such-user-here")


def _ctx(tmp_path: Path, extra: str = "") -> Context:
    conf = tmp_path / "w.conf"
    conf.write_text(
        f"[walvault]\nwalvault_home = {tmp_path}/home\n{extra}\n"
        "[pg]\nconninfo = host=x\nstreaming_archiver = on\nslot_name = s\n"
    )
    return Context(config_option=str(conf))


def _args(destination: Path, owner: str | None) -> argparse.Namespace:
    return argparse.Namespace(
        destination_directory=str(destination), tablespace=[], recovery_owner=owner
    )


def test_recover_says_whose_directory_it_cannot_write(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(WalvaultError) as refused:
            _owner_checks(_ctx(tmp_path), _args(locked / "data", None), get_wal=False)
    finally:
        locked.chmod(0o700)
    text = str(refused.value)
    assert f"walvault runs as '{privileges.current_user()}' and cannot create" in text
    assert "(mode 0500)" in text and "--recovery-owner" in text


def test_recover_for_another_user_needs_root_and_restore_users(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("run as an unprivileged user")
    ctx = _ctx(tmp_path)
    with pytest.raises(WalvaultError, match="only root can give the restored files to 'root'"):
        _owner_checks(ctx, _args(tmp_path / "data", "root"), get_wal=True)
    with pytest.raises(WalvaultError, match="--recovery-owner 'nobody-here' does not exist"):
        _owner_checks(ctx, _args(tmp_path / "data", "nobody-here"), get_wal=True)
    assert _owner_checks(ctx, _args(tmp_path / "data", privileges.current_user()), True) is None
    args = _args(tmp_path / "data", "root")
    args.handover_by_root = True  # what the root parent says to its child
    with pytest.raises(WalvaultError, match="add 'restore_users = root'"):
        _owner_checks(ctx, args, get_wal=True)
    assert _owner_checks(ctx, args, get_wal=False) is None  # the WAL is copied: no service
    served = _ctx(tmp_path, "restore_users = root\nrestore_socket = /nonexistent/r.sock")
    assert _owner_checks(served, args, get_wal=True) == (
        "/nonexistent/r.sock",
        privileges.current_user(),
        "root",
    )
