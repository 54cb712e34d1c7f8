"""Finding PostgreSQL client programs (pg_receivewal, pg_basebackup) and parsing their versions."""

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


def require_compatible(program: ClientProgram | None, name: str, server_version_num: int) -> None:
    """Refuse a missing program, or one whose major is older than the server's."""
    if program is None:
        raise WalvaultError(f"{name} not present in path_prefix or $PATH")
    server_major = server_major_num(server_version_num)
    if program.version.major_num < server_major:
        raise WalvaultError(
            f"{name} version not compatible with PostgreSQL server version: {program.path} is "
            f"{program.version.major}, the server is {major_name(server_major)} (the client "
            "must be the same major version as the server or newer)"
        )
