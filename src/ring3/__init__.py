"""ring3: a web server for Python that pays the least possible toll at the user/kernel boundary."""

from ring3._version import __version__
from ring3.config import Config, ConfigError, build_config
from ring3.events import (
    FileRange,
    Request,
    RequestData,
    RequestEnded,
    RequestRejected,
    Response,
)
from ring3.server import Server, serve

__all__ = [
    "Config",
    "ConfigError",
    "FileRange",
    "Request",
    "RequestData",
    "RequestEnded",
    "RequestRejected",
    "Response",
    "Server",
    "__version__",
    "build_config",
    "serve",
]
