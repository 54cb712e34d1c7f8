"""The Bench: one run's cluster, WAL pool and tool homes, shared by the sections."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Collection
from pathlib import Path

from wvbench.cluster import Cluster, collect_wal, ensure_bench_user
from wvbench.common import BENCH_USER, PAGE, PG_MAJOR, Params, log, sha256_file
from wvbench.homes import Home, make_home
from wvbench.report import Results
from wvbench.tools import Tools

# --------------------------------------------------------------------------- the run


def no_figure(tool: str, failed: Collection[str], ready: bool) -> str | None:
    """What a table cell says instead of ``tool``'s figure (None: there is a figure)."""
    if tool in failed:
        return "failed"
    if not ready:
        return "not installed" if tool == "barman" else "not built"
    return None


class Bench:
    def __init__(self, params: Params, tools: Tools, work: Path, results: Results) -> None:
        self.params = params
        self.tools = tools
        self.work = work
        self.results = results
        self.cluster: Cluster | None = None
        self.pool = work / "pool"
        self.segments: list[str] = []
        self.hashes: dict[str, str] = {}
        self.sysid = 0
        self.first_page = b""
        self._homes = 0
        self._spools = 0

    # ---- setup

    def setup(self) -> None:
        user = ensure_bench_user()
        self.cluster = Cluster(self.work / "pg", self.tools.pg_bindir, user)
        log(f"initdb + start PostgreSQL {PG_MAJOR} as {BENCH_USER} on port {self.cluster.port}")
        self.cluster.init()
        self.cluster.start()
        self.results.details["postgres_version"] = self.cluster.version()
        start = time.monotonic()
        self.segments = collect_wal(self.cluster, self.pool, self.params)
        # the tools need no live server from here on (identity.json is written for them):
        # stop it, so its checkpointer, autovacuum (after pgbench) and write-back do not
        # compete with the measurements on this small machine
        self.cluster.sql("CHECKPOINT")
        self.cluster.stop()
        os.sync()
        log(
            f"collected {len(self.segments)} finished 16 MiB segments "
            f"({self.segments[0]} .. {self.segments[-1]}) in {time.monotonic() - start:.0f} s"
        )
        with open(self.pool / self.segments[0], "rb") as handle:
            self.first_page = handle.read(PAGE)
        (self.sysid,) = struct.unpack_from("<Q", self.first_page, 24)
        self.hashes = {n: sha256_file(self.pool / n) for n in self.segments}
        self.results.details["wal"] = {
            "segments_collected": len(self.segments),
            "first": self.segments[0],
            "last": self.segments[-1],
            "system_identifier": str(self.sysid),
            "generated_by": f"pgbench -i -s {self.params.pgbench_scale}, then pgbench -c 4 -j 2 -T",
        }

    def teardown(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()

    def new_home(
        self,
        tool: str,
        codec: str,
        extra: dict[str, str] | None = None,
        slot: str | None = None,
    ) -> Home:
        assert self.cluster is not None
        self._homes += 1
        root = self.work / "homes" / f"{self._homes:03d}-{tool}-{codec}"
        return make_home(tool, root, self.cluster, codec, self.sysid, extra, slot)

    def new_spool(self) -> Path:
        """A fresh spool directory for one run of restore clients (not created).

        The name is short and fixed-width (``sp001``...): no spool's path is a prefix of
        another's (the bench stops an agent by its spool's path), and walvault's agent puts
        its ssh ControlPath inside it, which must stay under ~90 characters.
        """
        self._spools += 1
        return self.work / f"sp{self._spools:03d}"

    def live_cluster(self) -> Cluster:
        """The bench cluster, started again if a section before stopped it."""
        assert self.cluster is not None
        if not (self.cluster.data / "postmaster.pid").exists():
            self.cluster.start()
        return self.cluster

    def tool_ready(self, tool: str, *commands: str) -> bool:
        """The tool is installed (Barman) or has these sub-commands (walvault)."""
        if tool == "barman":
            return self.tools.barman is not None
        return all(self.tools.has(command) for command in commands)

    def texts(self, command: str, failed: dict[str, str]) -> tuple[str | None, str | None]:
        barman, walvault = (
            no_figure(tool, failed, self.tool_ready(tool, command))
            for tool in ("barman", "walvault")
        )
        return barman, walvault
