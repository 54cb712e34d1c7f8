"""Tests for walvault.fs: atomic durable writes, fsync ordering, batches, cleanup."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from walvault import fs


class SyncLog:
    """Records fsync and rename calls, in order, naming fds by the path they refer to."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        real_fsync, real_rename = os.fsync, os.rename

        def fsync(fd: int) -> None:
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            self.events.append(("rename", os.fspath(dst)))
            real_rename(src, dst)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", rename)

    def synced(self) -> list[str]:
        return [path for kind, path in self.events if kind == "fsync"]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_durable_write_creates_file_with_mode_and_mtime(tmp_path: Path) -> None:
    dst = tmp_path / "000000010000000000000001"
    size = fs.durable_write_from(dst, lambda f: f.write(b"abc" * 1000), mtime=1_000_000.0)
    assert size == 3000
    assert dst.read_bytes() == b"abc" * 1000
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600
    assert dst.stat().st_mtime == 1_000_000.0
    assert leftovers(tmp_path) == []
    fs.durable_write_from(dst, lambda f: f.write(b"new"), mode=0o640)
    assert dst.read_bytes() == b"new"
    assert stat.S_IMODE(dst.stat().st_mode) == 0o640


def test_durable_write_fsyncs_data_before_rename_then_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = SyncLog(monkeypatch)
    dst = tmp_path / "seg"
    fs.durable_write_from(dst, lambda f: f.write(b"payload"))
    kinds = [kind for kind, _ in log.events]
    assert kinds == ["fsync", "rename", "fsync"]
    temp_name = Path(log.events[0][1]).name
    assert temp_name.startswith(".seg.") and temp_name.endswith(".tmp")
    assert log.events[2][1] == str(tmp_path)


def test_durable_write_without_sync_is_atomic_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = SyncLog(monkeypatch)
    fs.durable_write_from(tmp_path / "f", lambda f: f.write(b"x"), sync=False)
    assert log.synced() == []
    assert (tmp_path / "f").read_bytes() == b"x"


def test_failed_writer_leaves_destination_and_no_temp(tmp_path: Path) -> None:
    dst = tmp_path / "f"
    dst.write_bytes(b"old")

    def writer(handle: BinaryIO) -> None:
        handle.write(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fs.durable_write_from(dst, writer)
    assert dst.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_temp_names_are_hidden_and_unique(tmp_path: Path) -> None:
    names = {fs.temp_path_for(tmp_path / "x").name for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith(f".x.{os.getpid()}.") and n.endswith(".tmp") for n in names)


def test_durable_copy_and_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 << 20))
    os.utime(src, (1234.0, 1234.0))
    assert fs.durable_copy(src, tmp_path / "a", preserve_mtime=True) == 3 << 20
    assert (tmp_path / "a").read_bytes() == src.read_bytes()
    assert (tmp_path / "a").stat().st_mtime == 1234.0

    def no_copy_file_range(*_: object) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", no_copy_file_range)
    fs.durable_copy(src, tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == src.read_bytes()
    assert (tmp_path / "b").stat().st_mtime != 1234.0


def test_durable_replace_bytes(tmp_path: Path) -> None:
    target = tmp_path / "identity.json"
    assert fs.durable_replace_bytes(target, b"{}") == 2
    fs.durable_replace_bytes(target, b'{"a": 1}')
    assert target.read_bytes() == b'{"a": 1}'
    assert leftovers(tmp_path) == []


def test_batch_defers_visibility_and_syncs_each_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = SyncLog(monkeypatch)
    other = tmp_path / "other"
    other.mkdir()
    extra = other / "extra"
    extra.write_bytes(b"e")
    batch = fs.SyncBatch()
    for name in ("a", "b", "c"):
        fs.durable_write_from(tmp_path / name, lambda f: f.write(b"data"), batch=batch)
    batch.add_file(extra)
    batch.add_dir(other)
    batch.add_dir(other)
    assert log.events == []
    assert not (tmp_path / "a").exists()
    assert len(leftovers(tmp_path)) == 3
    committed = batch.flush()
    assert committed == [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    assert all((tmp_path / n).read_bytes() == b"data" for n in "abc")
    kinds = [kind for kind, _ in log.events]
    assert kinds == ["fsync"] * 4 + ["rename"] * 3 + ["fsync"] * 2
    assert sorted(log.synced()[4:]) == sorted([str(tmp_path), str(other)])
    assert str(extra) in log.synced()[:4]
    assert leftovers(tmp_path) == []
    assert len(batch) == 0
    assert batch.flush() == []


def test_batch_context_manager_discards_on_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError), fs.SyncBatch() as batch:
        fs.durable_write_from(tmp_path / "a", lambda f: f.write(b"x"), batch=batch)
        raise KeyError("stop")
    assert list(tmp_path.iterdir()) == []
    source = tmp_path / "source"
    source.write_bytes(b"wal")
    with fs.SyncBatch() as batch:
        fs.durable_copy(source, tmp_path / "copy", batch=batch)
        fs.durable_write_from(tmp_path / "a", lambda f: f.write(b"x"), batch=batch)
        assert not (tmp_path / "copy").exists()
    assert (tmp_path / "a").read_bytes() == b"x"
    assert (tmp_path / "copy").read_bytes() == b"wal"


def test_batch_flush_failure_commits_prefix_and_removes_rest(tmp_path: Path) -> None:
    blocker = tmp_path / "b"
    blocker.mkdir()
    (blocker / "child").write_bytes(b"")  # a non-empty directory cannot be replaced
    batch = fs.SyncBatch()
    for name in ("a", "b", "c"):
        fs.durable_write_from(tmp_path / name, lambda f: f.write(b"x"), batch=batch)
    with pytest.raises(OSError):
        batch.flush()
    assert (tmp_path / "a").read_bytes() == b"x"
    assert not (tmp_path / "c").exists()
    assert leftovers(tmp_path) == []


def test_batch_is_safe_across_threads(tmp_path: Path) -> None:
    batch = fs.SyncBatch()

    def work(i: int) -> None:
        for j in range(20):
            fs.durable_write_from(tmp_path / f"f{i}-{j}", lambda f: f.write(b"z"), batch=batch)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(batch.flush()) == 80
    assert len(list(tmp_path.iterdir())) == 80


def test_append_lines_durably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "xlog.db"
    fs.append_lines_durably(db, [])
    assert not db.exists()
    log = SyncLog(monkeypatch)
    fs.append_lines_durably(db, ["a\t1\n", "b\t2"])
    assert log.synced() == [str(db), str(tmp_path)]  # created: the directory too
    fs.append_lines_durably(db, ["c\t3"])
    assert log.synced()[2:] == [str(db)]
    assert db.read_text() == "a\t1\nb\t2\nc\t3\n"


def test_remove_durably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"")
    log = SyncLog(monkeypatch)
    assert fs.remove_durably(target) is True
    assert log.synced() == [str(tmp_path)]
    assert fs.remove_durably(target, missing_ok=True) is False
    with pytest.raises(FileNotFoundError):
        fs.remove_durably(target)


def test_ensure_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = SyncLog(monkeypatch)
    deep = tmp_path / "a" / "b" / "c"
    assert fs.ensure_dir(deep) == deep
    assert deep.is_dir()
    assert log.synced() == [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")]
    assert stat.S_IMODE(deep.stat().st_mode) & 0o077 == 0
    fs.ensure_dir(deep)
    assert len(log.synced()) == 3
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        fs.ensure_dir(tmp_path / "file")
    with pytest.raises(FileExistsError, match="file"):
        fs.ensure_dir(tmp_path / "file" / "sub")


def test_fsync_dir_tolerates_einval_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(code: int) -> Callable[[int], None]:
        def fsync(_: int) -> None:
            raise OSError(code, os.strerror(code))

        return fsync

    monkeypatch.setattr(os, "fsync", failing(errno.EINVAL))
    fs.fsync_dir(tmp_path)
    monkeypatch.setattr(os, "fsync", failing(errno.EIO))
    with pytest.raises(OSError, match="Input/output"):
        fs.fsync_dir(tmp_path)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_cleanup_stale_temps(tmp_path: Path) -> None:
    old = time.time() - 7200
    pid = dead_pid()
    stale = tmp_path / f".seg.{pid}.0123abcd.tmp"
    fresh = tmp_path / f".other.{pid}.89abcdef.tmp"
    ours = tmp_path / f".mine.{os.getpid()}.00000000.tmp"
    unrelated = tmp_path / ".hidden.tmp"
    for path in (stale, fresh, ours, unrelated):
        path.write_bytes(b"")
    for path in (stale, ours, unrelated):
        os.utime(path, (old, old))
    assert fs.cleanup_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (fresh, ours, unrelated)
    )
    assert fs.cleanup_stale_temps(tmp_path, older_than=0) == [fresh]
