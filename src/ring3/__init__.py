"""ring3: a web server for Python that pays the least possible toll at the user/kernel boundary."""

# First: with RING3_PURE set, it makes every later ring3 import come from the .py files (ring3.compiled).
import ring3._pure  # noqa: F401
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
