"""``encryption`` and ``decryption``: can this host encrypt what it archives, and read it back?

``encryption`` (Barman's line, shown with ``encryption = gpg``): the key ``encryption_key_id``
names exactly one public key with a usable encryption (sub)key, and a trial message is
encrypted to it through the very filter archive-wal uses.  Only the public key is needed.

``decryption`` (walvault's, shown with ``encryption = gpg`` or an
``encryption_passphrase_command``): what ``check`` can tell without prompting anyone -- that
the passphrase command prints a passphrase, that the secret key of ``encryption_key_id`` is
in the keyring, and that the trial message decrypts with that passphrase.  gpg-agent is made
to forget the key's cached passphrase first, or a wrong command would pass while the agent
remembers the right one.  Files encrypted to an older key (before a rotation) need that
key's secret in the keyring too, with the same passphrase: the trial only proves the
current key.  Without a passphrase command the line is OK and says what that means: this
host archives, it does not serve encrypted WAL.
"""

from __future__ import annotations

import io

from walvault.archive import encryption as enc
from walvault.archive import gpgkeys
from walvault.checks import CheckResult
from walvault.config import ServerConfig
from walvault.storage.base import ObjectInfo

TRIAL = b"walvault check: trial message\n"


class _Message:
    """A Reader of the trial message (what gpg decrypts, fed through a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._io = io.BytesIO(data)
        self.info = ObjectInfo("trial", len(data), 0.0)

    def read(self, size: int = -1, /) -> bytes:
        return self._io.read(size)

    def close(self) -> None:
        self._io.close()

    def __enter__(self) -> _Message:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_encryption(server: ServerConfig) -> list[CheckResult]:
    """The ``encryption`` and ``decryption`` lines of ``server`` (none when it uses neither)."""
    if server.encryption != enc.GPG and not server.encryption_passphrase_command:
        return []
    gpg = enc.Gpg.for_server(server)
    lines: list[CheckResult] = []
    recipient: gpgkeys.Recipient | None = None
    message: bytes | None = None
    if server.encryption_key_id:
        try:
            recipient = gpgkeys.resolve_recipient(gpg, server.encryption_key_id)
            sink = io.BytesIO()
            with enc.encrypting(gpg, recipient, sink) as out:
                out.write(TRIAL)
            message = sink.getvalue()
            found = CheckResult(
                "encryption", True, f"key {recipient.describe()}: trial encryption succeeded"
            )
        except enc.EncryptionError as exc:
            found = CheckResult("encryption", False, exc.message)
        if server.encryption == enc.GPG:
            lines.append(found)
    lines.append(_decryption(server, gpg, recipient, message))
    return lines


def _decryption(
    server: ServerConfig, gpg: enc.Gpg, recipient: gpgkeys.Recipient | None, message: bytes | None
) -> CheckResult:
    name = "decryption"
    if not server.encryption_passphrase_command:
        return CheckResult(
            name,
            True,
            "no encryption_passphrase_command: this host archives (the public key is enough) "
            "but get-wal and recover here cannot read encrypted WAL",
        )
    try:
        gpg.passphrase()
    except enc.DecryptionError as exc:
        return CheckResult(name, False, exc.message)
    if recipient is None or message is None:
        return CheckResult(
            name,
            True,
            "encryption_passphrase_command prints a passphrase (no usable encryption_key_id: "
            "no trial decryption)",
        )
    grips = gpgkeys.secret_keygrips(gpg, recipient.fingerprint)
    if not grips:
        return CheckResult(
            name,
            False,
            f"the secret key of {recipient.fingerprint} is not in the keyring of this user "
            "(GNUPGHOME or ~/.gnupg): get-wal and recover cannot decrypt",
        )
    cleared = gpgkeys.forget_passphrases(gpg, grips)
    try:
        with enc.DecryptingReader(gpg, _Message(message), b"", "the trial message") as plain:
            back = b"".join(enc.decrypted_pieces(plain))
    except enc.DecryptionError as exc:
        return CheckResult(name, False, exc.message)
    if back != TRIAL:
        return CheckResult(name, False, "the trial message decrypted to something else")
    hint = "trial decryption with encryption_passphrase_command succeeded"
    if cleared:
        return CheckResult(name, True, hint + " (gpg-agent's cached passphrase cleared first)")
    return CheckResult(
        name,
        True,
        hint + " (gpg-agent's cache could not be cleared: a wrong passphrase would pass "
        "while the agent remembers the right one)",
    )
