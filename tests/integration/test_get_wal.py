"""get-wal against real PostgreSQL 15 WAL: every place, every compression, .partial, bad names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from walvault.compression import ALGORITHMS, identify
from wvharness import (
    WALVAULT,
    make_segments,
    segment_names,
    start_receiver,
    streaming_server,
    wait_for,
)

MARKER = "walvault-get-wal-marker"


def get_wal(wv: Any, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``walvault -c CONF get-wal ARGS`` with binary stdout."""
    return subprocess.run(
        [*WALVAULT, "-c", str(wv.conf), "get-wal", *args], capture_output=True, timeout=60
    )


def wait_written(pg: Any) -> None:
    """Until the receiver has written everything the server has inserted so far."""
    target = pg.scalar("SELECT pg_current_wal_insert_lsn()")
    wait_for(
        lambda: pg.scalar(
            "SELECT write_lsn >= %s::pg_lsn FROM pg_stat_replication "
            "WHERE application_name = 'walvault_receive_wal'",
            (str(target),),
        ),
        what="receiver caught up",
    )


@pytest.fixture
def streamed(pg: Any, walvault_factory: Any) -> dict[str, Any]:
    """Segments streamed by receive-wal (then stopped), plus a .partial holding MARKER."""
    options = streaming_server(pg)
    wv = walvault_factory({"pg": options})
    receiver = start_receiver(wv, pg)
    closed = make_segments(pg, len(ALGORITHMS) + 2)
    pg.sql(f"INSERT INTO t VALUES (42, '{MARKER}')")
    wait_written(pg)
    streaming = Path(wv.server().streaming_wals_directory)
    wait_for(lambda: set(closed) <= set(segment_names(streaming)), what="segments streamed")
    assert wv.run("receive-wal", "--stop", "pg").returncode == 0
    receiver.wait(timeout=30)
    partials = [n for n in os.listdir(streaming) if n.endswith(".partial")]
    assert len(partials) == 1
    return {
        "wv": wv,
        "options": options,
        "closed": closed,
        "partial": partials[0],
        "streaming": streaming,
    }


def test_byte_identical_from_streaming_incoming_and_every_compression(
    streamed: dict[str, Any], tmp_path: Path
) -> None:
    wv, closed, streaming = streamed["wv"], streamed["closed"], streamed["streaming"]
    originals = {name: (streaming / name).read_bytes() for name in closed}
    server = wv.server()

    # streaming/
    result = get_wal(wv, "pg", closed[0])
    assert result.returncode == 0, result.stderr
    assert result.stdout == originals[closed[0]]

    # incoming/ (shipped by archive_command)
    Path(server.incoming_wals_directory).mkdir(exist_ok=True)
    os.rename(streaming / closed[1], Path(server.incoming_wals_directory) / closed[1])
    assert get_wal(wv, "pg", closed[1]).stdout == originals[closed[1]]

    # the archive, built by archive-wal with each compression in turn
    holding = tmp_path / "holding"
    holding.mkdir()
    for name in closed[2:]:
        os.rename(streaming / name, holding / name)
    for algorithm, name in zip(ALGORITHMS, closed[2:], strict=True):
        os.rename(holding / name, streaming / name)
        wv.write({"pg": {**streamed["options"], "compression": algorithm}})
        archived = wv.run("archive-wal", "pg")
        assert archived.returncode == 0, archived.stdout + archived.stderr
        stored = Path(server.wals_directory) / name[:16] / name
        assert identify(stored.read_bytes()[:8]) == algorithm
        result = get_wal(wv, "pg", name)
        assert result.returncode == 0, result.stderr
        assert result.stdout == originals[name], algorithm
        kept = get_wal(wv, "--keep-compression", "pg", name)
        assert kept.stdout == stored.read_bytes()
        out_dir = tmp_path / algorithm
        out_dir.mkdir()
        written = get_wal(wv, "-o", str(out_dir), "pg", name)
        assert written.returncode == 0, written.stderr
        assert f"into '{out_dir / name}' file".encode() in written.stdout
        assert (out_dir / name).read_bytes() == originals[name]
        assert os.listdir(stored.parent).count(name) == 1  # no temporary files left there
    assert not [n for n in os.listdir(server.wals_directory) if n.startswith(".")]

    # --peek lists what is available, in order, crossing nothing it should not
    peek = get_wal(wv, "--peek", "20", "pg", closed[2])
    assert peek.returncode == 0
    assert peek.stdout.decode().split() == closed[2:]


def test_partial_is_served_only_with_p(streamed: dict[str, Any]) -> None:
    wv, partial, streaming = streamed["wv"], streamed["partial"], streamed["streaming"]
    name = partial.removesuffix(".partial")
    missing = get_wal(wv, "pg", name)
    assert missing.returncode == 1
    assert f"ERROR: WAL file '{name}' not found in server 'pg'" in missing.stderr.decode()
    served = get_wal(wv, "-P", "pg", name)
    assert served.returncode == 0, served.stderr
    assert served.stdout == (streaming / partial).read_bytes()
    assert MARKER.encode() in served.stdout
    # and a peek never lists it
    assert get_wal(wv, "--peek", "5", "pg", name).stdout == b""


def test_test_option_and_option_conflicts(streamed: dict[str, Any]) -> None:
    wv, closed = streamed["wv"], streamed["closed"]
    ready = get_wal(wv, "--test", "pg", "DUMMY")
    assert ready.returncode == 0
    assert ready.stdout.decode().strip() == "Ready to retrieve WAL files from the server pg"
    # get-wal's 1 means only "no such WAL" (PostgreSQL ends recovery on it): a problem of its
    # own is 200, "could not answer", which makes PostgreSQL stop (Barman exits 1 for these)
    both = get_wal(wv, "-z", "--keep-compression", "pg", closed[0])
    assert both.returncode == 200
    assert "not allowed with argument `keep-compression`" in both.stderr.decode()
    unknown = get_wal(wv, "nosuch", closed[0])
    assert unknown.returncode == 200 and b"unknown server 'nosuch'" in unknown.stderr


AUDITED = """
import json, sys
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], str):
        opened.append(args[0])
sys.addaudithook(hook)
from walvault.cli.main import main
code = main(sys.argv[1:])
sys.stdout.flush()
print(json.dumps(opened), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "00000001000000000000000G",
        "000000010000000000000001\n",
        "000000010000000000000001/../../../../etc/passwd",
        "00000001.history.partial",
    ],
)
def test_malformed_names_exit_3_and_read_nothing(walvault_factory: Any, name: str) -> None:
    wv = walvault_factory(
        {"pg": {"conninfo": "host=nowhere", "streaming_archiver": "on", "slot_name": "s"}}
    )
    streaming = Path(wv.server().streaming_wals_directory)
    streaming.mkdir(parents=True)
    (streaming / "000000010000000000000001").write_bytes(b"secret")
    for option in ([], ["-P"], ["--peek", "3"], ["-o", "/tmp"]):
        result = subprocess.run(
            [sys.executable, "-c", AUDITED, "-c", str(wv.conf), "get-wal", *option, "pg", name],
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 3, result.stderr
        lines = result.stderr.decode().splitlines()
        assert lines[0].startswith("ERROR: '") and "is not a valid WAL file name" in lines[0]
        assert result.stdout == b""
        opened = json.loads(lines[-1])
        assert not [p for p in opened if str(wv.home) in p or "passwd" in p], opened


def test_get_wal_with_archive_and_streaming_copies_prefers_the_archive(
    streamed: dict[str, Any],
) -> None:
    wv, closed, streaming = streamed["wv"], streamed["closed"], streamed["streaming"]
    server = wv.server()
    archived = Path(server.wals_directory) / closed[0][:16] / closed[0]
    archived.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(streaming / closed[0], archived)
    (streaming / closed[0]).write_bytes(b"not this one")
    assert get_wal(wv, "pg", closed[0]).stdout == archived.read_bytes()
