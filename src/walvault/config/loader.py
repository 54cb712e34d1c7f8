"""Loading the INI configuration: file search, [walvault]/[barman] global section, server sections.

Every server section becomes a :class:`ServerConfig`. Problems are reported, never hidden:
unknown options are warnings naming file, section and option; invalid values and other fatal
problems disable only the server concerned, with every reason kept in ``messages``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from walvault.config.ini import IniError, read_ini
from walvault.config.options import (
    BARMAN_ONLY,
    CLOUD_XLOGDB_DIRECTORY,
    DIRECTORY_OPTIONS,
    GLOBAL_ALIASES,
    GLOBAL_ONLY,
    OPTIONS,
    OPTIONS_BY_NAME,
    STORAGE_OPTIONS,
)
from walvault.config.parsers import is_store_url, parse_abs_path, parse_bool, parse_user_list
from walvault.config.server import ServerConfig
from walvault.conninfo import mask_conninfo, parse_conninfo
from walvault.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DEFAULT_LOCATIONS = ("~/.walvault.conf", "/etc/walvault.conf", "/etc/walvault/walvault.conf")
#: Barman's own search order, tried after walvault's: where Barman works without ``-c``
#: (``barman-wal-archive``/``barman-wal-restore`` calling ``barman put-wal``/``get-wal`` on a
#: host where ``barman`` runs walvault), walvault does too.
BARMAN_LOCATIONS = ("~/.barman.conf", "/etc/barman.conf", "/etc/barman/barman.conf")
ENV_VAR = "WALVAULT_CONFIG_FILE"
DEFAULT_RESTORE_SOCKET = "/run/walvault/restore.sock"
GLOBAL_SECTIONS = ("walvault", "barman")
DEFAULT_LOG_FORMAT = "%(asctime)s [%(process)s] %(name)s %(levelname)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NAME_OTHERS = _NAME_FIRST | frozenset("._-")


class Config(NamedTuple):
    """The whole configuration: global settings and the servers, by name."""

    path: str
    walvault_home: str
    walvault_user: str | None
    lock_directory: str
    log_file: str | None
    log_level: str
    log_format: str
    lock_directory_cleanup: bool
    servers: Mapping[str, ServerConfig]
    warnings: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    #: the restore service's socket (README "Two OS users")
    restore_socket: str = DEFAULT_RESTORE_SOCKET
    #: OS users the restore service answers, besides walvault_user itself
    restore_users: tuple[str, ...] = ()


def find_config_file(explicit: str | None) -> str:
    """Pick the configuration file: ``-c``, then ``$WALVAULT_CONFIG_FILE``, then walvault's
    default locations, then Barman's (:data:`BARMAN_LOCATIONS`)."""
    if explicit:
        if not os.path.isfile(explicit):
            raise ConfigError(f"configuration file '{explicit}' does not exist or is not a file")
        return explicit
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        if not os.path.isfile(from_env):
            raise ConfigError(f"configuration file '{from_env}' (from ${ENV_VAR}) does not exist")
        return from_env
    for candidate in DEFAULT_LOCATIONS + BARMAN_LOCATIONS:
        path = os.path.expanduser(candidate)
        if os.path.isfile(path):
            return path
    raise ConfigError(
        "could not find a configuration file: use -c FILE, set $"
        + ENV_VAR
        + ", or create one of "
        + ", ".join(DEFAULT_LOCATIONS + BARMAN_LOCATIONS)
    )


def is_server_name(name: str) -> bool:
    """ASCII letters, digits, ``.``, ``_`` and ``-``, at most 64, first a letter or a digit."""
    return (
        0 < len(name) <= 64
        and name[0] in _NAME_FIRST
        and all(char in _NAME_OTHERS for char in name)
    )


def _read_file(path: str) -> dict[str, dict[str, str]]:
    try:
        return read_ini(path)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file '{path}': {exc.strerror}") from None
    except (IniError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"cannot parse configuration file '{path}': {first}") from None


def _strip_quotes(value: str) -> str:
    """The text between a leading quote and the same quote at the end, else ``value``.

    That end may be followed by one newline (the end as the regular expression ``$`` sees it;
    the loader strips values first, so in practice the quote ends the value).
    """
    if len(value) >= 2 and value[0] in "'\"":
        if value[-1] == value[0]:
            return value[1:-1]
        if len(value) >= 3 and value[-1] == "\n" and value[-2] == value[0]:
            return value[1:-2]
    return value


def _unquote(raw: str) -> str | None:
    """Barman's rules: matching quotes are removed; an empty value or ``None`` means None."""
    value = _strip_quotes(raw.strip())
    if value == "" or value == "None":
        return None
    return value


def _reference_at(text: str, index: int) -> tuple[str, int] | None:
    """At ``text[index] == "%"``: the key of the ``%(key)s`` starting there and the index
    after it, or None.  The key is everything up to the first ``)`` (newlines included),
    at least one character, and the ``)`` must be followed by ``s``."""
    if text[index + 1 : index + 2] != "(":
        return None
    close = text.find(")", index + 2)
    if close <= index + 2 or text[close + 1 : close + 2] != "s":
        return None
    return text[index + 2 : close], close + 2


class _Interpolator:
    """``%(key)s`` expansion against resolved values, then the section, then the global section."""

    def __init__(self, *sources: Mapping[str, str | None]) -> None:
        self.sources = sources

    def expand(self, text: str, depth: int = 0) -> str:
        if depth > 10:
            raise ValueError("interpolation is too deeply nested (a loop?)")
        percent = text.find("%")
        if percent < 0:
            return text
        parts: list[str] = []
        start = 0
        while percent >= 0:  # left to right: the first problem is the one reported
            parts.append(text[start:percent])
            reference = _reference_at(text, percent)
            if reference is not None:
                key, start = reference
                parts.append(self._lookup(key.lower(), depth))
            elif text[percent + 1 : percent + 2] == "%":
                parts.append("%")
                start = percent + 2
            else:
                raise ValueError("a lone '%' must be written '%%'")
            percent = text.find("%", start)
        parts.append(text[start:])
        return "".join(parts)

    def _lookup(self, key: str, depth: int) -> str:
        for source in self.sources:
            if key in source and source[key] is not None:
                return self.expand(str(source[key]), depth + 1)
        raise ValueError(f"'%({key})s' refers to an option that is not set")


def _template_keys(template: str) -> list[str]:
    """The keys of every ``%(key)s`` in ``template``, as written (``%%`` is not special here)."""
    keys: list[str] = []
    percent = template.find("%")
    while percent >= 0:
        reference = _reference_at(template, percent)
        if reference is None:
            percent = template.find("%", percent + 1)
        else:
            keys.append(reference[0])
            percent = template.find("%", reference[1])
    return keys


def _refers_to_unset(template: str, resolved: Mapping[str, str | None]) -> bool:
    """True when a default template names an option that resolved to nothing."""
    return any(resolved.get(key) is None for key in _template_keys(template))


def _conf_files(conf_dir: str) -> list[str]:
    """The ``*.conf`` entries of ``conf_dir``, sorted: what ``glob.glob`` listed for
    ``os.path.join(conf_dir, "*.conf")`` (hidden names excluded, an unreadable directory
    listing nothing, the same path spelling), except that ``conf_dir`` is taken literally
    even if it holds ``*``, ``?`` or ``[``."""
    directory = os.path.dirname(os.path.join(conf_dir, "*.conf"))
    try:
        names = os.listdir(directory or os.curdir)
    except OSError:
        return []
    return sorted(
        os.path.join(directory, name)
        for name in names
        if name.endswith(".conf") and not name.startswith(".")
    )


def _display(value: Any) -> str:
    if type(value) is tuple:  # a list option; not a NamedTuple such as RetentionPolicy
        return ",".join(str(item) for item in value)
    return str(value)


def _merge_sections(paths: list[str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    merged: dict[str, dict[str, str]] = {}
    origin: dict[str, str] = {}
    for index, path in enumerate(paths):
        for section, values in _read_file(path).items():
            if index > 0 and section in GLOBAL_SECTIONS and values:
                raise ConfigError(
                    f"'{path}' (from configuration_files_directory) must not contain a "
                    f"[{section}] section with options"
                )
            merged.setdefault(section, {}).update(values)
            origin.setdefault(section, path)
    return merged, origin


def load_config(path: str, *, check_conninfo: bool = True) -> Config:
    """Load ``path`` and everything it includes; raise :class:`ConfigError` if unusable.

    ``check_conninfo=False`` skips parsing connection strings (which needs libpq through
    psycopg, ~80 ms to import): for commands that only read the archive (get-wal, the
    restore client).  Secret options are then shown as ``*****`` and a malformed
    conninfo does not disable the server.
    """
    first = _read_file(path)
    global_raw: dict[str, str] = {}
    for name in reversed(GLOBAL_SECTIONS):  # [walvault] wins over [barman]
        global_raw.update(first.get(name, {}))
    if not any(name in first for name in GLOBAL_SECTIONS):
        raise ConfigError(f"'{path}' has no [walvault] section (or Barman's [barman])")
    warnings: list[str] = []
    glob_values: dict[str, str | None] = {}
    for key, raw in global_raw.items():
        canonical = GLOBAL_ALIASES.get(key, key)
        if canonical not in GLOBAL_ONLY and canonical not in OPTIONS_BY_NAME:
            if canonical not in BARMAN_ONLY:
                warnings.append(
                    f'Invalid configuration option "{key}" in the global section of '
                    f"'{path}': ignored"
                )
            continue
        if canonical in glob_values and key != canonical:
            continue  # the walvault spelling wins over Barman's alias
        glob_values[canonical] = _unquote(raw)

    expander = _Interpolator(glob_values)
    try:
        home = glob_values.get("walvault_home")
        if not home:
            raise ConfigError(
                f"parameter 'walvault_home' (or Barman's 'barman_home') is required in the "
                f"[walvault] section of '{path}'"
            )
        home = parse_abs_path(os.path.expanduser(expander.expand(home)))
        lock_dir_raw = glob_values.get("walvault_lock_directory")
        lock_dir = parse_abs_path(expander.expand(lock_dir_raw)) if lock_dir_raw else home
        log_file_raw = glob_values.get("log_file")
        log_file = parse_abs_path(expander.expand(log_file_raw)) if log_file_raw else None
        log_level = (glob_values.get("log_level") or "INFO").upper()
        if log_level not in LOG_LEVELS:
            raise ValueError(f"log_level '{log_level}': accepted: " + ", ".join(LOG_LEVELS))
        cleanup_raw = glob_values.get("lock_directory_cleanup")
        cleanup = parse_bool(cleanup_raw) if cleanup_raw else True
        conf_dir = glob_values.get("configuration_files_directory")
        socket_raw = glob_values.get("restore_socket")
        restore_socket = (
            parse_abs_path(expander.expand(socket_raw)) if socket_raw else DEFAULT_RESTORE_SOCKET
        )
        restore_users = parse_user_list(glob_values.get("restore_users") or "")
    except ValueError as exc:
        raise ConfigError(f"invalid global setting in '{path}': {exc}") from None

    files = [path]
    if conf_dir:
        conf_dir = os.path.expanduser(expander.expand(conf_dir))
        if not os.path.isdir(conf_dir):
            raise ConfigError(f"configuration_files_directory '{conf_dir}' is not a directory")
        files += _conf_files(conf_dir)
    sections, origin = _merge_sections(files)

    global_for_servers = {k: v for k, v in glob_values.items() if k in OPTIONS_BY_NAME}
    servers: dict[str, ServerConfig] = {}
    for section, raw_values in sections.items():
        if section in GLOBAL_SECTIONS:
            continue
        if section == "all" or not is_server_name(section):
            raise ConfigError(
                f"invalid server name [{section}] in '{origin[section]}': accepted: letters, "
                "digits, '.', '_' and '-' (at most 64, not starting with '.', '_' or '-'), "
                "and not 'all'"
            )
        values = {k: _unquote(v) for k, v in raw_values.items()}
        if str(values.get("model") or "").lower() in ("true", "on", "yes", "1"):
            warnings.append(
                f"configuration model [{section}] in '{origin[section]}' ignored: walvault "
                "does not support configuration models"
            )
            continue
        servers[section] = _build_server(
            section,
            origin[section],
            values,
            global_for_servers,
            home,
            lock_dir,
            warnings,
            check_conninfo,
        )
    servers = _check_cross_server_paths(servers)
    return Config(
        path=path,
        walvault_home=home,
        walvault_user=glob_values.get("walvault_user"),
        lock_directory=lock_dir,
        log_file=log_file,
        log_level=log_level,
        log_format=glob_values.get("log_format") or DEFAULT_LOG_FORMAT,
        lock_directory_cleanup=cleanup,
        servers=dict(sorted(servers.items())),
        warnings=tuple(warnings),
        files=tuple(files),
        restore_socket=restore_socket,
        restore_users=restore_users,
    )


def _build_server(
    name: str,
    source: str,
    values: dict[str, str | None],
    global_values: dict[str, str | None],
    home: str,
    lock_dir: str,
    warnings: list[str],
    check_conninfo: bool = True,
) -> ServerConfig:
    messages: list[str] = []
    for key in values:
        if key not in OPTIONS_BY_NAME and key not in BARMAN_ONLY:
            warnings.append(
                f"Invalid configuration option \"{key}\" in [{name}] section of '{source}': ignored"
            )
    resolved: dict[str, str | None] = {"name": name, "walvault_home": home, "barman_home": home}
    typed: dict[str, Any] = {}
    shown: list[tuple[str, str]] = []
    expander = _Interpolator(resolved, values, global_values)
    for option in OPTIONS:
        if option.name in values:
            raw = values[option.name]
        elif option.global_ok and option.name in global_values:
            raw = global_values[option.name]
        else:
            raw = None
        if raw is None:  # None stops inheritance: back to the default
            raw = option.default
            if option.name == "xlogdb_directory" and is_store_url(resolved["wals_directory"] or ""):
                raw = CLOUD_XLOGDB_DIRECTORY
            if raw is not None and _refers_to_unset(raw, resolved):
                raw = None  # e.g. streaming_conninfo when conninfo itself is missing
        if raw is None:
            resolved[option.name] = None
            typed[option.name] = None
            shown.append((option.name, "None"))
            continue
        try:
            text = expander.expand(raw)
            value = option.parser(text) if option.parser else text
        except ValueError as exc:
            shown_raw = "*****" if option.secret or option.hidden else raw
            messages.append(
                f"invalid value '{shown_raw}' for option '{option.name}' in [{name}] "
                f"('{source}'): {exc}"
            )
            resolved[option.name] = None
            typed[option.name] = None
            shown.append((option.name, "<invalid>"))
            continue
        resolved[option.name] = text
        typed[option.name] = value
        if option.hidden:
            shown.append((option.name, "*****"))
        elif option.secret:
            shown.append((option.name, mask_conninfo(text) if check_conninfo else "*****"))
        else:
            shown.append((option.name, _display(value)))

    messages += _server_problems(name, typed, warnings, check_conninfo)
    fields = set(ServerConfig._fields)
    kwargs = {k: v for k, v in typed.items() if k in fields and v is not None}
    kwargs["storage_options"] = tuple(
        (k, v) for k, v in typed.items() if k in STORAGE_OPTIONS and v is not None
    )
    if not typed.get("streaming_archiver") and not typed.get("archiver"):
        kwargs["archiver"] = True
        shown = [(k, "True" if k == "archiver" else v) for k, v in shown]
    return ServerConfig(
        name=name,
        walvault_home=home,
        lock_directory=lock_dir,
        config_file=source,
        messages=tuple(messages),
        shown=tuple(sorted(shown)),
        **kwargs,
    )


def _server_problems(
    name: str, typed: dict[str, Any], warnings: list[str], check_conninfo: bool = True
) -> list[str]:
    messages: list[str] = []
    if not typed.get("conninfo"):
        messages.append(f"PostgreSQL connection: Missing 'conninfo' parameter for server '{name}'")
    for key in ("conninfo", "streaming_conninfo", "wal_streaming_conninfo", "wal_conninfo"):
        if check_conninfo and typed.get(key):
            try:
                parse_conninfo(typed[key])
            except ValueError as exc:
                messages.append(f"'{key}' of server '{name}': {exc}")
    if typed.get("streaming_archiver") and not typed.get("archiver") and not typed.get("slot_name"):
        messages.append(
            "Streaming-only archiver requires 'streaming_conninfo' and 'slot_name' options "
            "to be properly configured"
        )
    if not typed.get("streaming_archiver") and not typed.get("archiver"):
        warnings.append(
            f"No archiver enabled for server '{name}'. Please turn on 'archiver', "
            "'streaming_archiver' or both. Forcing 'archiver = on'"
        )
    if typed.get("encryption") == "gpg" and not typed.get("encryption_key_id"):
        messages.append(
            f"encryption = gpg for server '{name}' needs encryption_key_id: the GnuPG key "
            "(fingerprint, key ID or e-mail) archive-wal encrypts WAL to"
        )
    seen: dict[str, str] = {}
    for option in DIRECTORY_OPTIONS:
        path = typed.get(option)
        if not path:
            continue
        real = path if is_store_url(path) else os.path.realpath(path)
        if is_store_url(path) and {option, seen.get(real)} == _SHARED_STORE_OPTIONS:
            continue  # barman-cloud's layout: <PATH>/<server>/wals and <PATH>/<server>/base
        if real in seen:
            messages.append(
                f"Conflicting path: {option}={path} conflicts with '{seen[real]}' "
                f"for server '{name}'"
            )
        else:
            seen[real] = option
    return messages


#: the options that may name one object-store location (their keys differ below it)
_SHARED_STORE_OPTIONS = {"wals_directory", "basebackups_directory"}


def _check_cross_server_paths(servers: dict[str, ServerConfig]) -> dict[str, ServerConfig]:
    owners: dict[str, tuple[str, str]] = {}
    extra: dict[str, list[str]] = {}
    for server in servers.values():
        for option in DIRECTORY_OPTIONS:
            path = getattr(server, option)
            if not path:
                continue
            real = path if is_store_url(path) else os.path.realpath(path)
            if real in owners and owners[real][0] != server.name:
                other, other_option = owners[real]
                text = (
                    f"Conflicting path: {option}={path} of server '{server.name}' is also "
                    f"{other_option} of server '{other}'"
                )
                extra.setdefault(server.name, []).append(text)
                extra.setdefault(other, []).append(text)
            else:
                owners.setdefault(real, (server.name, option))
    return {
        name: server._replace(messages=server.messages + tuple(extra[name]))
        if name in extra
        else server
        for name, server in servers.items()
    }


def archivable_servers(path: str) -> set[str]:
    """The active servers that nothing but their connection strings (libpq cannot parse
    them) would disable: the configuration read without parsing conninfo.

    archive-wal never connects, so such a server's WAL can still be archived: streamed WAL
    must not pile up in ``streaming/`` because of a typo in a conninfo.  (An inactive server
    is not archived by cron anyway.)
    """
    from walvault.errors import ConfigError

    try:
        servers = load_config(path, check_conninfo=False).servers
    except ConfigError:
        return set()
    return {name for name, server in servers.items() if server.active and not server.disabled}
