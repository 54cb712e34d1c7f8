"""Configuration loading: Barman compatibility, defaults, interpolation and validation."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from walvault.config import find_config_file, load_config
from walvault.config.loader import BARMAN_LOCATIONS, DEFAULT_LOCATIONS
from walvault.config.parsers import RetentionPolicy
from walvault.errors import ConfigError


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_defaults_and_interpolation(tmp_path: Path, home: Path) -> None:
    conf = write(
        tmp_path / "w.conf",
        f"""
        [walvault]
        walvault_home = {home}

        [pg]
        conninfo = host=127.0.0.1 user=walvault dbname=postgres
        streaming_archiver = on
        slot_name = walvault
        """,
    )
    server = load_config(conf).servers["pg"]
    assert server.backup_directory == f"{home}/pg"
    assert server.wals_directory == f"{home}/pg/wals"
    assert server.basebackups_directory == f"{home}/pg/base"
    assert server.incoming_wals_directory == f"{home}/pg/incoming"
    assert server.streaming_wals_directory == f"{home}/pg/streaming"
    assert server.errors_directory == f"{home}/pg/errors"
    assert server.xlogdb_directory == f"{home}/pg/wals"
    assert server.xlogdb_path == f"{home}/pg/wals/pg-xlog.db"
    assert server.streaming_conninfo == server.conninfo
    assert server.streaming_archiver_name == "walvault_receive_wal"
    assert server.streaming_backup_name == "walvault_streaming_backup"
    assert server.create_slot == "manual"
    assert server.compression is None
    assert server.compression_level == "medium"
    assert server.check_timeout == 30
    assert server.minimum_redundancy == 0
    assert server.parallel_jobs == 1
    assert server.archiver is False
    assert server.active is True
    assert not server.disabled


def test_user_interpolation_and_section_references(tmp_path: Path, home: Path) -> None:
    conf = write(
        tmp_path / "w.conf",
        f"""
        [walvault]
        walvault_home = {home}
        archiver = on

        [pg]
        conninfo = host=127.0.0.1 user=walvault
        backup_directory = /srv/backups/%(name)s
        wals_directory = %(backup_directory)s/wal_archive
        description = 100%% of %(name)s
        """,
    )
    server = load_config(conf).servers["pg"]
    assert server.backup_directory == "/srv/backups/pg"
    assert server.wals_directory == "/srv/backups/pg/wal_archive"
    assert server.xlogdb_directory == "/srv/backups/pg/wal_archive"
    assert server.description == "100% of pg"
    assert server.archiver is True  # inherited from the global section


def test_barman_file_works_unchanged(tmp_path: Path) -> None:
    barman_home = tmp_path / "barman"
    conf = write(
        tmp_path / "barman.conf",
        f"""
        [barman]
        barman_home = {barman_home}
        barman_lock_directory = {tmp_path}/locks
        log_file = {tmp_path}/barman.log
        log_level = INFO
        compression = gzip
        immediate_checkpoint = true
        backup_options = concurrent_backup

        [pg]
        description =  "PostgreSQL Database"
        conninfo = host=pg user=barman dbname=postgres
        streaming_conninfo = host=pg user=streaming_barman
        backup_method = postgres
        streaming_archiver = on
        slot_name = barman
        create_slot = auto
        path_prefix = "/usr/lib/postgresql/15/bin"
        streaming_archiver_name = barman_receive_wal
        """,
    )
    config = load_config(conf)
    assert config.warnings == ()
    assert config.walvault_home == str(barman_home)
    assert config.lock_directory == f"{tmp_path}/locks"
    assert config.log_file == f"{tmp_path}/barman.log"
    server = config.servers["pg"]
    assert not server.disabled, server.messages
    assert server.description == "PostgreSQL Database"
    assert server.compression == "gzip"
    assert server.create_slot == "auto"
    assert server.path_prefix == ("/usr/lib/postgresql/15/bin",)
    assert server.backup_directory == f"{barman_home}/pg"
    assert server.streaming_archiver_name == "barman_receive_wal"


def test_walvault_section_wins_over_barman_aliases(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "w.conf",
        f"""
        [walvault]
        walvault_home = {tmp_path}/wv
        [barman]
        barman_home = {tmp_path}/barman
        """,
    )
    assert load_config(conf).walvault_home == f"{tmp_path}/wv"


def test_configuration_files_directory_sorted(tmp_path: Path) -> None:
    confd = tmp_path / "conf.d"
    confd.mkdir()
    write(confd / "20-b.conf", "[b]\nconninfo = host=b\ndescription = second\n")
    write(confd / "10-a.conf", "[a]\nconninfo = host=a\n[b]\ndescription = first\n")
    write(confd / "ignored.txt", "[c]\nconninfo = host=c\n")
    conf = write(
        tmp_path / "w.conf",
        f"[walvault]\nwalvault_home = {tmp_path}/h\nconfiguration_files_directory = {confd}\n",
    )
    config = load_config(conf)
    assert list(config.servers) == ["a", "b"]
    assert config.servers["b"].description == "second"  # later files override earlier ones
    assert config.servers["b"].conninfo == "host=b"


def test_included_file_must_not_have_global_options(tmp_path: Path) -> None:
    confd = tmp_path / "conf.d"
    confd.mkdir()
    write(confd / "x.conf", "[walvault]\nwalvault_home = /elsewhere\n")
    conf = write(
        tmp_path / "w.conf",
        f"[walvault]\nwalvault_home = {tmp_path}\nconfiguration_files_directory = {confd}\n",
    )
    with pytest.raises(ConfigError, match="must not contain"):
        load_config(conf)


def test_unknown_options_warn_with_file_section_and_name(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "w.conf",
        f"""
        [walvault]
        walvault_home = {tmp_path}
        frobnicate = yes

        [pg]
        conninfo = host=x
        archiver = on
        bogus_opt = 1
        """,
    )
    config = load_config(conf)
    assert any('"frobnicate"' in w and conf in w for w in config.warnings)
    assert any('"bogus_opt"' in w and "[pg]" in w and conf in w for w in config.warnings)
    assert not config.servers["pg"].disabled


@pytest.mark.parametrize(
    ("option", "value", "accepted"),
    [
        ("streaming_archiver", "maybe", "accepted: on, off"),
        ("slot_name", "bad-slot", "lower case letters"),
        ("create_slot", "sometimes", "accepted: manual, auto"),
        ("compression", "snappy", "gzip"),
        ("compression_level", "extreme", "low, medium, high"),
        ("archiver_batch_size", "-1", "integer >= 0"),
        ("retention_policy", "KEEP 3", "REDUNDANCY n"),
        ("last_wal_maximum_age", "yesterday", "HOURS|DAYS"),
        ("backup_directory", "relative/path", "absolute path"),
        ("recovery_options", "get-wal,teleport", "get-wal, delta-restore"),
    ],
)
def test_invalid_value_disables_server_with_reason(
    tmp_path: Path, option: str, value: str, accepted: str
) -> None:
    conf = write(
        tmp_path / "w.conf",
        f"""
        [walvault]
        walvault_home = {tmp_path}
        [pg]
        conninfo = host=x
        archiver = on
        {option} = {value}
        [other]
        conninfo = host=y
        archiver = on
        """,
    )
    config = load_config(conf)
    server = config.servers["pg"]
    assert server.disabled
    (message,) = server.messages
    assert option in message and value in message and accepted in message
    assert not config.servers["other"].disabled  # other servers keep working


def test_disabled_server_lists_every_reason(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "w.conf",
        f"""
        [walvault]
        walvault_home = {tmp_path}
        [pg]
        streaming_archiver = on
        wals_directory = {tmp_path}/pg/same
        errors_directory = {tmp_path}/pg/same
        """,
    )
    messages = load_config(conf).servers["pg"].messages
    assert any("Missing 'conninfo'" in m for m in messages)
    assert any("Streaming-only archiver requires" in m for m in messages)
    assert any("Conflicting path" in m and "errors_directory" in m for m in messages)
    assert len(messages) == 3


def test_two_servers_sharing_a_directory(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "w.conf",
        f"""
        [walvault]
        walvault_home = {tmp_path}
        archiver = on
        [a]
        conninfo = host=a
        [b]
        conninfo = host=b
        incoming_wals_directory = {tmp_path}/a/incoming
        [c]
        conninfo = host=c
        """,
    )
    servers = load_config(conf).servers
    assert servers["a"].disabled and servers["b"].disabled
    assert "server 'a'" in servers["b"].messages[0]
    assert not servers["c"].disabled


def test_quoted_conninfo_values_and_uris(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "w.conf",
        f"""
        [walvault]
        walvault_home = {tmp_path}
        archiver = on
        [pg]
        conninfo = host=127.0.0.1 user=walvault password='my secret\\'s' application_name='a b'
        [uri]
        conninfo = postgresql://walvault:pw@127.0.0.1:5433/postgres?sslmode=disable
        [broken]
        conninfo = host=x password='unterminated
        """,
    )
    servers = load_config(conf).servers
    assert not servers["pg"].disabled
    assert not servers["uri"].disabled
    assert servers["broken"].disabled
    assert "unterminated" in servers["broken"].messages[0]
    assert "password=" not in servers["broken"].messages[0]
    shown = dict(servers["pg"].shown)
    assert "secret" not in shown["conninfo"] and "password=*****" in shown["conninfo"]
    assert "pw" not in dict(servers["uri"].shown)["conninfo"].replace("password", "")


def test_invalid_secret_value_is_not_echoed(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "w.conf",
        f"""
        [walvault]
        walvault_home = {tmp_path}
        archiver = on
        [pg]
        conninfo = host=x password=hunter2 %(nowhere)s
        """,
    )
    server = load_config(conf).servers["pg"]
    assert server.disabled
    assert "hunter2" not in " ".join(server.messages)


def test_no_archiver_forces_archiver_on_with_warning(tmp_path: Path) -> None:
    conf = write(tmp_path / "w.conf", f"[walvault]\nwalvault_home = {tmp_path}\n[pg]\nconninfo=h\n")
    config = load_config(conf)
    assert config.servers["pg"].archiver is True
    assert any("Forcing 'archiver = on'" in w for w in config.warnings)


def test_none_stops_inheritance(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "w.conf",
        f"""
        [walvault]
        walvault_home = {tmp_path}
        compression = gzip
        archiver = on
        [pg]
        conninfo = host=x
        compression = None
        [inherits]
        conninfo = host=y
        """,
    )
    servers = load_config(conf).servers
    assert servers["pg"].compression is None
    assert servers["inherits"].compression == "gzip"


def test_aliases_and_typed_values(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "w.conf",
        f"""
        [walvault]
        walvault_home = {tmp_path}
        [pg]
        conninfo = host=x
        archiver = yes
        compression = pygzip
        compression_level = 3
        retention_policy = RECOVERY WINDOW OF 2 WEEKS
        last_wal_maximum_age = 2 hours
        recovery_options = get-wal
        slot_name = WalVault_1
        """,
    )
    server = load_config(conf).servers["pg"]
    assert server.compression == "gzip"
    assert server.compression_level == 3
    assert server.retention_policy == RetentionPolicy("window", 2, "weeks")
    assert str(server.retention_policy) == "RECOVERY WINDOW OF 2 WEEKS"
    assert server.last_wal_maximum_age == 7200
    assert server.recovery_options == ("get-wal",)
    assert server.slot_name == "walvault_1"
    shown = dict(server.shown)  # what show-servers prints
    assert shown["retention_policy"] == "RECOVERY WINDOW OF 2 WEEKS"
    assert shown["recovery_options"] == "get-wal"


def test_missing_home_and_missing_global_section(tmp_path: Path) -> None:
    conf = write(tmp_path / "a.conf", "[walvault]\nlog_level = INFO\n")
    with pytest.raises(ConfigError, match="walvault_home"):
        load_config(conf)
    conf = write(tmp_path / "b.conf", "[pg]\nconninfo = x\n")
    with pytest.raises(ConfigError, match=r"no \[walvault\] section"):
        load_config(conf)


@pytest.mark.parametrize("name", ["all", "../etc", "_x", "a/b"])
def test_invalid_server_names(tmp_path: Path, name: str) -> None:
    conf = write(tmp_path / "w.conf", f"[walvault]\nwalvault_home = {tmp_path}\n[{name}]\n")
    with pytest.raises(ConfigError, match="invalid server name"):
        load_config(conf)


def test_models_are_skipped_with_a_warning(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "w.conf",
        f"[walvault]\nwalvault_home = {tmp_path}\n[m]\nmodel = true\ncluster = pg\n",
    )
    config = load_config(conf)
    assert "m" not in config.servers
    assert any("model" in w for w in config.warnings)


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write(tmp_path / "explicit.conf", "[walvault]\n")
    from_env = write(tmp_path / "env.conf", "[walvault]\n")
    user_home = tmp_path / "user"
    user_home.mkdir()
    in_home = write(user_home / ".walvault.conf", "[walvault]\n")
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.setenv("WALVAULT_CONFIG_FILE", from_env)
    assert find_config_file(explicit) == explicit
    assert find_config_file(None) == from_env
    monkeypatch.delenv("WALVAULT_CONFIG_FILE")
    assert find_config_file(None) == in_home
    os.unlink(in_home)
    system = [p for p in DEFAULT_LOCATIONS + BARMAN_LOCATIONS if not p.startswith("~")]
    if not any(os.path.exists(p) for p in system):
        with pytest.raises(ConfigError, match="could not find a configuration file") as missing:
            find_config_file(None)
        assert "/etc/barman/barman.conf" in str(missing.value)  # Barman's places are named
    with pytest.raises(ConfigError, match="does not exist"):
        find_config_file(str(tmp_path / "missing.conf"))


def test_barmans_locations_come_after_walvaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """walvault's own files first, then Barman's ~/.barman.conf, /etc/barman.conf,
    /etc/barman/barman.conf (the system paths are moved under tmp_path to test them)."""
    from walvault.config import loader

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("WALVAULT_CONFIG_FILE", raising=False)
    etc = tmp_path / "etc"
    (etc / "walvault").mkdir(parents=True)
    (etc / "barman").mkdir(parents=True)
    monkeypatch.setattr(
        loader,
        "DEFAULT_LOCATIONS",
        ("~/.walvault.conf", f"{etc}/walvault.conf", f"{etc}/walvault/walvault.conf"),
    )
    monkeypatch.setattr(
        loader,
        "BARMAN_LOCATIONS",
        ("~/.barman.conf", f"{etc}/barman.conf", f"{etc}/barman/barman.conf"),
    )
    order = [
        home / ".walvault.conf",
        etc / "walvault.conf",
        etc / "walvault" / "walvault.conf",
        home / ".barman.conf",
        etc / "barman.conf",
        etc / "barman" / "barman.conf",
    ]
    for path in order:
        write(path, "[barman]\n")
    for path in order:  # each one is found once every file before it is gone
        assert find_config_file(None) == str(path)
        path.unlink()
    with pytest.raises(ConfigError, match=r"barman\.conf"):
        find_config_file(None)


def test_unparsable_file(tmp_path: Path) -> None:
    conf = write(tmp_path / "w.conf", "this is not ini\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(conf)


def test_every_option_default_is_the_server_config_default() -> None:
    """One fact, one place: an option's default in the option table (config/options.py),
    parsed, is what a ServerConfig built without that option holds."""
    from walvault.config.options import OPTIONS
    from walvault.config.server import ServerConfig

    defaults = ServerConfig._field_defaults
    checked = 0
    for option in OPTIONS:
        if option.default is None or "%(" in option.default or option.name not in defaults:
            continue
        parsed = option.parser(option.default) if option.parser else option.default
        assert defaults[option.name] == parsed, option.name
        checked += 1
    assert checked >= 15
