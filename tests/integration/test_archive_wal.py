"""archive-wal and rebuild-xlogdb against segments of a real PostgreSQL 15 cluster."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from walfiles import MiB, backup_history
from walsupply import archived_files, catalogue_lines, copy_closed_segments, stream_segments
from walvault.compression import ALGORITHMS, compress_bytes, decompress_bytes
from walvault.locks import ServerLock
from walvault.wal.names import Segment
from wvharness import streaming_server

LINE_RE = re.compile(
    r"([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)"
    r"\t\d+\t\d+\.\d+\t(None|gzip|bzip2|xz|zstd|lz4)\tNone"
)


def _fill(src: Path, dest: str) -> None:
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(src):
        shutil.copy2(src / name, Path(dest, name))


def test_every_compression_with_streamed_segments(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    streamed = tmp_path / "streamed"
    names = stream_segments(pg, streamed, 4)
    (live,) = [n for n in os.listdir(streamed) if n.endswith(".partial")]
    originals = {n: (streamed / n).read_bytes() for n in names}
    mtimes = {n: (streamed / n).stat().st_mtime for n in names}
    algos = [None, *ALGORITHMS]
    servers = {f"pg_{a or 'none'}": streaming_server(pg, compression=a or "none") for a in algos}
    wv = walvault_factory(servers)
    for server in servers:
        _fill(streamed, wv.server(server).streaming_wals_directory)
    run = wv.run("archive-wal", "all")
    assert run.returncode == 0, run.stderr
    sysid = str(pg.system_identifier())
    for algo in algos:
        server = wv.server(f"pg_{algo or 'none'}")
        block = [
            f"Processing xlog segments from streaming for {server.name}",
            *(f"\t{n}" for n in sorted(names)),
        ]
        assert "\n".join(block) in run.stdout
        files = archived_files(server)
        assert set(files) == set(names)
        for name in names:
            path = files[name]
            assert path == Path(server.wals_directory, name[:16], name)
            assert decompress_bytes(algo, path.read_bytes()) == originals[name]
        raw = Path(server.xlogdb_path).read_text()
        assert raw.endswith("\n")
        lines = catalogue_lines(server)
        assert [line[0] for line in lines] == sorted(names)
        for line in lines:
            assert LINE_RE.fullmatch("\t".join(line)), line
            assert int(line[1]) == files[line[0]].stat().st_size
            assert float(line[2]) == mtimes[line[0]]
            assert line[3] == (algo or "None")
        assert os.listdir(server.streaming_wals_directory) == [live]
        identity = json.loads(Path(server.identity_path).read_text())
        assert identity == {"systemid": sysid, "version": "15"}


def test_what_lands_where(pg: Any, pg_factory: Any, walvault_factory: Any, tmp_path: Path) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, archiver="on", compression="zstd")})
    server = wv.server("pg")
    incoming = Path(server.incoming_wals_directory)
    streaming = Path(server.streaming_wals_directory)
    segs = copy_closed_segments(pg, 6, tmp_path / "closed")
    closed = {n: (tmp_path / "closed" / n).read_bytes() for n in segs}
    other = pg_factory("other")
    foreign = copy_closed_segments(other, 1, tmp_path / "other")[0]
    foreign_name = segs[-1][:16] + "000000FE"
    incoming.mkdir(parents=True)
    streaming.mkdir(parents=True)
    # incoming: a plain segment, one compressed by the client, a backup label, a promotion
    # .partial, a segment of another cluster and an unknown file
    (incoming / segs[0]).write_bytes(closed[segs[0]])
    client = compress_bytes("gzip", closed[segs[1]])
    (incoming / segs[1]).write_bytes(client)
    start = Segment.from_name(segs[2]).to_lsn(MiB) + 0x28
    label, label_text = backup_history(start, start + 0x1000)
    assert label == f"{segs[2]}.00000028.backup"
    (incoming / label).write_text(label_text)
    (incoming / f"{segs[3]}.partial").write_bytes(closed[segs[3]])
    foreign_bytes = (tmp_path / "other" / foreign).read_bytes()
    (incoming / foreign_name).write_bytes(foreign_bytes)
    (incoming / "notes.txt").write_text("?")
    # streaming: a history file, an old-timeline .partial, segments, the live partial
    history = "00000002.history"
    (streaming / history).write_text("1\t0/5000000\tno recovery target specified\n")
    old_partial = f"{segs[2]}.partial"
    (streaming / old_partial).write_bytes(closed[segs[2]])
    (streaming / segs[4]).write_bytes(closed[segs[4]])
    live = f"{segs[5]}.partial"
    (streaming / live).write_bytes(closed[segs[5]][:8192] + bytes((1 << 20) - 8192))
    run = wv.run("archive-wal", "pg")
    assert run.returncode == 1, run.stderr  # a foreign segment is worth a non-zero exit
    assert run.stdout.splitlines() == [
        "Processing xlog segments from streaming for pg",
        f"\t{old_partial}",
        f"\t{segs[4]}",
        f"\t{history}",
        "Processing xlog segments from file archival for pg",
        f"\t{segs[0]}",
        f"\t{segs[1]}",
        f"\t{label}",
        f"\t{segs[3]}.partial",
        f"\t{foreign_name}",
        f"\tError: {foreign_name} belongs to another PostgreSQL cluster than server pg (system "
        f"identifier {other.system_identifier()}, expected {pg.system_identifier()}). "
        "File moved to errors directory.",
        "Some unknown objects have been found while processing xlog segments for pg. "
        "Objects moved to errors directory:",
        "\tnotes.txt",
    ]
    files = archived_files(server)
    wals = Path(server.wals_directory)
    assert files[history] == wals / history
    assert files[old_partial] == wals / segs[2][:16] / old_partial
    assert files[label] == wals / segs[2][:16] / label
    assert files[segs[1]].read_bytes() == client  # kept as the client compressed it
    assert decompress_bytes("zstd", files[segs[0]].read_bytes()) == closed[segs[0]]
    assert sorted(os.listdir(streaming)) == [live]
    assert os.listdir(incoming) == []
    errors = sorted(os.listdir(server.errors_directory))
    assert [re.sub(r"\.\d{8}T\d{6}Z", ".<stamp>", e) for e in errors] == [
        f"{foreign_name}.<stamp>.foreign",
        "notes.txt.<stamp>.unknown",
    ]
    kinds = {line[0]: line[3] for line in catalogue_lines(server)}
    assert kinds[segs[1]] == "gzip" and kinds[segs[0]] == "zstd" and kinds[history] == "zstd"

    # duplicates: the same bytes are dropped silently, different bytes go to errors/
    (incoming / segs[0]).write_bytes(closed[segs[0]])
    (incoming / segs[1]).write_bytes(closed[segs[1]])  # same content, this time uncompressed
    (incoming / segs[4]).write_bytes(closed[segs[4]][:-1] + b"X")
    before = catalogue_lines(server)
    run = wv.run("archive-wal", "pg")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "Processing xlog segments from streaming for pg",
        "\tno file found",
        "Processing xlog segments from file archival for pg",
        f"\t{segs[0]}",
        f"\t{segs[1]}",
        f"\t{segs[4]}",
        f"\tError: {segs[4]} is already present in server pg. File moved to errors directory.",
    ]
    assert catalogue_lines(server) == before
    assert os.listdir(incoming) == []
    dup = [e for e in os.listdir(server.errors_directory) if e.endswith(".duplicate")]
    assert len(dup) == 1 and dup[0].startswith(f"{segs[4]}.")
    assert (Path(server.errors_directory) / dup[0]).read_bytes()[-1:] == b"X"


def test_junk_goes_to_errors_with_its_reason(
    pg: Any, walvault_factory: Any, tmp_path: Path
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, archiver="on")})
    server = wv.server("pg")
    incoming = Path(server.incoming_wals_directory)
    streaming = Path(server.streaming_wals_directory)
    closed = tmp_path / "closed"
    first, second = copy_closed_segments(pg, 2, closed)
    incoming.mkdir(parents=True)
    shutil.copy2(closed / first, incoming / first)
    assert wv.run("archive-wal", "pg").returncode == 0  # the archive now knows its segment size
    streaming.mkdir(parents=True)
    zeros = f"{second}.partial"
    (streaming / zeros).write_bytes(bytes(20 << 20))  # header-less, 20 MiB: not pg_receivewal's
    (streaming / second).write_bytes((closed / second).read_bytes())
    live = f"{second[:16]}{int(second[16:], 16) + 5:08X}.partial"
    (streaming / live).write_bytes(b"")  # the one being written: left alone
    (streaming / "00000002.history").write_text("no recovery target specified\n")
    label = f"{first}.00000028.backup"
    (incoming / label).write_text("START WAL LOCATION: 0/3000028\n")
    run = wv.run("archive-wal", "pg")
    assert run.returncode == 1, run.stderr  # invalid files are worth a non-zero exit
    moved = "File moved to errors directory."
    assert run.stdout.splitlines() == [
        "Processing xlog segments from streaming for pg",
        f"\t{second}",
        f"\t{zeros}",
        f"\tError: {zeros} is not a valid WAL file for its name (larger than 1048576 bytes, "
        f"the segment size for a partial file). {moved}",
        "\t00000002.history",
        "\tError: 00000002.history is not a valid WAL file for its name (not a timeline "
        "history file: line 1: malformed timeline history line 'no recovery target "
        f"specified' (expected <parent TLI><TAB><switch LSN><TAB><reason>)). {moved}",
        "Processing xlog segments from file archival for pg",
        f"\t{label}",
        f"\tError: {label} is not a valid WAL file for its name (not a backup history file: no "
        "CHECKPOINT LOCATION, BACKUP METHOD, BACKUP FROM, START TIME, LABEL, START TIMELINE, "
        f"STOP WAL LOCATION, STOP TIME, STOP TIMELINE line). {moved}",
    ]
    assert sorted(os.listdir(streaming)) == [live]
    assert sorted(archived_files(server)) == [first, second]
    errors = sorted(re.sub(r"\.\d{8}T\d{6}Z", "", e) for e in os.listdir(server.errors_directory))
    assert errors == sorted([f"{zeros}.invalid", "00000002.history.invalid", f"{label}.invalid"])
    log = (wv.home / "walvault.log").read_text()
    assert f"Error: {zeros} is not a valid WAL file for its name (larger than" in log
    check = wv.run("check", "pg")
    assert "\tarchiver errors: FAILED (invalid content: 3)" in check.stdout.splitlines()


def test_rebuild_xlogdb_and_missing_catalogue(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, compression="lz4")})
    server = wv.server("pg")
    streaming = Path(server.streaming_wals_directory)
    names = copy_closed_segments(pg, 3, streaming)
    assert wv.run("archive-wal", "pg").returncode == 0
    archived_before = catalogue_lines(server)
    assert [line[0] for line in archived_before] == names[:2]  # the newest one is held back
    old_partial = f"{names[0][:16]}00000000.partial"
    Path(server.wals_directory, names[0][:16], old_partial).write_bytes(b"")
    os.unlink(server.xlogdb_path)
    run = wv.run("rebuild-xlogdb", "pg")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "Rebuilding xlogdb for server pg",
        "Done rebuilding xlogdb for server pg (history: 0, backup_labels: 0, wal_file: 2, "
        "partial: 1)",
    ]
    rebuilt = catalogue_lines(server)
    assert [line[0] for line in rebuilt] == [old_partial, *names[:2]]
    assert rebuilt[1:] == archived_before
    # archive-wal with no catalogue rebuilds it first, and writes no line twice
    os.unlink(server.xlogdb_path)
    (streaming / f"{names[2][:16]}000000FF.partial").write_bytes(b"")  # now names[2] can go
    run = wv.run("archive-wal", "pg")
    assert run.returncode == 0, run.stderr
    assert [line[0] for line in catalogue_lines(server)] == [old_partial, *names]


def test_concurrent_run_is_skipped_and_batch_sizes(pg: Any, walvault_factory: Any) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, streaming_archiver_batch_size=2)})
    server = wv.server("pg")
    names = copy_closed_segments(pg, 4, Path(server.streaming_wals_directory))
    with ServerLock(server.lock_directory, "pg", "archive-wal"):
        run = wv.run("archive-wal", "pg")
    assert run.returncode == 0
    assert run.stdout == (
        "Another archive-wal process is already running on server pg. Skipping to the next server\n"
    )
    run = wv.run("archive-wal", "pg")
    assert run.stdout.splitlines() == [
        "Processing xlog segments from streaming for pg (batch size: 2)",
        f"\t{names[0]}",
        f"\t{names[1]}",
    ]
    run = wv.run("archive-wal", "pg")
    assert run.stdout.splitlines() == [
        "Processing xlog segments from streaming for pg",
        f"\t{names[2]}",
    ]


@pytest.mark.parametrize("command", ["archive-wal", "rebuild-xlogdb"])
def test_unknown_server(walvault_factory: Any, command: str) -> None:
    wv = walvault_factory({"pg": {"conninfo": "host=/nowhere", "archiver": "on"}})
    run = wv.run(command, "nope")
    assert run.returncode == 1 and "unknown server 'nope'" in run.stderr
