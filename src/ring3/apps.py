"""From the config to what serves requests: import the application, tell ASGI from WSGI, and mount it
next to the static files.

The result is a Site: the handler the server calls for every request, plus the startup and shutdown
work around it (the ASGI lifespan, the WSGI thread pool).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ring3.config import Config, ConfigError
from ring3.config.loader import mount_prefix
from ring3.config.schema import AppSection
from ring3.events import Request, Response
from ring3.files.cache import FileCache
from ring3.handlers import BodyReader, Handler
from ring3.handlers.asgi import ASGIApp, ASGIHandler
from ring3.handlers.lifespan import Lifespan
from ring3.handlers.static import StaticHandler
from ring3.routing import MountRouter

if TYPE_CHECKING:
    from ring3.transport.tls_context import ServerTLS

Hook = Callable[[], Awaitable[None]]


class AppLoadError(ConfigError):
    """The application named by app.target cannot be imported or called."""

    def __init__(self, reason: str) -> None:
        super().__init__("app", "app.target", reason)


@dataclass
class Site:
    """What one worker serves: the handler, and the work before the first and after the last request."""

    handler: Handler
    description: str
    startup_hooks: list[Hook] = field(default_factory=list)
    shutdown_hooks: list[Callable[[float], Awaitable[None]]] = field(default_factory=list)
    # The body size the protocols must let through: a location's max_body_size may exceed [limits]'.
    max_body_size: int = 0

    async def startup(self) -> None:
        for hook in self.startup_hooks:
            await hook()

    async def shutdown(self, timeout: float) -> None:
        for hook in reversed(self.shutdown_hooks):
            await hook(timeout)


def load_app(settings: AppSection) -> Any:
    """Import `module:attribute` from app_dir (first on sys.path); call it if it is a factory."""
    module_name, _, attribute = settings.target.partition(":")
    app_dir = os.path.abspath(settings.app_dir)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(f"cannot import module {module_name!r} (from {app_dir}): {exc}") from exc
        raise  # the module exists but fails to import something: the traceback is the message
    app: Any = module
    for name in attribute.split("."):
        try:
            app = getattr(app, name)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if settings.factory:
        if not callable(app):
            raise AppLoadError(f"{settings.target} is not callable, so it cannot be a factory")
        try:
            app = app()
        except TypeError as exc:
            raise AppLoadError(f"calling the factory {settings.target}() failed: {exc}") from exc
    if not callable(app):
        raise AppLoadError(f"{settings.target} is not callable: it is not an ASGI or WSGI application")
    return app


def interface_of(app: Any, wanted: str) -> str:
    """'asgi' or 'wsgi': as configured, or (auto) ASGI when the app or its __call__ is a coroutine
    function."""
    if wanted != "auto":
        return wanted
    if inspect.iscoroutinefunction(app):
        return "asgi"
    if not inspect.isfunction(app) and inspect.iscoroutinefunction(type(app).__call__):
        return "asgi"
    return "wsgi"


def build_site(config: Config, demo_root: str, tls: ServerTLS | None = None, *,
               load_apps: bool = True, source: str = "config") -> Site:
    """The handler for `config`: its [[site]] tables, or else static files, an application, or both
    under their mounts. Without `load_apps` (check-config), applications are not imported."""
    if config.sites:
        return _build_sites(config, demo_root, tls, load_apps, source)
    return _single_site(config, demo_root, load_apps)


def _build_sites(config: Config, demo_root: str, tls: ServerTLS | None, load_apps: bool,
                 source: str) -> Site:
    from ring3.sites.build import Builder

    startup: list[Hook] = []
    shutdown: list[Callable[[float], Awaitable[None]]] = []
    apps: dict[str, Handler] = {}

    def app_for(target: str) -> Handler:
        handler = apps.get(target)
        if handler is None:
            settings = dataclasses.replace(config.app, target=target, mount="/")
            if not load_apps:
                return _not_loaded
            app = load_app(settings)
            kind = interface_of(app, settings.interface)
            handler = apps[target] = _app_handler(app, kind, dataclasses.replace(config, app=settings),
                                                  startup, shutdown)
        return handler

    legacy = None
    if config.static.root or config.app.target:
        claimed = next((n for n, site in enumerate(config.sites, 1) if "*" in site.hosts), None)
        if claimed is not None:
            raise ConfigError(source, f"site[{claimed}].hosts", "'*' claims the default site, which the "
                              "command line's ROOT or --app (or [static] root, [app] target) describe too; "
                              "keep one")
        legacy = _single_site(config, demo_root, load_apps)
        startup += legacy.startup_hooks
        shutdown += legacy.shutdown_hooks
    builder = Builder(config, source, app_for)
    router = builder.router(config.sites, legacy.handler if legacy else None, tls)

    async def close_logs(timeout: float) -> None:
        for log in builder.logs:
            log.close()

    shutdown.insert(0, close_logs)
    if builder.proxies:
        async def start_proxies() -> None:
            for proxy in builder.proxies:
                proxy.start()

        async def close_proxies(timeout: float) -> None:
            for proxy in builder.proxies:
                proxy.close()

        startup.append(start_proxies)
        shutdown.insert(0, close_proxies)
    count = len(router.sites)
    described = f"{count} site{'s' if count != 1 else ''}"
    if apps:
        described += f", applications {', '.join(apps)}"
    return Site(router, described, startup, shutdown, builder.max_body_size)


def wrap_app(handler: Handler, config: Config, *, compress: bool | None = None,
             request_encodings: tuple[str, ...] | None = None, max_body_size: int | None = None) -> Handler:
    """An application's handler with what its location (or [app]) asks around it: its responses compressed
    as they stream, and request bodies in a Content-Encoding refused with 415 or decoded."""
    settings = config.app
    if settings.compress if compress is None else compress:
        from ring3.handlers.compressing import CompressingHandler

        levels = {"gzip": settings.stream_gzip_level, "br": settings.stream_brotli_quality,
                  "zstd": settings.stream_zstd_level}
        static = config.static
        handler = CompressingHandler(handler, encodings=static.compress_encodings, levels=levels,
                                     min_size=static.compress_min_size, types=static.compress_types,
                                     event_stream=settings.compress_event_stream)
    from ring3.handlers.request_encoding import RequestEncodingRule

    allowed = settings.request_encodings if request_encodings is None else request_encodings
    limit = config.limits.max_body_size if max_body_size is None else max_body_size
    return RequestEncodingRule(handler, allowed=allowed, max_body_size=limit)


def _not_loaded(request: Request, body: BodyReader) -> Response:
    raise RuntimeError("check-config does not import applications")


def _single_site(config: Config, demo_root: str, load_apps: bool = True) -> Site:
    static, app_settings = config.static, config.app
    mounts: list[tuple[str, Handler]] = []
    startup: list[Hook] = []
    shutdown: list[Callable[[float], Awaitable[None]]] = []
    described: list[str] = []
    if app_settings.target and not load_apps:
        mounts.append((app_settings.mount, _not_loaded))
        described.append(f"application {app_settings.target} at {app_settings.mount}")
    elif app_settings.target:
        app = load_app(app_settings)
        kind = interface_of(app, app_settings.interface)
        handler = wrap_app(_app_handler(app, kind, config, startup, shutdown), config)
        mounts.append((app_settings.mount, handler))
        described.append(f"{kind.upper()} application {app_settings.target} at {app_settings.mount}")
    if static.root or not app_settings.target:
        root = static.root or demo_root
        files = StaticHandler(static, root)
        mounts.append((static.mount, files))
        what = "files from" if static.root else "the built-in demo site from"
        described.append(f"{what} {files.root} at {static.mount}")
    if len(mounts) == 1 and not mount_prefix(mounts[0][0]):
        top: Handler = mounts[0][1]
    else:
        top = MountRouter(mounts)
    return Site(top, "; ".join(described), startup, shutdown)


def _app_handler(app: Any, kind: str, config: Config, startup: list[Hook],
                 shutdown: list[Callable[[float], Awaitable[None]]]) -> Handler:
    settings = config.app
    if kind == "wsgi":
        from ring3.handlers.wsgi import WSGIHandler

        wsgi = WSGIHandler(app, settings)
        startup.append(wsgi.startup)
        shutdown.append(lambda timeout: wsgi.shutdown())
        return wsgi
    asgi_app: ASGIApp = app
    static = config.static
    files = None
    if static.cache_max_bytes or static.open_files_max:
        files = FileCache(max_bytes=static.cache_max_bytes, max_file_size=static.cache_max_file_size,
                          max_open=static.open_files_max, recheck=static.cache_recheck)
    handler = ASGIHandler(asgi_app, settings, files)
    _attach_websocket(handler, asgi_app, settings)
    lifespan = Lifespan(asgi_app, settings.lifespan)

    async def start() -> None:
        handler.state = await lifespan.startup()

    async def stop(timeout: float) -> None:
        running = set(handler.running)
        if handler.websocket is not None:
            running |= handler.websocket.running
        if running:
            await asyncio.wait(running, timeout=timeout)
        await lifespan.shutdown(timeout)

    startup.append(start)
    shutdown.append(stop)
    return handler


def _attach_websocket(handler: ASGIHandler, app: ASGIApp, settings: AppSection) -> None:
    from ring3.websocket.asgi import WebSocketEndpoint

    handler.websocket = WebSocketEndpoint(app, settings)
