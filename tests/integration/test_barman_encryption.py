"""Barman 3.20.1 and walvault on one encrypted archive (``encryption = gpg``), both ways.

* walvault encrypts (RSA key: Barman's reader needs ``file`` to call the message "PGP RSA
  encrypted session key"), ``barman get-wal`` decrypts and serves every file byte for byte;
* ``barman archive-wal`` encrypts the WAL a walvault backup needs; walvault serves it
  (``get-wal``, ``walvault-wal-restore``) byte for byte, and PostgreSQL recovers from it
  with every row.

Needs tests/barmanharness.py and its fixtures (branch ``barman``) and ``WALVAULT_BARMAN_BIN``;
skipped, saying so, without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gpgharness import encryption_options, passphrase_file, trust_ultimately
from walsupply import stream_segments
from walvault.archive.encryption import identify_encryption
from wvharness import WALVAULT, start_receiver, start_restored, streaming_server, wait_for

barmanharness = pytest.importorskip(
    "barmanharness",
    reason="tests/barmanharness.py (branch 'barman': Barman 3.20.1 in the tests) is not here",
)

RESTORE = str(Path(sys.executable).parent / "walvault-wal-restore")
HISTORY = "00000002.history"
HISTORY_TEXT = b"1\t0/5000000\tno recovery target specified\n"


def _get_wal(conf: Path, name: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*WALVAULT, "-c", str(conf), "get-wal", "pg", name], capture_output=True, timeout=120
    )


def test_barman_decrypts_what_walvault_encrypted(
    pg: Any,
    walvault_factory: Any,
    barman_factory: Any,
    gpg_keys: Any,
    gnupg_home: Path,
    tmp_path: Path,
) -> None:
    assert shutil.which("file"), "Barman's reader runs 'file' (Debian: apt-get install file)"
    secret = passphrase_file(tmp_path)
    crypt = encryption_options(gpg_keys.rsa, secret)
    wv = walvault_factory({"pg": streaming_server(pg, compression="zstd", **crypt)})
    streaming = Path(wv.server().streaming_wals_directory)
    names = stream_segments(pg, streaming, 3)
    (streaming / HISTORY).write_bytes(HISTORY_TEXT)
    originals = {n: (streaming / n).read_bytes() for n in [*names, HISTORY]}
    run = wv.run("archive-wal", "pg")
    assert run.returncode == 0, run.stdout + run.stderr
    wals = Path(wv.server().wals_directory)
    assert identify_encryption((wals / HISTORY).read_bytes()) == "gpg"
    barman = barman_factory(
        {"pg": barmanharness.barman_server(pg, compression="zstd", **crypt)},
        barman_home=wv.home,
    )
    for name, data in originals.items():
        got = barman.run("get-wal", "pg", name, binary=True)
        assert got.returncode == 0, got.stderr.decode() + barman.log_text()
        assert got.stdout == data, f"barman get-wal: {name} differs"
    assert not [p.name for p in wals.rglob(".*")], "barman left temporary directories"


def test_walvault_serves_and_recovers_what_barman_encrypted(
    pg: Any,
    walvault_factory: Any,
    barman_factory: Any,
    gpg_keys: Any,
    gnupg_home: Path,
    tmp_path: Path,
) -> None:
    trust_ultimately(gnupg_home, gpg_keys.rsa)
    secret = passphrase_file(tmp_path)
    crypt = encryption_options(gpg_keys.rsa, secret)
    # walvault streams and backs up; Barman, on the same home, archives (and encrypts)
    wv = walvault_factory(
        {"pg": streaming_server(pg, compression="gzip", immediate_checkpoint="true")}
    )
    barman = barman_factory(
        {"pg": barmanharness.barman_server(pg, compression="gzip", **crypt)},
        barman_home=wv.home,
    )
    start_receiver(wv, pg)
    pg.sql("CREATE TABLE kept (id int PRIMARY KEY, v text)")
    backup = wv.spawn("backup", "--wait", "pg")
    deadline = time.monotonic() + 240
    while backup.poll() is None:
        pg.switch_wal()
        assert barman.run("archive-wal", "pg").returncode == 0, barman.log_text()
        assert time.monotonic() < deadline, "backup --wait did not finish"
        time.sleep(1)
    assert backup.returncode == 0, backup.communicate()
    for batch in range(3):
        pg.sql(
            "INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(%s::int, %s::int) g",
            (batch * 3000 + 1, batch * 3000 + 3000),
        )
        pg.switch_wal()
    last = pg.switch_wal()
    wals = Path(wv.server().wals_directory)
    streaming = Path(wv.server().streaming_wals_directory)
    wait_for(lambda: (streaming / last).exists(), what=f"{last} streamed")
    originals = {n: (streaming / n).read_bytes() for n in os.listdir(streaming) if len(n) == 24}

    def archived() -> bool:
        assert barman.run("archive-wal", "pg").returncode == 0, barman.log_text()
        return (wals / last[:16] / last).exists()

    wait_for(archived, what=f"{last} archived by Barman", timeout=120)
    catalogue = {
        line.split("\t")[0]: line.split("\t")
        for line in Path(wv.server().xlogdb_path).read_text().splitlines()
    }
    for name, data in originals.items():
        stored = (wals / name[:16] / name).read_bytes()
        assert identify_encryption(stored) == "gpg", name
        assert catalogue[name][3:] == ["gzip", "gpg"], catalogue[name]
        got = _get_wal(barman.conf, name)  # walvault reads Barman's own configuration
        assert got.returncode == 0, got.stderr.decode()
        assert got.stdout == data, f"walvault get-wal: {name} differs"
        dest = tmp_path / "RECOVERYXLOG"
        served = subprocess.run(
            [RESTORE, "--no-agent", "-c", str(barman.conf), "local", "pg", name, str(dest)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert served.returncode == 0, served.stderr
        assert dest.read_bytes() == data
    expected = pg.sql("SELECT id, v FROM kept ORDER BY id")
    assert wv.run("receive-wal", "--stop", "pg").returncode == 0
    # walvault recovers from Barman's encrypted WAL, with the passphrase from Barman's options
    wv.write({"pg": streaming_server(pg, compression="gzip", **crypt)})
    recovered = wv.run("recover", "pg", "latest", str(tmp_path / "r" / "data"), "--get-wal")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    cluster = start_restored(pg, tmp_path / "r", "r")
    wait_for(lambda: not cluster.is_in_recovery(), what="recovered and promoted", timeout=180)
    assert cluster.sql("SELECT id, v FROM kept ORDER BY id") == expected
    assert len(expected) == 9000
