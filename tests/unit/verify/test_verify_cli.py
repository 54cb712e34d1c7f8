"""``walvault verify`` on an archive of WAL built record by record: lines, JSON, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakewal import write_config
from walbuilder import MIB, WalBuilder
from walvault.cli import main


def build_archive(home: Path, segments: int = 4) -> list[str]:
    builder = WalBuilder()
    while builder.pos < builder.base + segments * MIB + 5000:
        builder.add(900)
    builder.switch()
    names = []
    for name, data in builder.segments()[: segments + 1]:
        path = home / "pg" / "wals" / name[:16] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        names.append(name)
    return names


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_archive_alone_verifies_and_a_hole_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = str(write_config(tmp_path / "home"))
    names = build_archive(tmp_path / "home")
    code, out, err = run(capsys, "-c", conf, "verify", "pg")
    assert (code, err) == (0, "")
    assert f"\tarchive WAL timeline 1: OK ({names[0]} to {names[-1]}, 5 segments, RPO " in out
    assert "\tverification: OK (0 backups, 5 WAL files read (5 MiB) in " in out
    (tmp_path / "home" / "pg" / "wals" / names[2][:16] / names[2]).unlink()
    code, out, _ = run(capsys, "-c", conf, "-f", "json", "verify", "pg")
    assert code == 1
    line = json.loads(out)["pg"]["archive_wal_timeline_1"]
    assert (
        line["status"] == "FAILED" and line["problem"] == f"{names[2]} is missing from the archive"
    )
    assert line["rpo_segment"] == names[1] and line["segments"] == 2
    assert json.loads(out)["pg"]["verification"]["status"] == "FAILED"


def test_bad_arguments_are_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = str(write_config(tmp_path / "home"))
    code, out, err = run(capsys, "-c", conf, "verify", "nosuch")
    assert code == 1 and err.startswith("ERROR: unknown server 'nosuch'")
    code, out, err = run(capsys, "-c", conf, "verify-backup", "pg", "20000101T000000")
    assert code == 1 and err.startswith("ERROR: unknown backup '20000101T000000'")
    code, out, err = run(capsys, "-c", conf, "verify", "pg")
    assert code == 1 and "archive WAL: FAILED (the archive holds no WAL segment)" in out
