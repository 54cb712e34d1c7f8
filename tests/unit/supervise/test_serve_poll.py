"""serve's poll of a staging directory: a stat when nothing changed, a listing otherwise."""

from __future__ import annotations

import os
import time
from pathlib import Path

from walvault.config import ServerConfig
from walvault.supervise.runtime import ServerRuntime
from walvault.supervise.serve import RELIST_EVERY, Service


def test_a_directory_is_listed_again_only_when_it_may_have_changed(tmp_path: Path) -> None:
    rt = ServerRuntime(ServerConfig("pg", str(tmp_path), str(tmp_path)))
    directory = tmp_path / "streaming"
    directory.mkdir()
    now = time.time()
    assert Service._changed(rt, str(directory), now)  # never listed
    assert Service._changed(rt, str(directory), now)  # changed less than a second ago
    old = now - 60
    os.utime(directory, (old, old))
    assert Service._changed(rt, str(directory), now)  # its mtime moved
    assert not Service._changed(rt, str(directory), now + 0.5)  # quiet: a stat only
    (directory / "000000010000000000000001").touch()  # a segment lands
    assert Service._changed(rt, str(directory), time.time())
    os.utime(directory, (old, old))
    assert Service._changed(rt, str(directory), now + 1)
    assert not Service._changed(rt, str(directory), now + 2)
    assert Service._changed(rt, str(directory), now + 2 + RELIST_EVERY)  # now and then anyway
    assert Service._changed(rt, str(tmp_path / "missing"), now)
