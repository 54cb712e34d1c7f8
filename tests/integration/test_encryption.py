"""``encryption = gpg`` with real WAL from PostgreSQL 15 and the real GnuPG (issue 20).

Segments streamed by receive-wal are archived encrypted: each file in ``wals/`` is an OpenPGP
message under its plain name, that gpg itself decrypts to the compressed segment, catalogued
as Barman writes it (``<size on disk> <mtime> <codec> gpg``).  get-wal and
walvault-wal-restore serve every segment back byte for byte, with or without compression; a
wrong or missing passphrase or secret key is exit 200 with one ``ERROR:`` line and no WAL
written; a new key applies to new files while the old ones stay readable; a host with only
the public key archives; ``check`` says what it can and cannot verify, and is not fooled by
gpg-agent's passphrase cache; object storage (moto) holds only ciphertext.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpgharness import decrypt_cli, encryption_options, passphrase_file, recipients
from s3harness import TEST_ENVIRON, MotoServer
from walvault.archive import encryption as enc
from walvault.compression import decompress_bytes, identify
from walvault.storage.base import Storage
from wvharness import WALVAULT, make_segments, start_receiver, streaming_server, wait_for

BIN = Path(sys.executable).parent


def _streamed(pg: Any, wv: Any, count: int) -> dict[str, bytes]:
    """``count`` closed segments, streamed and copied aside before archive-wal takes them."""
    receiver = start_receiver(wv, pg)
    closed = make_segments(pg, count)
    pg.sql("INSERT INTO t VALUES (0, 'the next segment')")  # its .partial: none is held back
    streaming = Path(wv.server().streaming_wals_directory)
    wait_for(lambda: all((streaming / n).exists() for n in closed), what="segments streamed")
    following = f"{int(closed[-1], 16) + 1:024X}.partial"
    wait_for(lambda: (streaming / following).exists(), what=f"{following} streamed")
    assert wv.run("receive-wal", "--stop", "pg").returncode == 0
    receiver.wait(timeout=30)
    return {name: (streaming / name).read_bytes() for name in closed}


def get_wal(wv: Any, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*WALVAULT, "-c", str(wv.conf), "get-wal", *args], capture_output=True, timeout=120
    )


def restore(wv: Any, name: str, dest: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """walvault-wal-restore in local mode (its restore agent decrypts, unless --no-agent)."""
    spool = ["--spool-dir", str(wv.home / "spool")]
    return subprocess.run(
        [
            str(BIN / "walvault-wal-restore"),
            *spool,
            *options,
            "-c",
            str(wv.conf),
            "local",
            "pg",
            name,
            str(dest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _errors(stderr: bytes | str) -> list[str]:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    return [line for line in text.splitlines() if line.startswith("ERROR:")]


def _catalogue(wv: Any) -> dict[str, list[str]]:
    lines = Path(wv.server().xlogdb_path).read_text().splitlines()
    return {line.split("\t")[0]: line.split("\t") for line in lines}


@pytest.mark.parametrize("compression", ["zstd", None])
def test_an_encrypted_archive_is_served_back_byte_for_byte(
    pg: Any,
    walvault_factory: Any,
    gpg_keys: Any,
    gnupg_home: Path,
    tmp_path: Path,
    compression: str | None,
) -> None:
    options = streaming_server(
        pg, compression=compression, **encryption_options(gpg_keys.rsa, passphrase_file(tmp_path))
    )
    wv = walvault_factory({"pg": options})
    originals = _streamed(pg, wv, 3)
    done = wv.run("archive-wal", "pg")
    assert done.returncode == 0, done.stdout + done.stderr
    wals = Path(wv.server().wals_directory)
    catalogue = _catalogue(wv)
    for name, data in originals.items():
        stored = (wals / name[:16] / name).read_bytes()  # the plain name, as Barman keeps it
        assert enc.identify_encryption(stored) == "gpg"
        assert data[:4096] not in stored
        assert recipients(gnupg_home, stored)  # to the RSA encryption subkey
        inner = decrypt_cli(gnupg_home, stored)  # a standard message: gpg itself reads it
        assert identify(inner) == compression
        assert (decompress_bytes(compression, inner) if compression else inner) == data
        line = catalogue[name]
        assert line[1:2] == [str(len(stored))] and line[3:] == [compression or "None", "gpg"]
    for name, data in originals.items():
        got = get_wal(wv, "pg", name)
        assert got.returncode == 0, got.stderr
        assert got.stdout == data
        dest = tmp_path / f"{name}.restored"
        served = restore(wv, name, dest)
        assert served.returncode == 0, served.stderr
        assert dest.read_bytes() == data
    assert get_wal(wv, "pg", "000000010000000000000099").returncode == 1  # still "not found"
    Path(wv.server().xlogdb_path).unlink()
    assert wv.run("rebuild-xlogdb", "pg").returncode == 0
    rebuilt = _catalogue(wv)
    assert all(rebuilt[name][3:] == ["None", "gpg"] for name in originals)  # as Barman does


def test_a_wrong_or_missing_secret_is_exit_200_and_never_wal(
    pg: Any,
    walvault_factory: Any,
    gpg_keys: Any,
    gnupg_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = passphrase_file(tmp_path)
    options = streaming_server(pg, compression="zstd", **encryption_options(gpg_keys.ecc, secret))
    wv = walvault_factory({"pg": options})
    originals = _streamed(pg, wv, 1)
    assert wv.run("archive-wal", "pg").returncode == 0
    name = next(iter(originals))

    def refused(why: str) -> None:
        got = get_wal(wv, "pg", name)
        assert got.returncode == 200, got.stderr
        assert got.stdout == b"" and "Traceback" not in got.stderr.decode()
        errors = _errors(got.stderr)
        assert len(errors) == 1 and why in errors[0], got.stderr
        dest = tmp_path / "RECOVERYXLOG"
        served = restore(wv, name, dest, "--no-agent")  # an agent keeps its configuration
        assert served.returncode == 200, served.stderr
        assert why in served.stderr and not dest.exists()

    secret.write_text("not the passphrase\n")
    refused("bad passphrase")
    log = wv.home / "walvault.log"
    assert "not the passphrase" not in (log.read_text() if log.exists() else "")
    secret.write_text("correct horse battery staple\n")
    wv.write({"pg": {**options, "encryption_passphrase_command": "exit 7"}})
    refused("encryption_passphrase_command failed (exit status 7)")
    del options["encryption_passphrase_command"]
    wv.write({"pg": options})
    refused("no encryption_passphrase_command is configured")
    wv.write({"pg": {**options, "encryption_passphrase_command": f"cat {secret}"}})
    monkeypatch.setenv("GNUPGHOME", str(gpg_keys.home(secret=[gpg_keys.rsa])))
    refused("is not in the keyring")
    monkeypatch.setenv("GNUPGHOME", str(gpg_keys.home()))
    assert get_wal(wv, "pg", name).stdout == originals[name]


def test_a_new_key_for_new_files_and_the_old_ones_stay_readable(
    pg: Any,
    walvault_factory: Any,
    gpg_keys: Any,
    gnupg_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = passphrase_file(tmp_path)
    options = streaming_server(pg, compression="gzip", **encryption_options(gpg_keys.rsa, secret))
    wv = walvault_factory({"pg": options})
    before = _streamed(pg, wv, 2)
    assert wv.run("archive-wal", "pg").returncode == 0
    wv.write({"pg": {**options, "encryption_key_id": gpg_keys.ecc}})
    after = _streamed(pg, wv, 2)
    assert wv.run("archive-wal", "pg").returncode == 0
    wals = Path(wv.server().wals_directory)
    keyids = {
        name: recipients(gnupg_home, (wals / name[:16] / name).read_bytes())
        for name in {**before, **after}
    }
    assert len({tuple(keyids[n]) for n in before}) == 1
    assert len({tuple(keyids[n]) for n in after}) == 1
    assert keyids[next(iter(before))] != keyids[next(iter(after))]
    for name, data in {**before, **after}.items():
        assert get_wal(wv, "pg", name).stdout == data
    monkeypatch.setenv("GNUPGHOME", str(gpg_keys.home(secret=[gpg_keys.ecc])))  # old key gone
    for name in before:
        got = get_wal(wv, "pg", name)
        assert got.returncode == 200 and b"is not in the keyring" in got.stderr
    for name, data in after.items():
        assert get_wal(wv, "pg", name).stdout == data


def test_a_host_with_only_the_public_key_archives_and_check_says_what_it_can(
    pg: Any, walvault_factory: Any, gpg_keys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GNUPGHOME", str(gpg_keys.home(secret=[])))
    options = streaming_server(pg, compression="zstd", **encryption_options(gpg_keys.rsa, None))
    wv = walvault_factory({"pg": options})
    originals = _streamed(pg, wv, 2)
    done = wv.run("archive-wal", "pg")
    assert done.returncode == 0, done.stdout + done.stderr
    # a crash before the sources were removed: the twins are compared by their digest
    streaming = Path(wv.server().streaming_wals_directory)
    for name, data in originals.items():
        (streaming / name).write_bytes(data)
    again = wv.run("archive-wal", "pg")
    assert again.returncode == 0, again.stdout + again.stderr
    assert not any((streaming / name).exists() for name in originals)
    assert not list(Path(wv.server().errors_directory).glob("*"))
    check = wv.run("check", "pg")
    lines = {line.split(":")[0].strip(): line for line in check.stdout.splitlines()}
    assert "OK" in lines["encryption"] and gpg_keys.rsa in lines["encryption"], check.stdout
    assert "OK" in lines["decryption"] and "cannot read encrypted WAL" in lines["decryption"]
    got = get_wal(wv, "pg", next(iter(originals)))
    assert got.returncode == 200 and b"no encryption_passphrase_command" in got.stderr
    # the key must exist and be unambiguous: archive-wal stops before touching any file
    wv.write({"pg": {**options, "encryption_key_id": "walvault.invalid"}})
    originals = _streamed(pg, wv, 1)
    refused = wv.run("archive-wal", "pg")
    assert refused.returncode == 1 and "matches 2 keys" in refused.stderr, refused.stderr
    assert all((streaming / name).exists() for name in originals)
    check = wv.run("check", "pg")
    assert "encryption: FAILED" in check.stdout and "matches 2 keys" in check.stdout


def test_check_proves_decryption_and_is_not_fooled_by_the_agents_cache(
    pg: Any, walvault_factory: Any, gpg_keys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = gpg_keys.home(cache=True)  # gpg-agent remembers passphrases, as by default
    monkeypatch.setenv("GNUPGHOME", str(home))
    secret = passphrase_file(tmp_path)
    options = streaming_server(pg, **encryption_options(gpg_keys.rsa, secret))
    wv = walvault_factory({"pg": options})
    check = wv.run("check", "pg")
    lines = {line.split(":")[0].strip(): line for line in check.stdout.splitlines()}
    assert "trial encryption succeeded" in lines["encryption"], check.stdout
    assert "OK" in lines["decryption"] and "trial decryption" in lines["decryption"]
    assert "cached passphrase cleared" in lines["decryption"]
    secret.write_text("wrong\n")  # the agent still remembers the right one
    check = wv.run("check", "pg")
    assert "decryption: FAILED" in check.stdout and "bad passphrase" in check.stdout
    assert "wrong" not in check.stdout
    shown = wv.run("show-servers", "pg").stdout
    assert f"cat {secret}" not in shown and "encryption_passphrase_command: *****" in shown


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in TEST_ENVIRON.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)


def test_object_storage_holds_only_ciphertext(
    pg: Any,
    walvault_factory: Any,
    gpg_keys: Any,
    gnupg_home: Path,
    moto_server: MotoServer,
    s3_bucket: str,
    s3_storage: Storage,
    aws_env: None,
    tmp_path: Path,
) -> None:
    options = streaming_server(
        pg,
        wals_directory=f"s3://{s3_bucket}/walvault-test",
        aws_endpoint_url=moto_server.endpoint,
        compression="zstd",
        **encryption_options(gpg_keys.ecc, passphrase_file(tmp_path)),
    )
    wv = walvault_factory({"pg": options})
    originals = _streamed(pg, wv, 3)
    assert wv.run("archive-wal", "pg").returncode == 0
    for name, data in originals.items():
        reader = s3_storage.open(f"pg/wals/{name[:16]}/{name}.zst")
        assert reader is not None
        with reader:
            stored = reader.read()
        assert enc.identify_encryption(stored) == "gpg"
        assert decompress_bytes("zstd", decrypt_cli(gnupg_home, stored)) == data
        assert _catalogue(wv)[name][3:] == ["zstd", "gpg"]
        got = get_wal(wv, "pg", name)
        assert got.returncode == 0 and got.stdout == data, got.stderr
        dest = tmp_path / "RECOVERYXLOG"
        assert restore(wv, name, dest).returncode == 0 and dest.read_bytes() == data
