"""archive_wal() in process on synthetic segments: layout, catalogue, output, crashes, scale."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import zstandard

from walsupply import (
    SYSID,
    Calls,
    MiB,
    archived_files,
    catalogue_lines,
    make_server,
    segment_name,
    synthetic_segment,
    write_segments,
)
from walvault.archive import archiver, catalogue
from walvault.archive.archiver import archive_wal, rebuild_xlogdb
from walvault.archive.layout import archive_journal_path
from walvault.compression import ALGORITHMS, compress_bytes, decompress_bytes
from walvault.config import ServerConfig
from walvault.locks import ServerLock
from walvault.storage.posix import PosixBatch


class Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        self.lines.append(text)


def _identity(server: ServerConfig, sysid: int = SYSID) -> None:
    os.makedirs(server.backup_directory, exist_ok=True)
    Path(server.identity_path).write_text(json.dumps({"systemid": str(sysid), "version": "15"}))


def _live_partial(server: ServerConfig, segno: int) -> str:
    name = f"{segment_name(1, segno)}.partial"
    Path(server.streaming_wals_directory, name).write_bytes(b"")
    return name


@pytest.mark.parametrize("algo", [None, *ALGORITHMS])
def test_every_compression_round_trips(tmp_path: Path, algo: str | None) -> None:
    server = make_server(tmp_path, compression=algo)
    originals = {}
    for name in write_segments(server.streaming_wals_directory, 1, 3):
        originals[name] = Path(server.streaming_wals_directory, name).read_bytes()
    mtimes = {n: os.stat(Path(server.streaming_wals_directory, n)).st_mtime for n in originals}
    live = _live_partial(server, 4)
    out = Out()
    result = archive_wal(server, out)
    assert result.exit_code == 0 and result.archived == sorted(originals)
    assert out.lines == [
        "Processing xlog segments from streaming for pg",
        *(f"\t{n}" for n in sorted(originals)),
        "Processing xlog segments from file archival for pg",
        "\tno file found",
    ]
    files = archived_files(server)
    assert set(files) == set(originals)
    lines = catalogue_lines(server)
    for (name, size, mtime, compression, encryption), expected in zip(
        lines, sorted(originals), strict=True
    ):
        path = files[name]
        assert name == expected and path == Path(server.wals_directory, name[:16], name)
        assert decompress_bytes(algo, path.read_bytes()) == originals[name]
        assert int(size) == path.stat().st_size and float(mtime) == mtimes[name]
        assert (compression, encryption) == (algo or "None", "None")
    assert os.listdir(server.streaming_wals_directory) == [live]
    assert not os.path.exists(archive_journal_path(server))
    identity = json.loads(Path(server.identity_path).read_text())
    assert identity == {"systemid": str(SYSID), "version": "15"}


def test_zstd_frames_record_the_segment_size(tmp_path: Path) -> None:
    server = make_server(tmp_path, compression="zstd")
    names = write_segments(server.streaming_wals_directory, 1, 2)
    sizes = {n: os.path.getsize(Path(server.streaming_wals_directory, n)) for n in names}
    _live_partial(server, 3)
    assert archive_wal(server, Out()).archived == names
    for name, path in archived_files(server).items():
        assert zstandard.get_frame_parameters(path.read_bytes()).content_size == sizes[name]


@pytest.mark.parametrize(("cores", "workers"), [({0}, 1), ({0, 1}, 2), (set(range(8)), 8)])
def test_one_worker_per_usable_core(
    monkeypatch: pytest.MonkeyPatch, cores: set[int], workers: int
) -> None:
    monkeypatch.setattr(archiver.os, "sched_getaffinity", lambda pid: cores)
    assert archiver._workers(False) == workers
    assert archiver._workers(True) == workers * archiver.UPLOADS_PER_CORE  # object storage


def test_client_compressed_files_are_kept_as_sent(tmp_path: Path) -> None:
    server = make_server(tmp_path, compression="zstd")
    name, history = segment_name(1, 7), "00000002.history"
    sent = compress_bytes("gzip", synthetic_segment(name), 1)
    Path(server.incoming_wals_directory, name).write_bytes(sent)
    Path(server.incoming_wals_directory, history).write_text("1\t0/7000000\treason\n")
    archive_wal(server, Out())
    files = archived_files(server)
    assert files[name].read_bytes() == sent
    assert files[history] == Path(server.wals_directory, history)
    assert [(line[0], line[3]) for line in catalogue_lines(server)] == [
        (name, "gzip"),
        (history, "zstd"),
    ]


def test_duplicates_unknown_foreign_and_invalid(tmp_path: Path) -> None:
    server = make_server(tmp_path, compression="lz4")
    _identity(server)
    incoming = Path(server.incoming_wals_directory)
    same, changed = write_segments(incoming, 1, 2)
    archive_wal(server, Out())
    before = catalogue_lines(server)
    write_segments(incoming, 1, 1)  # identical bytes again
    Path(incoming, changed).write_bytes(synthetic_segment(changed, filler=b"other"))
    foreign = segment_name(1, 9)
    Path(incoming, foreign).write_bytes(synthetic_segment(foreign, sysid=SYSID + 1))
    invalid = segment_name(1, 10)
    Path(incoming, invalid).write_bytes(synthetic_segment(segment_name(1, 11)))
    Path(incoming, "random file").write_text("?")
    out = Out()
    result = archive_wal(server, out)
    assert out.lines == [
        "Processing xlog segments from streaming for pg",
        "\tno file found",
        "Processing xlog segments from file archival for pg",
        f"\t{same}",
        f"\t{changed}",
        f"\tError: {changed} is already present in server pg. File moved to errors directory.",
        f"\t{foreign}",
        f"\tError: {foreign} belongs to another PostgreSQL cluster than server pg (system "
        f"identifier {SYSID + 1}, expected {SYSID}). File moved to errors directory.",
        f"\t{invalid}",
        f"\tError: {invalid} is not a valid WAL file for its name (page address 0/B00000 in "
        f"header does not match the start 0/A00000 of {invalid} (recycled or misnamed "
        "segment?)). File moved to errors directory.",
        "Some unknown objects have been found while processing xlog segments for pg. "
        "Objects moved to errors directory:",
        "\trandom file",
    ]
    assert result.dropped == [same] and result.archived == [] and result.exit_code == 1
    assert catalogue_lines(server) == before
    assert os.listdir(incoming) == []
    kinds = sorted(name.rsplit(".", 1)[1] for name in os.listdir(server.errors_directory))
    assert kinds == ["duplicate", "foreign", "invalid", "unknown"]
    assert result.errors == {
        "duplicate": [changed],
        "foreign": [foreign],
        "invalid": [invalid],
        "unknown": ["random file"],
    }


def test_busy_lock_is_reported_and_skipped(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    write_segments(server.incoming_wals_directory, 1, 1)
    out = Out()
    with ServerLock(server.lock_directory, "pg", "archive-wal"):
        result = archive_wal(server, out)
    assert result.busy and result.exit_code == 0
    assert out.lines == [
        "Another archive-wal process is already running on server pg. Skipping to the next server"
    ]


def test_batch_size_header_and_quiet_mode(tmp_path: Path) -> None:
    server = make_server(tmp_path, archiver_batch_size=2, streaming_archiver=False)
    names = write_segments(server.incoming_wals_directory, 1, 3)
    out = Out()
    archive_wal(server, out, verbose=False)
    assert out.lines == [
        "Processing xlog segments from file archival for pg (batch size: 2)",
        f"\t{names[0]}",
        f"\t{names[1]}",
    ]
    out = Out()
    archive_wal(server, out, verbose=False)
    assert out.lines[0] == "Processing xlog segments from file archival for pg"
    out = Out()
    archive_wal(server, out, verbose=False)
    assert out.lines == []


class Crash(BaseException):
    """Stands for a kill -9 at a chosen instant."""


CRASH_POINTS: dict[str, tuple[Any, str, int, bool]] = {
    # (where, what, crash on call number, after that call)
    "before commit": (PosixBatch, "commit", 1, False),
    "mid links": (os, "link", 2, False),
    "after commit": (PosixBatch, "commit", 1, True),
    "before catalogue": (archiver, "append_entries", 1, False),
    "torn catalogue": (catalogue, "append_lines_durably", 1, False),
    "before source removal": (archiver, "remove_files", 1, False),
}


def _as_if_dead(server: ServerConfig) -> None:
    """Give our temporary files the PID of a dead process, as after a real kill -9."""
    mine = f".{os.getpid()}."
    for root, _, files in os.walk(server.wals_directory):
        for name in files:
            if name.startswith(".") and mine in name:
                os.rename(Path(root, name), Path(root, name.replace(mine, ".999999999.")))


@pytest.mark.parametrize("point", CRASH_POINTS)
@pytest.mark.parametrize("algo", [None, "gzip"])
def test_a_crash_at_each_step_is_finished_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str, algo: str | None
) -> None:
    server = make_server(tmp_path, compression=algo)
    streamed = write_segments(server.streaming_wals_directory, 1, 4)
    _live_partial(server, 5)
    shipped = write_segments(server.incoming_wals_directory, 20, 2)
    originals = {
        name: Path(directory, name).read_bytes()
        for directory, names in (
            (server.streaming_wals_directory, streamed),
            (server.incoming_wals_directory, shipped),
        )
        for name in names
    }
    archive_wal(server, Out())  # creates the catalogue: the crashes below hit a normal run
    for name in originals:
        os.unlink(archived_files(server)[name])
    os.unlink(server.xlogdb_path)
    Path(server.xlogdb_path).write_text("")
    for name, data in originals.items():
        kind = "streaming" if name in streamed else "incoming"
        Path(getattr(server, f"{kind}_wals_directory"), name).write_bytes(data)
    module, attr, on_call, after = CRASH_POINTS[point]
    real = getattr(module, attr)
    calls = []

    def crash(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) < on_call:
            return real(*args, **kwargs)
        if point == "torn catalogue":  # half of the batch's lines reached the file
            path, lines = args
            with open(path, "a") as handle:
                handle.write("".join(lines)[:-30])
        if after:
            real(*args, **kwargs)
        raise Crash(point)

    monkeypatch.setattr(module, attr, crash)
    with pytest.raises(Crash):
        archive_wal(server, Out())
    monkeypatch.setattr(module, attr, real)
    assert calls, "the crash point was never reached"
    _as_if_dead(server)
    result = archive_wal(server, Out())
    assert result.exit_code == 0
    files = archived_files(server)
    assert set(files) == set(originals)
    for name, data in originals.items():
        assert decompress_bytes(algo, files[name].read_bytes()) == data
    names = [line[0] for line in catalogue_lines(server)]
    assert sorted(names) == sorted(originals)
    assert os.listdir(server.incoming_wals_directory) == []
    assert os.listdir(server.streaming_wals_directory) == [f"{segment_name(1, 5)}.partial"]
    assert not os.path.exists(archive_journal_path(server))
    assert not os.path.exists(server.errors_directory) or not os.listdir(server.errors_directory)
    leftovers = [n for _, _, fs in os.walk(server.wals_directory) for n in fs if n[0] == "."]
    assert leftovers == []


def test_torn_catalogue_line_and_stale_temps_are_repaired(tmp_path: Path) -> None:
    server = make_server(tmp_path, compression="zstd")
    names = write_segments(server.incoming_wals_directory, 1, 2)
    archive_wal(server, Out())
    with open(server.xlogdb_path, "a") as handle:
        handle.write("0000000100000000000000")  # a torn append
    temp = f".{segment_name(1, 3)}.999999999.0a0b0c0d.tmp"  # of a dead writer
    stale = Path(server.wals_directory, names[0][:16], temp)
    stale.write_bytes(b"half")
    write_segments(server.incoming_wals_directory, 3, 1)
    archive_wal(server, Out())
    assert [line[0] for line in catalogue_lines(server)] == [*names, segment_name(1, 3)]
    assert not stale.exists()


def test_a_failing_file_does_not_stop_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(tmp_path, compression="gzip")
    names = write_segments(server.incoming_wals_directory, 1, 3)
    real = archiver.ingest.store_compressed

    def flaky(staged: Any, *args: Any) -> Any:
        if staged.name == names[1]:
            raise OSError(28, "No space left on device")
        return real(staged, *args)

    monkeypatch.setattr(archiver.ingest, "store_compressed", flaky)
    warnings = Out()
    result = archive_wal(server, Out(), warn=warnings)
    assert result.archived == [names[0], names[2]] and result.exit_code == 1
    assert os.listdir(server.incoming_wals_directory) == [names[1]]
    assert "No space left on device" in warnings.lines[0]
    monkeypatch.setattr(archiver.ingest, "store_compressed", real)
    assert archive_wal(server, Out()).archived == [names[1]]


def test_rebuild_xlogdb_after_archiving(tmp_path: Path) -> None:
    server = make_server(tmp_path, compression="xz")
    write_segments(server.streaming_wals_directory, 1, 3)
    old = f"{segment_name(1, 0)}.partial"
    Path(server.streaming_wals_directory, old).write_bytes(synthetic_segment(segment_name(1, 0)))
    _live_partial(server, 4)
    archive_wal(server, Out())
    lines = catalogue_lines(server)
    os.unlink(server.xlogdb_path)
    result = rebuild_xlogdb(server)
    assert (result.wal_file, result.partial) == (3, 1)
    assert sorted(catalogue_lines(server)) == sorted(lines)


def _sparse_segments(directory: str, count: int) -> None:
    for segno in range(1, count + 1):
        name = segment_name(1, segno)
        with open(os.path.join(directory, name), "wb") as handle:
            handle.write(synthetic_segment(name)[:64])
            handle.truncate(MiB)


def test_run_cost_does_not_grow_with_the_backlog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = []
    for backlog in (200, 20_000):
        server = make_server(tmp_path / str(backlog), archiver_batch_size=50)
        _identity(server)
        _sparse_segments(server.incoming_wals_directory, backlog)
        archive_wal(server, Out())  # the first run creates the catalogue and directories
        with pytest.MonkeyPatch.context() as patch:
            calls = Calls(patch)
            result = archive_wal(server, Out())
        assert len(result.archived) == 50
        counts.append(calls.counts)
    assert counts[0] == counts[1]
    per_file = sum(counts[1].values()) / 50
    # inspect (lstat, open), the twin look-up, the read for the digest, the link and the
    # source removal; directories and metadata once per batch
    assert per_file <= 10, counts[1]
