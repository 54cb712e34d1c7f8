"""The GnuPG keys of ``encryption = gpg``: the one archive-wal encrypts to, and what ``check``
asks of the secret keys (see :mod:`walvault.archive.encryption` for the format and the filter).

:func:`resolve_recipient` turns ``encryption_key_id`` into exactly one public key with a
usable encryption (sub)key -- not found, ambiguous, expired, revoked or unable to encrypt is an
EncryptionError -- from gpg's colon listing.  :func:`secret_keygrips` and
:func:`forget_passphrases` let ``check`` make gpg-agent forget a cached passphrase before a
trial decryption.
"""

from __future__ import annotations

import os

from walvault.archive.encryption import EncryptionError, Gpg, messages

# ---------------------------------------------------------------- the recipient


class Recipient:
    """The key archive-wal encrypts to, as gpg listed it."""

    __slots__ = ("argument", "expires", "fingerprint", "key_id", "user_id")

    def __init__(
        self, key_id: str, fingerprint: str, user_id: str, expires: int | None, argument: str
    ) -> None:
        self.key_id, self.fingerprint, self.user_id = key_id, fingerprint, user_id
        self.expires, self.argument = expires, argument

    def __repr__(self) -> str:
        return f"Recipient({self.fingerprint!r})"

    def describe(self) -> str:
        """``<fingerprint> (<user id>)[, expires YYYY-MM-DD]``."""
        text = f"{self.fingerprint} ({self.user_id})" if self.user_id else self.fingerprint
        if self.expires:
            import time

            text += ", expires " + time.strftime("%Y-%m-%d", time.gmtime(self.expires))
        return text


_UNUSABLE = {"e": "expired", "r": "revoked", "i": "invalid", "d": "disabled"}


class _Listed:
    """One ``pub`` of a colon listing and what follows it."""

    def __init__(self, fields: list[str]) -> None:
        self.validity, self.caps, self.expires = fields[1], fields[11], fields[6]
        self.fingerprint = ""
        self.user_id = ""


def _listed_keys(listing: bytes) -> list[_Listed]:
    keys: list[_Listed] = []
    for line in listing.decode("utf-8", "replace").splitlines():
        fields = line.split(":") + [""] * 12  # short lines: the fields they omit are empty
        if fields[0] == "pub":
            keys.append(_Listed(fields))
        elif keys and fields[0] == "fpr" and not keys[-1].fingerprint:
            keys[-1].fingerprint = fields[9]
        elif keys and fields[0] == "uid" and not keys[-1].user_id:
            keys[-1].user_id = _unescape(fields[9])
    return keys


def resolve_recipient(gpg: Gpg, key_id: str) -> Recipient:
    """The one public key ``key_id`` names, with a usable encryption key (EncryptionError:
    not found, ambiguous, expired, revoked, or unable to encrypt)."""
    code, out, err = gpg.run("--with-colons", "--fixed-list-mode", "--list-keys", "--", key_id)
    keys = _listed_keys(out) if code == 0 else []
    where = f"server {gpg.server}: encryption_key_id '{key_id}'"
    if not keys:
        raise EncryptionError(f"{where} is not in the keyring ({messages(err)})")
    if len(keys) > 1:
        prints = ", ".join(k.fingerprint for k in keys)
        raise EncryptionError(
            f"{where} matches {len(keys)} keys ({prints}): give the fingerprint of one"
        )
    key = keys[0]
    if not key.fingerprint:
        raise EncryptionError(f"{where}: gpg listed no fingerprint for it")
    why = _UNUSABLE.get(key.validity)
    if why is not None:
        raise EncryptionError(f"{where}: key {key.fingerprint} is {why}")
    if "E" not in key.caps:
        raise EncryptionError(
            f"{where}: key {key.fingerprint} has no usable encryption (sub)key "
            "(expired, revoked or missing)"
        )
    return Recipient(
        key_id,
        key.fingerprint,
        key.user_id,
        int(key.expires) if key.expires.isdigit() else None,
        key_id if key_id.endswith("!") else key.fingerprint,
    )


def _unescape(text: str) -> str:
    """gpg's colon listings write ``:`` and control characters as ``\\xNN``."""
    if "\\x" not in text:
        return text
    import re

    data = re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]), text.encode())
    return data.decode("utf-8", "replace")


# ---------------------------------------------------------------- for check


def secret_keygrips(gpg: Gpg, fingerprint: str) -> list[str]:
    """The keygrips of the secret encryption (sub)keys of ``fingerprint`` held by this
    keyring (empty when the secret key is not here)."""
    code, out, _ = gpg.run(
        "--with-colons", "--with-keygrip", "--fixed-list-mode", "--list-secret-keys", fingerprint
    )
    if code != 0:
        return []
    grips: list[str] = []
    wanted = False
    for line in out.decode("utf-8", "replace").splitlines():
        fields = line.split(":") + [""] * 15
        if fields[0] in ("sec", "ssb"):
            # capabilities (field 12), and field 15: "+" when the secret part is here
            wanted = "e" in fields[11] and fields[14] in ("+", "")
        elif fields[0] == "grp" and wanted:
            grips.append(fields[9])
            wanted = False
    return grips


def forget_passphrases(gpg: Gpg, keygrips: list[str]) -> bool:
    """Make gpg-agent forget the cached passphrases of ``keygrips`` (True when it said OK)."""
    import shutil
    import subprocess

    tool = shutil.which("gpg-connect-agent", path=os.path.dirname(gpg.program))
    if tool is None:
        return False
    commands = [f"CLEAR_PASSPHRASE --mode=normal {grip}" for grip in keygrips]
    try:
        done = subprocess.run(
            [tool, "--no-autostart", *commands, "/bye"],
            capture_output=True,
            env=gpg.environ(),
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if b"no gpg-agent running" in done.stderr:
        return True  # nothing is cached
    replies = done.stdout.decode("utf-8", "replace").split()
    return done.returncode == 0 and replies.count("OK") >= len(keygrips)
