"""Finding PostgreSQL client programs (pg_receivewal, pg_basebackup) and parsing their versions.

Which client may serve which server is PostgreSQL's own rule, not ours: pg_receivewal and
pg_basebackup check the server's major as soon as they connect and refuse one newer than
themselves ("it might work, but we don't know, so err on the safe side") or older than the
protocol they speak: pg_receivewal streams from 9.3 on (the streaming messages changed in
9.3), pg_basebackup copies from 9.1 on (``BASE_BACKUP``). So the newest client serves every
supported server, and a client older than the server never does. :func:`serves` states that
rule once; receive-wal, backup and check all ask it. ``tests/matrix/test_client_rule.py``
runs the real programs of PostgreSQL 14 to 18 against servers of 14 to 18 and compares.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from walvault.errors import WalvaultError

_PARENS_RE = re.compile(r"\s*\([^)]*\)")
_VERSION_RE = re.compile(
    r"(?:\d+:)?(?P<major>\d+)(?:\.(?P<minor>\d+))?(?:\.\d+)*(?P<tag>devel|(?:alpha|beta|rc)\d*)?"
)


@dataclass(frozen=True)
class ClientVersion:
    """A parsed client version: ``full`` as printed, ``major`` as 15, or 9.6 as 90600 style."""

    full: str
    major_num: int  # 150000 for 15.x, 90600 for 9.6.x

    @property
    def major(self) -> str:
        """``15`` or ``9.6``."""
        if self.major_num >= 100000:
            return str(self.major_num // 10000)
        return f"{self.major_num // 10000}.{self.major_num // 100 % 100}"


def parse_version(text: str) -> ClientVersion:
    """Parse ``--version`` output or a bare version/package string.

    Handles ``pg_receivewal (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)``, ``16devel``,
    ``17beta2``, ``16rc1`` and Debian package strings with an epoch such as ``1:13.0-1.pgdg``.
    """
    stripped = _PARENS_RE.sub("", text.strip())
    for token in stripped.split():
        match = _VERSION_RE.match(token)
        if not match:
            continue
        major = int(match.group("major"))
        minor = int(match.group("minor") or 0)
        if major >= 10:
            return ClientVersion(token, major * 10000)
        if major >= 7:
            return ClientVersion(token, major * 10000 + minor * 100)
    raise ValueError(f"cannot find a PostgreSQL version in {text.strip()!r}")


def server_major_num(version_num: int) -> int:
    """``server_version_num`` reduced to its major: 150018 -> 150000, 90624 -> 90600."""
    if version_num >= 100000:
        return version_num // 10000 * 10000
    return version_num // 100 * 100


def major_name(major_num: int) -> str:
    """150000 -> ``15``; 90600 -> ``9.6``."""
    return ClientVersion("", major_num).major


@dataclass(frozen=True)
class ClientProgram:
    """A PostgreSQL client program found on the search path."""

    path: str
    version: ClientVersion


def find_program(names: tuple[str, ...], search_path: str) -> ClientProgram | None:
    """The first of ``names`` on ``search_path`` whose ``--version`` works.

    Directories are tried in order and, in each, the names in order. Running ``--version``
    rejects wrapper shims that fail without a cluster to pick the version for.
    """
    for directory in search_path.split(os.pathsep):
        if not directory:
            continue
        for name in names:
            candidate = os.path.join(directory, name)
            if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
                continue
            try:
                result = subprocess.run(
                    [candidate, "--version"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                continue
            if result.returncode != 0:
                continue
            try:
                return ClientProgram(candidate, parse_version(result.stdout))
            except ValueError:
                continue
    return None


RECEIVEWAL_NAMES = ("pg_receivewal", "pg_receivexlog")


#: The oldest server major each client program works with (see the module docstring).
OLDEST_SERVER = {
    "pg_receivewal": 90300,
    "pg_receivexlog": 90300,
    "pg_basebackup": 90100,
    # backup_manifest exists from PostgreSQL 13 on
    "pg_verifybackup": 130000,
    # incremental backups exist from PostgreSQL 17 on
    "pg_combinebackup": 170000,
}


def serves(name: str, client: ClientVersion, server_version_num: int) -> bool:
    """Whether the client program ``name`` of version ``client`` works with a server of
    ``server_version_num``: ``OLDEST_SERVER[name] <= server major <= client major``."""
    server_major = server_major_num(server_version_num)
    return OLDEST_SERVER[name] <= server_major <= client.major_num


def served_range(name: str, client: ClientVersion) -> str:
    """The servers ``name`` of version ``client`` works with, in words: ``9.3 to 15``."""
    return f"{major_name(OLDEST_SERVER[name])} to {client.major}"


def require_compatible(program: ClientProgram | None, name: str, server_version_num: int) -> None:
    """Refuse a missing program, or one that does not serve the server (:func:`serves`)."""
    if program is None:
        raise WalvaultError(f"{name} not present in path_prefix or $PATH")
    if serves(name, program.version, server_version_num):
        return
    server_major = server_major_num(server_version_num)
    if server_major > program.version.major_num:
        advice = f"use the {name} of PostgreSQL {major_name(server_major)} or newer"
    else:
        advice = f"PostgreSQL {major_name(server_major)} is too old for it"
    raise WalvaultError(
        f"{name} version not compatible with PostgreSQL server version: {program.path} is "
        f"{program.version.major}, the server is {major_name(server_major)} ({name} "
        f"{program.version.major} works with servers from {served_range(name, program.version)}"
        f": {advice}, e.g. through path_prefix)"
    )
