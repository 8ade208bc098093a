"""Configuration: one schema, loaded from TOML and the command line."""

from ring3.config.loader import (
    ConfigError,
    ListenAddress,
    build_config,
    load_toml,
    parse_listen,
    render_toml,
)
from ring3.config.schema import AppSection, Config, LimitsSection, ServerSection, StaticSection

__all__ = [
    "AppSection",
    "Config",
    "ConfigError",
    "LimitsSection",
    "ListenAddress",
    "ServerSection",
    "StaticSection",
    "build_config",
    "load_toml",
    "parse_listen",
    "render_toml",
]
