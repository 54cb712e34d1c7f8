"""GnuPG keyrings for the encryption tests: real gpg, throwaway homes, keys made once.

:class:`Keys` generates, once per session, two keys that protect their secret with
:data:`PASSPHRASE`: ``rsa`` (an ed25519 primary key with an RSA-2048 encryption subkey: the
kind Barman's reader recognises, ``file`` naming it "PGP RSA encrypted session key") and
``ecc`` (ed25519 with a cv25519 encryption subkey, GnuPG 2.4's default kind).
:meth:`Keys.home` copies them into a new ``GNUPGHOME`` for one test -- with both secret keys,
with some, or public keys only (a host that only archives) -- and gpg-agent told whether to
cache passphrases (by default not: a wrong passphrase must be refused each time).

Homes live under a short directory in /tmp: gpg-agent's socket path must fit the 108 bytes
of a Unix socket address.  Every agent a home started is stopped (``gpgconf --kill``) when
the home is removed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

PASSPHRASE = "correct horse battery staple"
RSA_UID = "walvault rsa <rsa@walvault.invalid>"
ECC_UID = "walvault ecc <ecc@walvault.invalid>"


def gpg_program() -> str:
    """The gpg binary (an AssertionError when there is none: .ci/run installs gnupg)."""
    found = shutil.which("gpg")
    assert found is not None, "gpg (GnuPG) is not installed: apt-get install gnupg"
    return found


def gpg(home: Path, *args: str, data: bytes = b"", check: bool = True) -> bytes:
    """Run gpg on ``home`` in batch mode; its stdout."""
    done = subprocess.run(
        [gpg_program(), "--homedir", str(home), "--batch", "--no-tty", *args],
        input=data,
        capture_output=True,
        timeout=120,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"gpg {' '.join(args)}: {done.stderr.decode(errors='replace')}")
    return done.stdout


def kill_agent(home: Path) -> None:
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, timeout=30
    )


def _new_home(parent: str, cache: bool) -> Path:
    home = Path(tempfile.mkdtemp(prefix="h", dir=parent))
    home.chmod(0o700)
    ttl = "" if cache else "default-cache-ttl 0\nmax-cache-ttl 0\n"
    (home / "gpg-agent.conf").write_text(f"allow-loopback-pinentry\n{ttl}")
    return home


class Keys:
    """The session's two keys and the homes made from them (see the module docstring)."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="wvg", dir="/tmp")
        self.homes: list[Path] = []
        self.master = _new_home(self.root, cache=False)
        self.homes.append(self.master)
        self.rsa = self._generate(RSA_UID, "rsa2048")
        self.ecc = self._generate(ECC_UID, "cv25519")
        self.public = gpg(self.master, "--export", self.rsa, self.ecc)
        self.secret = {
            fpr: gpg(
                self.master,
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                PASSPHRASE,
                "--export-secret-keys",
                fpr,
            )
            for fpr in (self.rsa, self.ecc)
        }

    def _generate(self, uid: str, encryption_algo: str) -> str:
        loopback = ["--pinentry-mode", "loopback", "--passphrase", PASSPHRASE]
        gpg(self.master, *loopback, "--quick-gen-key", uid, "ed25519", "cert,sign", "never")
        listing = gpg(self.master, "--with-colons", "--list-keys", uid).decode()
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
        gpg(self.master, *loopback, "--quick-add-key", fpr, encryption_algo, "encr", "never")
        return fpr

    def home(self, secret: Iterable[str] | None = None, *, cache: bool = False) -> Path:
        """A new GNUPGHOME with both public keys and the secret keys of ``secret``
        (fingerprints; default both)."""
        home = _new_home(self.root, cache)
        self.homes.append(home)
        gpg(home, "--import", data=self.public)
        for fpr in (self.rsa, self.ecc) if secret is None else secret:
            gpg(
                home,
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                PASSPHRASE,
                "--import",
                data=self.secret[fpr],
            )
        return home

    def cleanup(self) -> None:
        for home in self.homes:
            kill_agent(home)
        shutil.rmtree(self.root, ignore_errors=True)


def passphrase_file(directory: Path, text: str = PASSPHRASE) -> Path:
    """A 0600 file holding ``text`` (for ``encryption_passphrase_command = cat FILE``)."""
    path = directory / "passphrase"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def encryption_options(
    key: str, passphrase: Path | None, *, encryption: str = "gpg"
) -> dict[str, str]:
    """The server options of ``encryption = gpg`` with ``key`` and ``cat <passphrase>``."""
    options = {"encryption": encryption, "encryption_key_id": key}
    if passphrase is not None:
        options["encryption_passphrase_command"] = f"cat {passphrase}"
    return options


def recipients(home: Path, data: bytes) -> list[str]:
    """The key IDs a message is encrypted to (``gpg --list-packets``)."""
    out = subprocess.run(
        [gpg_program(), "--homedir", str(home), "--batch", "--list-packets"],
        input=data,
        capture_output=True,
        env={**os.environ, "LC_ALL": "C"},
        timeout=60,
    ).stdout.decode(errors="replace")
    return [
        line.split("keyid")[1].split()[0]
        for line in out.splitlines()
        if line.startswith(":pubkey enc packet:")
    ]


def decrypt_cli(home: Path, data: bytes) -> bytes:
    """What ``gpg --decrypt`` itself makes of ``data`` (with :data:`PASSPHRASE`)."""
    return gpg(
        home,
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        PASSPHRASE,
        "--decrypt",
        data=data,
    )


def trust_ultimately(home: Path, fingerprint: str) -> None:
    """Mark ``fingerprint`` ultimately trusted in ``home``: Barman's gpg --encrypt has no
    ``--trust-model always`` and, in batch mode, refuses a key nobody vouched for."""
    gpg(home, "--import-ownertrust", data=f"{fingerprint}:6:\n".encode())
