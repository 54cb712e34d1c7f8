"""The results: rows, the printed table, and the machine and tree they were measured on."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wvbench.common import BASE, REPO, fmt_bytes, fmt_num

# --------------------------------------------------------------------------- results


@dataclass
class Row:
    section: str
    figure: str
    unit: str
    better: str  # "higher" | "lower" | "info"
    barman: float | None = None
    walvault: float | None = None
    barman_text: str | None = None  # overrides the number (e.g. "> 120 s", "not built")
    walvault_text: str | None = None
    note: str = ""

    @property
    def advantage(self) -> float | None:
        """How many times better walvault is (> 1 = walvault better)."""
        if self.better == "info" or not self.barman or not self.walvault:
            return None
        if self.barman_text or self.walvault_text:
            return None
        if self.better == "higher":
            return self.walvault / self.barman
        return self.barman / self.walvault


class Results:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.missing: list[str] = []
        self.errors: list[str] = []
        self.details: dict[str, Any] = {}

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "kernel": platform.release()}
    with contextlib.suppress(Exception):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, flags=re.M)
        info["cpu"] = m.group(1).strip() if m else None
    with contextlib.suppress(Exception):
        meminfo = Path("/proc/meminfo").read_text()
        m = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, flags=re.M)
        info["memory_gib"] = round(int(m.group(1)) / 1024 / 1024, 1) if m else None
    with contextlib.suppress(Exception):
        df = (
            subprocess.run(
                ["df", "-k", "--output=source,fstype,size", str(BASE)],
                capture_output=True,
                text=True,
            )
            .stdout.splitlines()[-1]
            .split()
        )
        info["filesystem"] = {"device": df[0], "type": df[1], "size_kib": int(df[2])}
        dev = os.path.basename(os.path.realpath(df[0]))
        rot = Path(f"/sys/block/{dev}/queue/rotational")
        if rot.exists():
            info["filesystem"]["rotational"] = rot.read_text().strip() == "1"
    with contextlib.suppress(Exception):
        info["virtualization"] = (
            subprocess.run(["systemd-detect-virt"], capture_output=True, text=True).stdout.strip()
            or None
        )
    info["python_walvault"] = platform.python_version()
    return info


def walvault_tree() -> dict[str, Any]:
    """Which walvault code was measured: the commit, and how many files under src/ differ."""
    tree: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        tree["commit"] = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
        ).stdout
        tree["src_files_changed"] = len(status.splitlines())
    return tree


# --------------------------------------------------------------------------- report


def table(results: Results) -> str:
    """The results as an aligned Markdown table, with the notes as numbered footnotes."""
    head = ("figure", "Barman 3.20.1", "walvault", "walvault advantage")
    lines: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    section = None
    for row in results.rows:
        if row.section != section:
            section = row.section
            lines.append((f"**{section}**", "", "", ""))

        def cell(value: float | None, override: str | None, unit: str = row.unit) -> str:
            if override:
                return override
            if value is None:
                return "-"
            if unit == "s":
                return f"{value:.3f} s" if value < 1 else f"{value:.1f} s"
            if unit == "bytes":
                return fmt_bytes(value)
            return f"{fmt_num(value)} {unit}"

        figure = row.figure
        if row.note:
            if row.note not in notes:
                notes.append(row.note)
            figure += f" [{notes.index(row.note) + 1}]"
        adv = row.advantage
        lines.append(
            (
                figure,
                cell(row.barman, row.barman_text),
                cell(row.walvault, row.walvault_text),
                f"x{adv:.1f}" if adv is not None else "",
            )
        )
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(4)]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(line) for line in lines]
    out.append("")
    out.append(
        "walvault advantage: walvault/Barman for rates, Barman/walvault for times and memory "
        "(> 1 = walvault better)."
    )
    out += [f"[{n}] {note}" for n, note in enumerate(notes, 1)]
    return "\n".join(out)
