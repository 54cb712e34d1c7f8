"""gpg as walvault's encryption filter, against the real GnuPG (tests/gpgharness.py keys).

What the archive's readers and writers rely on: encrypted files are told by their first
bytes (and nothing else is taken for one); what walvault writes is a standard OpenPGP message
gpg itself decrypts, and walvault decrypts what gpg wrote; memory stays bounded whatever the
size; every failure -- no passphrase command, a failing one, a wrong passphrase, no secret
key, a damaged message -- is a DecryptionError (exit 200), found at the latest at the end
of the plaintext; the passphrase never reaches gpg's command line or environment; the key is
resolved to exactly one usable key; and gpg-agent's passphrase cache can be cleared.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from gpgharness import PASSPHRASE, decrypt_cli, gpg, passphrase_file, recipients
from walvault.archive import encryption as enc
from walvault.archive import gpgkeys
from walvault.compression import compress_bytes
from walvault.errors import ArchiveReadError
from walvault.storage.base import ObjectInfo
from walvault.storage.posix import PosixReader

SEARCH = "/usr/bin:/bin"


@pytest.fixture(autouse=True)
def _fresh_passphrases() -> None:
    enc._PASSPHRASES.clear()  # the cache is per process: each test its own


def _gpg(tmp_path: Path, text: str = PASSPHRASE) -> enc.Gpg:
    """gpg for a server whose passphrase command prints ``text`` (a file of its own)."""
    directory = tmp_path / f"pass{len(list(tmp_path.glob('pass*')))}"
    directory.mkdir()
    return enc.Gpg(SEARCH, f"cat {passphrase_file(directory, text)}", "pg")


class _Stream:
    """A Reader without a descriptor (as an object store's GET stream)."""

    def __init__(self, data: bytes) -> None:
        self._io = io.BytesIO(data)
        self.info = ObjectInfo("k", len(data), 0.0)
        self.closed = False

    def read(self, size: int = -1, /) -> bytes:
        return self._io.read(min(size, 4096) if size >= 0 else -1)

    def close(self) -> None:
        self.closed = True


def _encrypt(gpgs: enc.Gpg, key: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with enc.encrypting(gpgs, gpgkeys.resolve_recipient(gpgs, key), out) as sink:
        for start in range(0, len(data), 100_000):
            sink.write(data[start : start + 100_000])
    return out.getvalue()


def _decrypt_file(gpgs: enc.Gpg, path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    reader = PosixReader(fd, ObjectInfo(str(path), path.stat().st_size, 0.0))
    reader.read(7)  # a reader that already read a head: gpg must still get the whole file
    with enc.DecryptingReader(gpgs, reader, b"", str(path)) as plain:
        return b"".join(enc.decrypted_pieces(plain))


def test_encrypted_files_are_told_by_their_first_bytes(
    gpg_keys: Any, gnupg_home: Path, tmp_path: Path
) -> None:
    gpgs = _gpg(tmp_path)
    for key in (gpg_keys.rsa, gpg_keys.ecc):
        assert enc.identify_encryption(_encrypt(gpgs, key, b"x")[: enc.HEAD_LEN]) == "gpg"
    symmetric = gpg(gnupg_home, "--pinentry-mode", "loopback", "--passphrase", "p", "-c", data=b"x")
    assert enc.identify_encryption(symmetric[: enc.HEAD_LEN]) == "gpg"
    two = gpg(
        gnupg_home,
        "--trust-model",
        "always",
        "-r",
        gpg_keys.rsa,
        "-r",
        gpg_keys.ecc,
        "-e",
        data=b"x",
    )
    assert enc.identify_encryption(two[: enc.HEAD_LEN]) == "gpg"
    # not encrypted: compressed data, a WAL page header, zeros, an OpenPGP key, a signature
    wal_head = bytes.fromhex("10d10600010000000000000100000000") + bytes(24)
    others = [compress_bytes(a, b"x" * 1000) for a in ("gzip", "bzip2", "xz", "zstd", "lz4")]
    others += [wal_head, bytes(40), b"", b"\x85", gpg_keys.public]
    others += [gpg(gnupg_home, "--export", gpg_keys.rsa, "--armor")]
    signed = gpg(
        gnupg_home, "--pinentry-mode", "loopback", "--passphrase", PASSPHRASE, "-s", data=b"x"
    )
    others.append(signed)
    for data in others:
        assert enc.identify_encryption(data[: enc.HEAD_LEN]) is None, data[:16].hex()
    noise = random.Random(20)
    false = sum(
        enc.identify_encryption(noise.randbytes(enc.HEAD_LEN)) is not None for _ in range(20000)
    )
    assert false == 0


@pytest.mark.parametrize("key", ["rsa", "ecc"])
def test_round_trip_with_gpg_itself_both_ways(
    gpg_keys: Any, gnupg_home: Path, tmp_path: Path, key: str
) -> None:
    gpgs = _gpg(tmp_path)
    fpr = getattr(gpg_keys, key)
    data = random.Random(1).randbytes(3 << 20)
    ours = _encrypt(gpgs, fpr, data)
    assert decrypt_cli(gnupg_home, ours) == data  # a standard message
    assert recipients(gnupg_home, ours)  # to the key's encryption subkey
    theirs = gpg(gnupg_home, "--trust-model", "always", "-r", fpr, "-e", data=data)
    path = tmp_path / "theirs.gpg"
    path.write_bytes(theirs)
    assert _decrypt_file(gpgs, path) == data  # a local file: gpg reads its descriptor
    with (
        enc.DecryptingReader(gpgs, _Stream(theirs[:100]), b"", "s") as short,
        pytest.raises(enc.DecryptionError),
    ):
        b"".join(enc.decrypted_pieces(short))
    stream = _Stream(theirs[10:])
    with enc.DecryptingReader(gpgs, stream, theirs[:10], "s3://b/k") as plain:
        assert b"".join(enc.decrypted_pieces(plain)) == data  # fed by a thread, head first
    assert stream.closed


def test_memory_stays_bounded_for_a_large_stream(gnupg_home: Path, tmp_path: Path) -> None:
    gpgs = _gpg(tmp_path)
    key = gpgkeys.resolve_recipient(gpgs, "rsa@walvault.invalid")
    size = 96 << 20
    path = tmp_path / "big.gpg"
    block = random.Random(2).randbytes(1 << 20)
    tracemalloc.start()
    try:
        with open(path, "wb") as out, enc.encrypting(gpgs, key, out) as sink:  # type: ignore[arg-type]
            for _ in range(size // len(block)):
                sink.write(block)
        _, peak_write = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fd = os.open(path, os.O_RDONLY)
        got, total = hashlib.sha256(), 0
        with enc.DecryptingReader(gpgs, PosixReader(fd, ObjectInfo("k", 0, 0.0)), b"", "k") as r:
            for piece in enc.decrypted_pieces(r):
                got.update(piece)
                total += len(piece)
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    want = hashlib.sha256()
    for _ in range(size // len(block)):
        want.update(block)
    assert total == size and got.digest() == want.digest()
    assert path.stat().st_size > size  # nothing was compressed away: all of it went through
    assert peak_write < 8 << 20 and peak_read < 8 << 20, (peak_write, peak_read)


def test_every_way_decryption_fails_is_a_decryption_error(
    gpg_keys: Any, gnupg_home: Path, tmp_path: Path
) -> None:
    good = _gpg(tmp_path)
    path = tmp_path / "m.gpg"
    path.write_bytes(_encrypt(good, gpg_keys.rsa, b"WAL" * 1000))
    assert issubclass(enc.DecryptionError, ArchiveReadError)  # exit 200, never "not found"

    def fails(gpgs: enc.Gpg, where: Path = path) -> str:
        with pytest.raises(enc.DecryptionError) as caught:
            _decrypt_file(gpgs, where)
        return caught.value.message

    assert "no encryption_passphrase_command" in fails(enc.Gpg(SEARCH, None, "pg"))
    assert "bad passphrase" in fails(_gpg(tmp_path, "wrong"))
    printing = enc.Gpg(SEARCH, "echo s3cr3t-out; exit 3", "pg")
    message = fails(printing)
    assert "failed (exit status 3)" in message and "s3cr3t-out" not in message
    assert "printed no passphrase" in fails(enc.Gpg(SEARCH, "true", "other"))
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    bad = tmp_path / "damaged.gpg"
    bad.write_bytes(bytes(damaged))
    assert "cannot decrypt" in fails(good, bad)
    truncated = tmp_path / "truncated.gpg"
    truncated.write_bytes(path.read_bytes()[:-30])
    assert "cannot decrypt" in fails(good, truncated)
    os.environ["GNUPGHOME"] = str(gpg_keys.home(secret=[gpg_keys.ecc]))  # RSA secret gone
    missing = fails(good)
    assert "secret key" in missing and "not in the keyring" in missing, missing


def test_the_passphrase_never_reaches_gpgs_command_line_or_environment(
    gpg_keys: Any, gnupg_home: Path, tmp_path: Path
) -> None:
    spy_dir = tmp_path / "bin"
    spy_dir.mkdir()
    log = tmp_path / "spy.log"
    spy = spy_dir / "gpg"
    spy.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nenv >> {log}\nexec {gpg_program_path()} "$@"\n'
    )
    spy.chmod(spy.stat().st_mode | stat.S_IXUSR)
    gpgs = enc.Gpg(f"{spy_dir}:{SEARCH}", f"cat {passphrase_file(tmp_path)}", "pg")
    path = tmp_path / "m.gpg"
    path.write_bytes(_encrypt(gpgs, gpg_keys.ecc, b"payload"))
    assert _decrypt_file(gpgs, path) == b"payload"
    seen = log.read_text()
    assert "--passphrase-fd" in seen and "--decrypt" in seen
    assert PASSPHRASE not in seen


def gpg_program_path() -> str:
    from gpgharness import gpg_program

    return gpg_program()


def test_the_key_resolves_to_exactly_one_usable_key(
    gpg_keys: Any, gnupg_home: Path, tmp_path: Path
) -> None:
    gpgs = _gpg(tmp_path)
    found = gpgkeys.resolve_recipient(gpgs, "ecc@walvault.invalid")
    assert found.fingerprint == gpg_keys.ecc and found.argument == gpg_keys.ecc
    assert "walvault ecc" in found.describe()
    assert gpgkeys.resolve_recipient(gpgs, gpg_keys.rsa[-16:] + "!").argument.endswith("!")
    with pytest.raises(enc.EncryptionError, match="is not in the keyring"):
        gpgkeys.resolve_recipient(gpgs, "nobody@walvault.invalid")
    with pytest.raises(enc.EncryptionError, match="matches 2 keys"):
        gpgkeys.resolve_recipient(gpgs, "walvault.invalid")
    loopback = ["--pinentry-mode", "loopback", "--passphrase", PASSPHRASE]
    gpg(gnupg_home, *loopback, "--quick-set-expire", gpg_keys.ecc, "seconds=1")
    import time

    time.sleep(2)
    with pytest.raises(enc.EncryptionError, match="expired"):
        gpgkeys.resolve_recipient(gpgs, gpg_keys.ecc)
    with pytest.raises(enc.EncryptionError, match="not found on path_prefix or PATH"):
        gpgkeys.resolve_recipient(enc.Gpg("/nonexistent", None, "pg"), gpg_keys.rsa)


def test_the_agents_cached_passphrase_can_be_forgotten(
    gpg_keys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GNUPGHOME", str(gpg_keys.home(cache=True)))
    right = _gpg(tmp_path)
    path = tmp_path / "m.gpg"
    path.write_bytes(_encrypt(right, gpg_keys.rsa, b"cached"))
    assert _decrypt_file(right, path) == b"cached"
    wrong = _gpg(tmp_path, "wrong")
    assert _decrypt_file(wrong, path) == b"cached"  # the trap: the agent remembered it
    grips = gpgkeys.secret_keygrips(wrong, gpg_keys.rsa)
    assert len(grips) == 1
    assert gpgkeys.forget_passphrases(wrong, grips)
    with pytest.raises(enc.DecryptionError, match="bad passphrase"):
        _decrypt_file(wrong, path)
    monkeypatch.setenv("GNUPGHOME", str(gpg_keys.home(secret=[])))
    assert gpgkeys.secret_keygrips(wrong, gpg_keys.rsa) == []


def test_an_encryptor_reports_a_sink_that_fails(gnupg_home: Path, tmp_path: Path) -> None:
    gpgs = _gpg(tmp_path)
    key = gpgkeys.resolve_recipient(gpgs, "rsa@walvault.invalid")

    class Full(io.RawIOBase):
        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    encryptor = enc.Encryptor(gpgs, key, Full())  # type: ignore[arg-type]
    with pytest.raises(OSError, match="No space left"):
        for _ in range(64):
            encryptor.write(bytes(1 << 20))
        encryptor.finish()
    encryptor.abort()
    assert encryptor._proc.returncode is not None  # gpg was stopped and reaped
