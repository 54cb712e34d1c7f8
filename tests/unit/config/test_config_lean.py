"""Loading the configuration stays cheap: the restore client loads it once per WAL segment.

``import walvault.config`` and ``load_config(path, check_conninfo=False)`` of a realistic
Barman-style configuration import none of typing, re, enum, configparser, glob ... (about
6-8 ms of start-up together).  And ``configuration_files_directory`` lists what glob listed.
"""

from __future__ import annotations

import ast
import glob
import os
import textwrap
from pathlib import Path

import pytest

from fakewal import python_stdout
from walvault.config import load_config
from walvault.config.loader import _conf_files
from walvault.config.parsers import RetentionPolicy

FORBIDDEN = {
    "typing",
    "re",
    "enum",
    "configparser",
    "glob",
    "fnmatch",
    "dataclasses",
    "ast",
    "inspect",
    "string",
    "warnings",
    "contextlib",
    "functools",
    "psycopg",
}


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def realistic(tmp_path: Path) -> Path:
    confd = tmp_path / "barman.d"
    confd.mkdir()
    write(
        confd / "pg.conf",
        """
        [pg]
        ; the main cluster
        description = "Main PostgreSQL Database"
        conninfo = host=pg.example.com user=barman dbname=postgres password='s3cr3t x'
        streaming_conninfo = host=pg.example.com user=streaming_barman password=s3cr3t
        backup_method = postgres
        streaming_archiver = on
        slot_name = Barman_PG
        create_slot = auto
        backup_directory = %(barman_home)s/clusters/%(name)s
        wals_directory = %(backup_directory)s/wal
        retention_policy = RECOVERY WINDOW OF 4 WEEKS
        last_backup_maximum_age = 1 DAY
        last_wal_maximum_age = 2 hours
        """,
    )
    write(
        confd / "reporting.conf",
        """
        # second server
        [reporting]
        description = '100%% of %(name)s'
        conninfo = host=reporting user=barman dbname=postgres
        archiver = on
        compression = zstd
        retention_policy = REDUNDANCY 3
        minimum_redundancy = 2
        """,
    )
    (confd / "notes.txt").write_text("[ignored]\n")
    (confd / ".hidden.conf").write_text("[hidden]\nconninfo = host=h\n")
    return write(
        tmp_path / "barman.conf",
        f"""
        ; Barman's own file, unchanged
        [barman]
        barman_user = barman
        barman_home = {tmp_path}/home
        log_file = {tmp_path}/log/barman.log
        log_level = INFO
        configuration_files_directory = {confd}
        compression = gzip
        wal_retention_policy = main
        minimum_redundancy = 1
        path_prefix = "/usr/lib/postgresql/16/bin:/usr/lib/postgresql/15/bin"
        backup_options = concurrent_backup
        """,
    )


def test_loading_a_realistic_configuration_imports_nothing_heavy(tmp_path: Path) -> None:
    conf = realistic(tmp_path)
    code = (
        "import sys\n"
        "import walvault.config\n"
        f"config = walvault.config.load_config({str(conf)!r}, check_conninfo=False)\n"
        "print(repr(sorted(sys.modules)))\n"
        "print(repr(config))\n"
    )
    modules_line, config_line = python_stdout(code).splitlines()
    modules = set(ast.literal_eval(modules_line))
    assert "walvault.config.loader" in modules
    assert not modules & FORBIDDEN, sorted(modules & FORBIDDEN)

    config = load_config(str(conf), check_conninfo=False)
    assert config_line == repr(config)  # the subprocess resolved the same configuration
    home = f"{tmp_path}/home"
    assert config.walvault_home == home
    assert config.walvault_user == "barman"
    assert config.lock_directory == home
    assert config.log_file == f"{tmp_path}/log/barman.log"
    assert config.files == (
        str(conf),
        f"{tmp_path}/barman.d/pg.conf",
        f"{tmp_path}/barman.d/reporting.conf",
    )
    assert config.warnings == ()
    assert list(config.servers) == ["pg", "reporting"]

    pg = config.servers["pg"]
    assert pg.messages == ()
    assert pg.description == "Main PostgreSQL Database"
    assert pg.conninfo == "host=pg.example.com user=barman dbname=postgres password='s3cr3t x'"
    assert pg.streaming_conninfo == "host=pg.example.com user=streaming_barman password=s3cr3t"
    assert pg.streaming_archiver is True and pg.archiver is False
    assert pg.slot_name == "barman_pg"
    assert pg.create_slot == "auto"
    assert pg.compression == "gzip"  # from the global section
    assert pg.retention_policy == RetentionPolicy("window", 4, "weeks")
    assert pg.wal_retention_policy == "main"
    assert pg.minimum_redundancy == 1
    assert pg.last_wal_maximum_age == 7200
    assert pg.path_prefix == ("/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")
    assert pg.backup_directory == f"{home}/clusters/pg"
    assert pg.wals_directory == f"{home}/clusters/pg/wal"
    assert pg.xlogdb_directory == f"{home}/clusters/pg/wal"
    assert pg.basebackups_directory == f"{home}/clusters/pg/base"
    assert pg.config_file == f"{tmp_path}/barman.d/pg.conf"
    shown = dict(pg.shown)
    assert shown["conninfo"] == shown["streaming_conninfo"] == "*****"
    assert shown["retention_policy"] == "RECOVERY WINDOW OF 4 WEEKS"

    reporting = config.servers["reporting"]
    assert reporting.messages == ()
    assert reporting.description == "100% of reporting"
    assert reporting.archiver is True and reporting.streaming_archiver is False
    assert reporting.streaming_conninfo == reporting.conninfo  # Barman's default
    assert reporting.compression == "zstd"
    assert reporting.retention_policy == RetentionPolicy("redundancy", 3)
    assert reporting.minimum_redundancy == 2
    assert reporting.backup_directory == f"{home}/reporting"


# ------------------------------------------------------------------ configuration_files_directory


def test_conf_files_lists_what_glob_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    confd = tmp_path / "conf.d"
    confd.mkdir()
    listed = ["b.conf", "a.conf", "A.conf", "z z.conf", "-.conf", "new\nline.conf"]
    unlisted = [".conf", ".hidden.conf", "..conf", "x.conf.bak", "x.CONF", "conf", "tail.conf\n"]
    for name in listed + unlisted:
        (confd / name).write_text("[x]\n")
    (confd / "dir.conf").mkdir()  # glob lists directories and dangling links too
    (confd / "dangling.conf").symlink_to(tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    for spelling in [str(confd), f"{confd}/", f"{confd}//", "conf.d", "conf.d/", "./conf.d"]:
        expected = sorted(glob.glob(os.path.join(spelling, "*.conf")))
        assert _conf_files(spelling) == expected, spelling
    monkeypatch.chdir(confd)
    assert _conf_files(".") == sorted(glob.glob(os.path.join(".", "*.conf")))
    assert _conf_files(str(tmp_path / "missing")) == []  # as glob: no error, no file


def test_conf_files_directory_is_taken_literally(tmp_path: Path) -> None:
    """The one difference from glob, deliberate: glob read a directory name holding ``*``,
    ``?`` or ``[`` as a pattern, so ``conf[1].d`` listed ``conf1.d``, not the directory the
    loader had just checked."""
    literal = tmp_path / "conf[1].d"
    literal.mkdir()
    (literal / "a.conf").write_text("[a]\n")
    decoy = tmp_path / "conf1.d"
    decoy.mkdir()
    (decoy / "decoy.conf").write_text("[decoy]\n")
    assert _conf_files(str(literal)) == [f"{literal}/a.conf"]
    assert glob.glob(os.path.join(str(literal), "*.conf")) == [f"{decoy}/decoy.conf"]
