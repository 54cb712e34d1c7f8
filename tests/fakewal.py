"""Synthetic WAL segments for unit tests: real page headers and a valid chain of records."""

from __future__ import annotations

import functools
import os
import random
import struct
from pathlib import Path
from typing import Any

from walvault.config import ServerConfig
from walvault.wal.names import Segment

PG15_MAGIC = 0xD110
SYSID = 7301234567890123456
OTHER_SYSID = 7309999999999999999
MIB = 1 << 20


def fake_segment(
    name: str,
    *,
    sysid: int = SYSID,
    seg_size: int = MIB,
    header_tli: int | None = None,
    pageaddr: int | None = None,
    seed: int | None = None,
) -> bytes:
    """A segment named ``name``: page headers and a valid chain of records (CRC-32C, xl_prev)
    filling it, their contents derived from ``seed`` (default: the name); the long header's
    timeline and page address can be overridden to make it wrong on purpose."""
    data = _valid_segment(name[:24], sysid, seg_size, name if seed is None else seed)
    if header_tli is None and pageaddr is None:
        return data
    segment = Segment.from_name(name[:24])
    address = segment.to_lsn(seg_size) if pageaddr is None else pageaddr
    tli = segment.tli if header_tli is None else header_tli
    header = struct.pack("<HHIQI4xQII", PG15_MAGIC, 0x0002, tli, address, 0, sysid, seg_size, 8192)
    return header + data[len(header) :]


@functools.lru_cache(maxsize=64)
def _valid_segment(name: str, sysid: int, seg_size: int, seed: object) -> bytes:
    from walbuilder import WalBuilder

    segment = Segment.from_name(name)
    builder = WalBuilder(
        tli=segment.tli, seg_size=seg_size, sysid=sysid, start_segno=segment.segno(seg_size)
    )
    rng = random.Random(str(seed))
    end = builder.base + seg_size
    while builder.pos < end:
        builder.add(rng.randrange(40, 3000), fill=rng.randrange(256))
    return builder.segments()[0][1]


def make_server(root: Path, name: str = "pg", **overrides: Any) -> ServerConfig:
    """A ServerConfig whose directories live under ``root`` (created)."""
    base = root / name
    dirs = {
        "backup_directory": str(base),
        "wals_directory": str(base / "wals"),
        "incoming_wals_directory": str(base / "incoming"),
        "streaming_wals_directory": str(base / "streaming"),
        "errors_directory": str(base / "errors"),
    }
    for key in ("wals_directory", "incoming_wals_directory", "streaming_wals_directory"):
        os.makedirs(dirs[key], exist_ok=True)
    options: dict[str, Any] = {
        "name": name,
        "walvault_home": str(root),
        "lock_directory": str(root),
        **dirs,
        **overrides,
    }
    return ServerConfig(**options)


def archive_path(server: ServerConfig, name: str) -> Path:
    """``wals/<hash>/<name>`` with its directory created."""
    path = Path(server.wals_directory) / name[:16] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_config(home: Path, servers: dict[str, dict[str, str]] | None = None) -> Path:
    """A walvault configuration with a streaming server ``pg`` (no PostgreSQL needed)."""
    servers = servers or {
        "pg": {
            "conninfo": "host=localhost user=walvault",
            "streaming_conninfo": "host=localhost user=streaming_walvault",
            "streaming_archiver": "on",
            "slot_name": "walvault",
            "archiver": "off",
        }
    }
    home.mkdir(parents=True, exist_ok=True)
    text = f"[walvault]\nwalvault_home = {home}\n"
    for name, options in servers.items():
        text += f"\n[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in options.items())
    conf = home / "walvault.conf"
    conf.write_text(text)
    return conf


def python_stdout(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    """What ``code`` prints when run by a new interpreter (this one's), which must succeed:
    for claims about what a fresh process imports.  ``env`` adds to the environment."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env} if env else None,
    ).stdout


def restore_in_a_fresh_interpreter(argv: list[str]) -> tuple[int, set[str]]:
    """Run ``walrestore.main(argv)`` in a new interpreter: its exit code and every module
    it had loaded by the end (for the start-up claims about what a call imports)."""
    import ast

    code = (
        "import sys\n"
        "from walvault.clients import walrestore\n"
        f"code = walrestore.main({argv!r})\n"
        "print(code, sorted(sys.modules))\n"
    )
    status, loaded = python_stdout(code).split(" ", 1)
    return int(status), set(ast.literal_eval(loaded))
