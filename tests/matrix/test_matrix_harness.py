"""The harness finds every major's binaries, and they run the programs walvault's tests need."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from pgharness import (
    DEFAULT_MAJOR,
    MATRIX_MAJORS,
    HarnessError,
    find_pg_bindir,
    requested_majors,
)

PROGRAMS = (
    "initdb",
    "postgres",
    "pg_ctl",
    "pg_controldata",
    "pg_receivewal",
    "pg_basebackup",
    "pg_verifybackup",
    "pg_waldump",
)


def test_requested_majors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WALVAULT_PG_MAJORS", raising=False)
    assert requested_majors() == (MATRIX_MAJORS, False)
    monkeypatch.setenv("WALVAULT_PG_MAJORS", " 18, 14 14 ")
    assert requested_majors() == ((14, 18), True)
    monkeypatch.setenv("WALVAULT_PG_MAJORS", "14 9.6")
    with pytest.raises(HarnessError, match=r"'9.6' is not a PostgreSQL major \(accepted: majors"):
        requested_majors()


def test_each_major_has_the_programs_the_tests_run(pg_major: int, pg_bindir_of: Any) -> None:
    bindir: Path = pg_bindir_of(pg_major)
    programs = PROGRAMS + (("pg_combinebackup",) if pg_major >= 17 else ())
    for program in programs:
        out = subprocess.run(
            [str(bindir / program), "--version"], capture_output=True, text=True, check=True
        ).stdout
        assert f"(PostgreSQL) {pg_major}." in out, (program, out)


def test_walvault_pg_bindir_is_the_default_and_serves_its_own_major_only(
    monkeypatch: pytest.MonkeyPatch, pg_bindir_of: Any
) -> None:
    default = pg_bindir_of(DEFAULT_MAJOR)
    other = pg_bindir_of(max(MATRIX_MAJORS))
    monkeypatch.setenv("WALVAULT_PG_BINDIR", str(other))
    assert find_pg_bindir() == other  # whatever its major: the binaries of every plain test
    assert find_pg_bindir(max(MATRIX_MAJORS)) == other
    assert find_pg_bindir(DEFAULT_MAJOR) == default  # never another major's
    monkeypatch.setenv("WALVAULT_PG_BINDIR", "/nonexistent")
    with pytest.raises(HarnessError, match="does not contain a working 'postgres'"):
        find_pg_bindir()
