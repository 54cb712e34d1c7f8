"""Barman 3.20.1 and walvault on one archive: each reads, byte for byte, what the other wrote.

Real segments streamed from a PostgreSQL 15 cluster (1 MiB segments, so that moto's memory
stays small), the real Barman 3.20.1 (``WALVAULT_BARMAN_BIN``, see tests/barmanharness.py),
moto's S3 server for the buckets, a throwaway sshd for barman-wal-restore:

* walvault's archive in a bucket (``wals_directory = s3://BUCKET/PATH``) under barman-cloud's
  keys, restored by ``barman-cloud-wal-restore``, for zstd, gzip and no compression;
* Barman's own cloud WAL storage (``barman archive-wal`` into ``s3://``) and
  ``barman-cloud-wal-archive`` uploads, served by ``walvault get-wal`` and
  ``walvault-wal-restore ... local`` from the same bucket;
* a local archive written by ``barman archive-wal`` (uncompressed, and zstd: Barman writes
  its frames without a content checksum and walvault has no digest recorded for them) served
  by walvault, and walvault's local archive (zstd with checksums, digests kept in
  ``<backup_directory>/walvault-meta/``, outside ``wals/``) read by ``barman get-wal``,
  ``barman rebuild-xlogdb`` and ``barman check``;
* ``barman-wal-restore`` (Barman's restore_command client) against walvault's get-wal over ssh.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from barmanharness import (
    BarmanBroken,
    barman_named_walvault,
    barman_server,
    find_barman,
    ssh_shim,
)
from pgharness import PgCluster
from s3harness import TEST_ENVIRON, MotoServer
from sshharness import Sshd, sshd_available
from walsupply import stream_segments
from wvharness import make_segments, segment_names, start_receiver, streaming_server, wait_for

SEGMENTS = 3
WALVAULT_WAL_RESTORE = str(Path(sys.executable).parent / "walvault-wal-restore")
#: barman-cloud's object extensions, as walvault's archive must use them
EXTENSIONS = {"zstd": ".zst", "gzip": ".gz", None: ""}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: a timeline history file as PostgreSQL writes one at a promotion (history files sit at the
#: top of wals/, outside the hash directories, in both tools and both kinds of store)
HISTORY = "00000002.history"
HISTORY_TEXT = b"1\t0/5000000\tno recovery target specified\n"


@dataclass
class Supply:
    """Segments streamed once per module by pg_receivewal from ``pg`` (kept running), the
    ``.partial`` it left, and :data:`HISTORY`."""

    pg: PgCluster
    directory: Path
    names: list[str]

    @property
    def partial(self) -> str:
        (name,) = [n for n in os.listdir(self.directory) if n.endswith(".partial")]
        return name

    def data(self, name: str) -> bytes:
        return (self.directory / name).read_bytes()

    def fill(self, dest: Path | str, names: list[str] | None = None) -> None:
        """Copy segments (default: all), the ``.partial`` and the history file into a
        streaming directory."""
        os.makedirs(dest, exist_ok=True)
        for name in [*(self.names if names is None else names), self.partial, HISTORY]:
            shutil.copy2(self.directory / name, Path(dest, name))


@pytest.fixture(scope="module")
def supply(pg_bindir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supply]:
    base = tmp_path_factory.mktemp("barman-interop")
    cluster = PgCluster.create(base / "pg", name="primary", bindir=pg_bindir)
    try:
        names = stream_segments(cluster, base / "streamed", SEGMENTS)
        (base / "streamed" / HISTORY).write_bytes(HISTORY_TEXT)
        yield Supply(cluster, base / "streamed", names)
    finally:
        cluster.destroy()


@pytest.fixture
def aws_environ(monkeypatch: pytest.MonkeyPatch, moto_server: MotoServer) -> dict[str, str]:
    """The test credentials in this process's environment, so that every walvault process
    (receive-wal, archive-wal, get-wal, the restore client) has them; the endpoint is the
    ``aws_endpoint_url`` option of each configuration."""
    for key, value in TEST_ENVIRON.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return dict(TEST_ENVIRON)


def bucket_keys(moto: MotoServer, bucket: str, prefix: str = "") -> list[str]:
    """Every key of ``bucket`` under ``prefix`` (boto3, not walvault's driver)."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto.endpoint, **_boto_credentials())
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return sorted(keys)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": TEST_ENVIRON["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": TEST_ENVIRON["AWS_SECRET_ACCESS_KEY"],
        "region_name": TEST_ENVIRON["AWS_REGION"],
    }


def zstd_has_checksum(data: bytes) -> bool:
    """Whether the (first) zstd frame of ``data`` carries a content checksum (RFC 8878)."""
    import zstandard

    assert data[:4] == ZSTD_MAGIC, "not a zstd frame"
    return bool(zstandard.get_frame_parameters(data).has_checksum)


def wait_streamed(pg: PgCluster, streaming: Path, names: list[str]) -> None:
    """Write into the segment after ``names``, then wait until ``names`` are complete in
    ``streaming`` and that segment's ``.partial`` is there (archive-wal holds the newest
    segment back until then, as Barman does)."""
    pg.sql("INSERT INTO t VALUES (0, 'open the next segment')")

    def done() -> bool:
        present = os.listdir(streaming)
        later = [n for n in present if n.endswith(".partial") and n > max(names)]
        return set(names) <= set(present) and bool(later)

    wait_for(done, what="segments streamed, and the next one begun")


def restore_local(
    conf: Path, name: str, dest: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``walvault-wal-restore -c CONF [EXTRA] local pg NAME DEST``."""
    return subprocess.run(
        [WALVAULT_WAL_RESTORE, "-c", str(conf), *extra, "local", "pg", name, str(dest)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def get_wal(wv_or_conf: Any, name: str, *extra: str) -> subprocess.CompletedProcess[bytes]:
    """``walvault -c CONF get-wal [EXTRA] pg NAME`` with the segment as bytes on stdout."""
    conf = wv_or_conf if isinstance(wv_or_conf, Path) else wv_or_conf.conf
    return subprocess.run(
        [sys.executable, "-m", "walvault.cli.main", "-c", str(conf), "get-wal", *extra, "pg", name],
        capture_output=True,
        timeout=120,
    )


# --------------------------------------------------------------------- object storage


@pytest.mark.parametrize("algo", ["zstd", "gzip", None], ids=["zstd", "gzip", "none"])
def test_walvault_bucket_is_restored_by_barman_cloud_wal_restore(
    algo: str | None,
    pg: PgCluster,
    walvault_factory: Any,
    barman_factory: Any,
    moto_server: MotoServer,
    s3_bucket: str,
    aws_environ: dict[str, str],
    tmp_path: Path,
) -> None:
    url = f"s3://{s3_bucket}/walvault"
    wv = walvault_factory(
        {
            "pg": streaming_server(
                pg,
                wals_directory=url,
                aws_endpoint_url=moto_server.endpoint,
                compression=algo or "none",
            )
        }
    )
    streaming = Path(wv.server("pg").streaming_wals_directory)
    start_receiver(wv, pg)
    names = make_segments(pg, SEGMENTS)
    wait_streamed(pg, streaming, names)
    originals = {n: (streaming / n).read_bytes() for n in names}
    (streaming / HISTORY).write_bytes(HISTORY_TEXT)
    originals[HISTORY] = HISTORY_TEXT
    run = wv.run("archive-wal", "pg")
    assert run.returncode == 0, run.stdout + run.stderr

    # exactly barman-cloud's keys: PATH/<server>/wals/<hash>/<name><ext>, history files
    # PATH/<server>/wals/<name><ext>
    ext = EXTENSIONS[algo]
    keys = bucket_keys(moto_server, s3_bucket, "walvault/pg/wals/")
    expected = [f"walvault/pg/wals/{n[:16]}/{n}{ext}" for n in names]
    expected.append(f"walvault/pg/wals/{HISTORY}{ext}")
    assert set(expected) <= set(keys), keys
    assert not set(segment_names(streaming)) & set(names), "archived segments left streaming/"
    assert not any(Path(wv.home).rglob("wals")), "an s3:// archive left a local wals/"

    barman = barman_factory({}, s3_endpoint=moto_server.endpoint)
    for name in originals:
        dest = tmp_path / f"restored-{name}"
        restore = barman.cloud("barman-cloud-wal-restore", url, "pg", name, str(dest))
        assert restore.returncode == 0, restore.stdout + restore.stderr
        assert dest.read_bytes() == originals[name], f"{name} differs after barman-cloud"
    # a segment the bucket does not have: barman-cloud-wal-restore's "not found" (exit 1)
    missing = barman.cloud(
        "barman-cloud-wal-restore", url, "pg", f"{names[-1][:16]}000000F0", str(tmp_path / "x")
    )
    assert missing.returncode == 1, missing.stdout + missing.stderr
    # walvault's WAL objects do not confuse barman-cloud's backup catalogue
    listing = barman.cloud("barman-cloud-backup-list", url, "pg")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "Backup ID" in listing.stdout and listing.stdout.count("\n") == 1, listing.stdout


@pytest.mark.parametrize("algo", ["gzip", "zstd"])
def test_barman_cloud_wal_storage_is_served_by_walvault(
    algo: str,
    supply: Supply,
    walvault_factory: Any,
    barman_factory: Any,
    moto_server: MotoServer,
    s3_bucket: str,
    aws_environ: dict[str, str],
    tmp_path: Path,
) -> None:
    url = f"s3://{s3_bucket}/barman"
    server_mode, by_client = supply.names[:-1], supply.names[-1]
    barman = barman_factory(
        {"pg": barman_server(supply.pg, wals_directory=url, compression=algo)},
        s3_endpoint=moto_server.endpoint,
    )
    supply.fill(barman.home / "pg" / "streaming", server_mode)
    archived = barman.run("archive-wal", "pg")
    assert archived.returncode == 0, archived.stdout + archived.stderr + barman.log_text()
    segment = tmp_path / by_client
    segment.write_bytes(supply.data(by_client))
    flag = {"gzip": "--gzip", "zstd": "--zstd"}[algo]
    uploaded = barman.cloud("barman-cloud-wal-archive", flag, url, "pg", str(segment))
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    ext = EXTENSIONS[algo]
    keys = bucket_keys(moto_server, s3_bucket, "barman/pg/wals/")
    expected = [f"barman/pg/wals/{n[:16]}/{n}{ext}" for n in supply.names]
    assert sorted([*expected, f"barman/pg/wals/{HISTORY}{ext}"]) == keys

    # walvault configured for zstd looks for .zst first: Barman's .gz objects it finds by
    # one LIST of the name's prefix
    options = {"wals_directory": url, "aws_endpoint_url": moto_server.endpoint}
    wv = walvault_factory({"pg": streaming_server(supply.pg, compression="zstd", **options)})
    for name in [*supply.names, HISTORY]:
        got = get_wal(wv, name)
        assert got.returncode == 0, got.stderr.decode()
        assert got.stdout == supply.data(name), f"walvault get-wal: {name} differs"
        dest = tmp_path / f"restored-{name}"
        restore = restore_local(wv.conf, name, dest)
        assert restore.returncode == 0, restore.stdout + restore.stderr
        assert dest.read_bytes() == supply.data(name), f"walvault-wal-restore: {name} differs"


# --------------------------------------------------------------------- local archives


@pytest.mark.parametrize("algo", [None, "zstd"], ids=["none", "zstd"])
def test_barman_local_archive_is_served_by_walvault(
    algo: str | None, supply: Supply, barman_factory: Any, tmp_path: Path
) -> None:
    barman = barman_factory({"pg": barman_server(supply.pg, compression=algo)})
    supply.fill(barman.home / "pg" / "streaming")
    archived = barman.run("archive-wal", "pg")
    assert archived.returncode == 0, archived.stdout + archived.stderr + barman.log_text()
    wals = barman.home / "pg" / "wals"
    for name in supply.names:
        stored = (wals / name[:16] / name).read_bytes()
        if algo == "zstd":
            # what makes this case matter: nothing but the header vouches for the content
            assert not zstd_has_checksum(stored), "Barman now writes zstd checksums"
        else:
            assert stored == supply.data(name)
    assert (wals / HISTORY).exists()
    assert not (barman.home / "pg" / "walvault-meta").exists()

    # walvault reads Barman's own configuration file
    for name in [*supply.names, HISTORY]:
        got = get_wal(barman.conf, name)
        assert got.returncode == 0, got.stderr.decode()
        assert got.stdout == supply.data(name), f"walvault get-wal: {name} differs"
        dest = tmp_path / f"restored-{name}"
        restore = restore_local(barman.conf, name, dest)
        assert restore.returncode == 0, restore.stdout + restore.stderr
        assert dest.read_bytes() == supply.data(name), f"walvault-wal-restore: {name} differs"
    peek = get_wal(barman.conf, supply.names[0], "--peek", "10")
    assert peek.returncode == 0, peek.stderr.decode()
    assert peek.stdout.decode().split() == supply.names


def walvault_local_archive(supply: Supply, walvault_factory: Any, **options: Any) -> Any:
    """A walvault home whose local archive holds the supply (zstd unless told)."""
    options = {"compression": "zstd", "slot_name": "supply", **options}
    wv = walvault_factory({"pg": streaming_server(supply.pg, **options)})
    supply.fill(wv.server("pg").streaming_wals_directory)
    run = wv.run("archive-wal", "pg")
    assert run.returncode == 0, run.stdout + run.stderr
    return wv


def test_walvault_local_archive_is_read_by_barman(
    pg: PgCluster, walvault_factory: Any, barman_factory: Any
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, compression="zstd")})
    server = wv.server("pg")
    streaming = Path(server.streaming_wals_directory)
    start_receiver(wv, pg)
    names = make_segments(pg, SEGMENTS)
    wait_streamed(pg, streaming, names)
    originals = {n: (streaming / n).read_bytes() for n in names}
    (streaming / HISTORY).write_bytes(HISTORY_TEXT)
    originals[HISTORY] = HISTORY_TEXT
    run = wv.run("archive-wal", "pg")
    assert run.returncode == 0, run.stdout + run.stderr
    wals = Path(server.wals_directory)
    assert (wals / HISTORY).exists()
    for name in names:
        stored = (wals / name[:16] / name).read_bytes()
        assert zstd_has_checksum(stored), "walvault writes zstd frames with checksums"
    meta = Path(server.backup_directory) / "walvault-meta"
    assert meta.is_dir() and any(meta.rglob("*")), "walvault records digests beside wals/"

    # Barman on walvault's home: the same layout, locks and catalogue
    barman = barman_factory(
        {"pg": barman_server(pg, conninfo=pg.superuser_conninfo(), compression="zstd")},
        barman_home=wv.home,
    )
    for name in originals:
        got = barman.run("get-wal", "pg", name, binary=True)
        assert got.returncode == 0, got.stderr.decode() + barman.log_text()
        assert got.stdout == originals[name], f"barman get-wal: {name} differs"
    leftovers = [p.name for p in wals.rglob(".*")]
    assert not leftovers, f"barman get-wal left temporary files: {leftovers}"

    # everything walvault keeps beside wals/ (walvault-meta/, its journal) is not Barman's
    # business: Barman looks only at wals/ and says nothing about the rest
    check = barman.run("check", "pg")
    verdicts = dict(_check_lines(check.stdout))
    failed = {k: v for k, v in verdicts.items() if v != "OK"}
    assert check.returncode == 0 and not failed, check.stdout + barman.log_text()
    for item in ("directories", "compression settings", "archiver errors", "systemid coherence"):
        assert verdicts.get(item) == "OK", check.stdout
    assert verdicts.get("receive-wal running") == "OK", "Barman sees walvault's receiver lock"
    # Barman prints its "WAL archive" line only when it finds the archive empty or unusable
    assert "WAL archive" not in verdicts, check.stdout

    before = Path(server.xlogdb_path).read_text().splitlines()
    rebuilt = barman.run("rebuild-xlogdb", "pg")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert rebuilt.stdout.strip().endswith(
        f"Done rebuilding xlogdb for server pg (history: 1, backup_labels: 0, "
        f"wal_file: {len(before) - 1})"
    ), rebuilt.stdout
    assert "WARNING" not in rebuilt.stdout + rebuilt.stderr + barman.log_text()
    after = [line.split("\t") for line in Path(server.xlogdb_path).read_text().splitlines()]
    assert [line[0] for line in after] == [line.split("\t")[0] for line in before]
    assert {line[3] for line in after} == {"zstd"}, after
    # and walvault still serves its archive with the catalogue Barman rebuilt
    for name in originals:
        got = get_wal(wv, name)
        assert got.returncode == 0, got.stderr.decode()
        assert got.stdout == originals[name]


def _check_lines(text: str) -> Iterator[tuple[str, str]]:
    """``barman check``'s ``\\tname: OK|FAILED (...)`` lines as (name, verdict)."""
    for line in text.splitlines():
        name, sep, verdict = line.strip().partition(": ")
        if sep and line.startswith(("\t", " ")):
            yield name, verdict.split(" ")[0]


# --------------------------------------------------------------------- barman-wal-restore


def test_barman_wal_restore_against_walvault_over_ssh(
    supply: Supply,
    walvault_factory: Any,
    barman_factory: Any,
    walvault_sshd: Any,
    tmp_path: Path,
) -> None:
    wv = walvault_local_archive(supply, walvault_factory)
    barman = barman_factory({})
    shim = ssh_shim(tmp_path / "ssh-shim", walvault_sshd.ssh_command)
    spool = tmp_path / "spool"
    common = ["-U", getpass.getuser(), "--port", str(walvault_sshd.port), "-c", str(wv.conf)]
    common += ["--spool-dir", str(spool)]

    def restore(*args: str) -> subprocess.CompletedProcess[str]:
        return barman.wal_restore(*common, *args, ssh_dir=shim)

    ready = restore("-t", "127.0.0.1", "pg", "DUMMY", "DUMMY")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "Ready to retrieve WAL files from the server pg" in ready.stdout

    first, second, third = supply.names
    dest = tmp_path / "RECOVERYXLOG"
    found = restore("127.0.0.1", "pg", first, str(dest))
    assert found.returncode == 0, found.stdout + found.stderr
    assert dest.read_bytes() == supply.data(first)

    # -p 3: Barman's client peeks (walvault's get-wal --peek) and fetches ahead into its spool
    parallel = restore("-p", "3", "127.0.0.1", "pg", second, str(dest))
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    assert dest.read_bytes() == supply.data(second)
    assert (spool / third).read_bytes() == supply.data(third)

    # -P: the streamed .partial stands in for the segment being written (RPO 0)
    partial = supply.partial.removesuffix(".partial")
    streamed = restore("-P", "127.0.0.1", "pg", partial, str(dest))
    assert streamed.returncode == 0, streamed.stdout + streamed.stderr
    assert dest.read_bytes() == supply.data(supply.partial)

    # not in the archive: get-wal's 1 comes through as 1, PostgreSQL's "no such file"
    absent = f"{first[:16]}000000F0"
    missing = restore("127.0.0.1", "pg", absent, str(dest))
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "ERROR: Remote 'barman get-wal' command has failed!" in missing.stderr
    assert f"WAL file '{absent}' not found in server 'pg'" in missing.stderr

    # corrupt: walvault's get-wal exits 200 and Barman's client passes it through unchanged
    # (it remaps only ssh's 255, to 2), so PostgreSQL (> 125) stops the recovery instead of
    # promoting.  The client opened WAL_DEST for writing before fetching and leaves it there
    # (truncated, with whatever arrived before the error); PostgreSQL ignores a file whose
    # restore_command failed.
    stored = Path(wv.server("pg").wals_directory, third[:16], third)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    shutil.rmtree(spool)  # the spooled good copy would be served before any ssh
    bad = tmp_path / "BADXLOG"
    corrupt = restore("127.0.0.1", "pg", third, str(bad))
    assert corrupt.returncode == 200, corrupt.stdout + corrupt.stderr
    assert "ERROR: Remote 'barman get-wal' command has failed!" in corrupt.stderr
    assert third in corrupt.stderr
    assert bad.exists() and bad.stat().st_size < len(supply.data(third))


def test_barman_clients_find_walvault_through_barmans_default_config(
    supply: Supply, walvault_factory: Any, barman_factory: Any, tmp_path: Path
) -> None:
    """``barman-wal-archive`` and ``barman-wal-restore`` without ``-c`` send ``barman put-wal``
    / ``get-wal`` without ``--config``: on a host where ``barman`` runs walvault, walvault
    must find Barman's file where Barman would (here ``~/.barman.conf`` of the ssh session;
    walvault's own locations come first and are absent)."""
    why = sshd_available()
    if why is not None:
        pytest.skip(why)
    wv = walvault_local_archive(supply, walvault_factory)
    home = tmp_path / "session-home"
    home.mkdir()
    options = streaming_server(supply.pg, compression="zstd", slot_name="supply", archiver="on")
    barman_conf = home / ".barman.conf"
    barman_conf.write_text(
        f"[barman]\nbarman_user = {getpass.getuser()}\nbarman_home = {wv.home}\n"
        f"log_file = {wv.home}/walvault.log\n\n[pg]\n"
        + "".join(f"{key} = {value}\n" for key, value in options.items())
    )
    named = barman_named_walvault(tmp_path / "barman-is-walvault")
    path = f"{named}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    daemon = Sshd(tmp_path / "sshd", path=path, home=home)
    daemon.start()
    try:
        barman = barman_factory({})
        shim = ssh_shim(tmp_path / "ssh-shim", daemon.ssh_command)
        common = ["-U", getpass.getuser(), "--port", str(daemon.port)]
        first = supply.names[0]
        segment = tmp_path / first
        segment.write_bytes(supply.data(first))

        ready = barman.wal_archive(*common, "-t", "127.0.0.1", "pg", "DUMMY", ssh_dir=shim)
        assert ready.returncode == 0, ready.stdout + ready.stderr
        assert "Ready to accept WAL files for the server pg" in ready.stdout
        sent = barman.wal_archive(*common, "127.0.0.1", "pg", str(segment), ssh_dir=shim)
        assert sent.returncode == 0, sent.stdout + sent.stderr  # the same file: already safe

        dest = tmp_path / "RECOVERYXLOG"
        restore = [*common, "--spool-dir", str(tmp_path / "spool"), "127.0.0.1", "pg"]
        found = barman.wal_restore(*restore, first, str(dest), ssh_dir=shim)
        assert found.returncode == 0, found.stdout + found.stderr
        assert dest.read_bytes() == supply.data(first)

        barman_conf.rename(home / "moved.conf")  # the file is what made it work
        lost = barman.wal_archive(*common, "-t", "127.0.0.1", "pg", "DUMMY", ssh_dir=shim)
        assert lost.returncode != 0
        assert "could not find a configuration file" in lost.stdout + lost.stderr
    finally:
        daemon.stop()


# --------------------------------------------------------------------- the harness itself


def test_an_announced_barman_must_work(tmp_path: Path) -> None:
    """WALVAULT_BARMAN_BIN set means the tests fail on a missing, broken or wrong Barman
    (find_barman raises; the barman_install fixture turns that into a failure)."""
    assert find_barman({}) is None  # unset: the tests skip

    def fake(directory: Path, version_line: str, python_exit: int) -> Path:
        directory.mkdir()
        for tool in (
            "barman-wal-archive",
            "barman-wal-restore",
            "barman-cloud-wal-archive",
            "barman-cloud-wal-restore",
            "barman-cloud-backup-list",
        ):
            (directory / tool).write_text("#!/bin/sh\nexit 0\n")
        (directory / "barman").write_text(f"#!/bin/sh\necho '{version_line}'\n")
        (directory / "python").write_text(f"#!/bin/sh\nexit {python_exit}\n")
        for path in directory.iterdir():
            path.chmod(0o755)
        return directory

    good = fake(tmp_path / "good", "3.20.1 Barman by EnterpriseDB (www.enterprisedb.com)", 0)
    install = find_barman({"WALVAULT_BARMAN_BIN": str(good)})
    assert install is not None and install.tool("barman") == str(good / "barman")
    cases = {
        "relative": ("bin", "not an absolute path"),
        "missing": (str(tmp_path / "nowhere"), "barman is missing"),
        "old": (str(fake(tmp_path / "old", "3.19.1 Barman by EnterpriseDB", 0)), "3.19.1"),
        "no boto3": (str(fake(tmp_path / "noboto", "3.20.1 Barman", 1)), "boto3"),
    }
    for case, (value, says) in cases.items():
        with pytest.raises(BarmanBroken, match=says):
            find_barman({"WALVAULT_BARMAN_BIN": value})
            pytest.fail(f"{case}: accepted")
