"""Barman-compatible configuration: loading, validation and the typed server configuration."""

from walvault.config.loader import Config, archivable_servers, find_config_file, load_config
from walvault.config.server import ServerConfig

__all__ = ["Config", "ServerConfig", "archivable_servers", "find_config_file", "load_config"]
