"""``configuration_files_directory``: the files it names, taken literally, as glob lists them."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from walvault.config.loader import _conf_files


def test_conf_files_lists_what_glob_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    confd = tmp_path / "conf.d"
    confd.mkdir()
    listed = ["b.conf", "a.conf", "A.conf", "z z.conf", "-.conf", "new\nline.conf"]
    unlisted = [".conf", ".hidden.conf", "..conf", "x.conf.bak", "x.CONF", "conf", "tail.conf\n"]
    for name in listed + unlisted:
        (confd / name).write_text("[x]\n")
    (confd / "dir.conf").mkdir()  # glob lists directories and dangling links too
    (confd / "dangling.conf").symlink_to(tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    for spelling in [str(confd), f"{confd}/", f"{confd}//", "conf.d", "conf.d/", "./conf.d"]:
        expected = sorted(glob.glob(os.path.join(spelling, "*.conf")))
        assert _conf_files(spelling) == expected, spelling
    monkeypatch.chdir(confd)
    assert _conf_files(".") == sorted(glob.glob(os.path.join(".", "*.conf")))
    assert _conf_files(str(tmp_path / "missing")) == []  # as glob: no error, no file


def test_conf_files_directory_is_taken_literally(tmp_path: Path) -> None:
    """The one difference from glob, deliberate: glob read a directory name holding ``*``,
    ``?`` or ``[`` as a pattern, so ``conf[1].d`` listed ``conf1.d``, not the directory the
    loader had just checked."""
    literal = tmp_path / "conf[1].d"
    literal.mkdir()
    (literal / "a.conf").write_text("[a]\n")
    decoy = tmp_path / "conf1.d"
    decoy.mkdir()
    (decoy / "decoy.conf").write_text("[decoy]\n")
    assert _conf_files(str(literal)) == [f"{literal}/a.conf"]
    assert glob.glob(os.path.join(str(literal), "*.conf")) == [f"{decoy}/decoy.conf"]
