"""Each tool's server home (configuration, directories), its commands, and archive checks."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wvbench.cluster import Cluster
from wvbench.common import PG_MAJOR, SEG, hash_dir, seg_name, seg_parse
from wvbench.tools import Tools

# --------------------------------------------------------------------------- configurations


def server_section(cluster: Cluster, slot: str, codec: str, extra: dict[str, str]) -> str:
    """The ``[pg]`` section; ``extra`` adds options or replaces these defaults."""
    options = {
        "description": "walvault bench",
        "conninfo": cluster.conninfo(),
        "streaming_conninfo": cluster.conninfo(),
        "backup_method": "postgres",
        "streaming_archiver": "on",
        "slot_name": slot,
        "archiver": "off",
        "path_prefix": str(cluster.bindir),
    }
    if codec != "none":
        options["compression"] = codec
    options.update(extra)
    return "[pg]\n" + "".join(f"{key} = {value}\n" for key, value in options.items())


@dataclass
class Home:
    """One tool's server home: configuration file and directories."""

    tool: str  # "barman" | "walvault"
    root: Path
    conf: Path

    @property
    def server(self) -> Path:
        return self.root / "pg"

    @property
    def streaming(self) -> Path:
        return self.server / "streaming"

    @property
    def wals(self) -> Path:
        return self.server / "wals"

    def archived(self, name: str) -> Path:
        return self.wals / hash_dir(name) / name


def make_home(
    tool: str,
    root: Path,
    cluster: Cluster,
    codec: str,
    sysid: int,
    extra: dict[str, str] | None = None,
    slot: str | None = None,
) -> Home:
    root.mkdir(parents=True)
    home = Home(tool=tool, root=root, conf=root / f"{tool}.conf")
    for sub in ("base", "wals", "streaming", "incoming", "errors"):
        (home.server / sub).mkdir(parents=True)
    # what receive-wal records on first contact (Barman's format): the archive belongs to
    # this cluster, as in a real deployment where receive-wal ran before archive-wal
    (home.server / "identity.json").write_text(
        json.dumps({"systemid": str(sysid), "version": str(PG_MAJOR)}, indent=4, sort_keys=True)
        + "\n"
    )
    if tool == "barman":
        head = f"[barman]\nbarman_user = root\nbarman_home = {root}\nlog_file = {root}/barman.log\n"
    else:
        head = f"[walvault]\nwalvault_home = {root}\nlog_file = {root}/walvault.log\n"
    home.conf.write_text(head + "\n" + server_section(cluster, slot or tool, codec, extra or {}))
    home.conf.chmod(0o600)
    return home


def archive_cmd(tools: Tools, home: Home) -> list[str]:
    return [str(tools.exe(home.tool)), "-c", str(home.conf), "-q", "archive-wal", "pg"]


def get_wal_cmd(tools: Tools, home: Home, name: str) -> list[str]:
    return [str(tools.exe(home.tool)), "-c", str(home.conf), "-q", "get-wal", "pg", name]


def restore_command(
    tools: Tools,
    home: Home,
    prefetch: int,
    spool: Path,
    ssh: tuple[str, int] | None = None,
    agent: bool = True,
) -> str:
    """The ``restore_command`` each tool's documentation gives (%f, %p unexpanded): on the
    backup host itself, or with ``ssh`` = (user, port) through ssh to 127.0.0.1.

    Every client gets ``--spool-dir spool``, never the default ``/var/tmp/walrestore``
    that other runs on this machine may share: walvault's restore agent lives there (the
    bench stops it through that path), and so do both tools' prefetched segments.
    ``agent`` False: walvault's ``--no-agent`` (fetch in-process, no prefetch)."""
    if ssh is None and home.tool == "barman":
        # Barman's advice for a restore on the Barman host itself (barman-wal-restore needs ssh)
        barman, conf = shlex.quote(str(tools.exe("barman"))), shlex.quote(str(home.conf))
        return f"{barman} -c {conf} -q get-wal pg %f > %p"
    if home.tool == "barman":
        client: Path | None = tools.exe("barman").parent / "barman-wal-restore"
    else:
        client = tools.wal_restore
    assert client is not None
    parts = [str(client)]
    if ssh is not None:
        parts += ["-U", ssh[0], "--port", str(ssh[1])]
    parts += ["-c", str(home.conf)]
    if prefetch:
        parts += ["-p", str(prefetch)]
    parts += ["--spool-dir", str(spool)]
    if not agent:
        assert home.tool == "walvault"
        parts.append("--no-agent")
    # WALVAULT_HOST 'local' (walvault only): read the archive on this host, no ssh
    host = "127.0.0.1" if ssh is not None else "local"
    return " ".join(shlex.quote(p) for p in parts) + f" {host} pg %f %p"


def place_partial(streaming: Path, after: str) -> None:
    """The live segment of pg_receivewal: a 16 MiB ``.partial`` after the newest finished one."""
    tli, segno = seg_parse(after)
    path = streaming / f"{seg_name(tli, segno + 1)}.partial"
    with open(path, "wb") as handle:
        handle.truncate(SEG)


# --------------------------------------------------------------------------- verification


def decompressed_sha256(path: Path) -> str:
    """sha256 of the file's content after decompression (algorithm found by magic bytes)."""
    from walvault import compression

    algo = compression.identify_file(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in compression.iter_decompressed(handle, algo):
            digest.update(piece)
    return digest.hexdigest()


def verify_archive(
    home: Home, names: Sequence[str], hashes: dict[str, str], content: bool
) -> str | None:
    """None when every segment is archived (and, with ``content``, intact), else what is wrong."""
    missing = [n for n in names if not home.archived(n).is_file()]
    if missing:
        return (
            f"{len(missing)} of {len(names)} segments missing from {home.wals} "
            f"(first: {missing[0]})"
        )
    left = sorted(n for n in os.listdir(home.streaming) if not n.endswith(".partial"))
    if left:
        return f"{len(left)} files left in {home.streaming} (first: {left[0]})"
    if content:
        for name in names:
            if decompressed_sha256(home.archived(name)) != hashes[name]:
                return f"{home.archived(name)} does not decompress to the original segment"
    return None


def count_archived(home: Home) -> int:
    """How many segment files the archive holds (hash directories only)."""
    total = 0
    with os.scandir(home.wals) as entries:
        for entry in entries:
            if entry.is_dir() and len(entry.name) == 16:
                total += len(os.listdir(entry.path))
    return total


def archived_bytes(home: Home, names: Sequence[str]) -> int:
    return sum(home.archived(n).stat().st_size for n in names)
