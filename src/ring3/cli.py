"""The command line, generated from the config schema: every key has a flag."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import typing
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from ring3._version import __version__
from ring3.config import Config, ConfigError, build_config, load_toml, render_toml
from ring3.config.loader import worker_count
from ring3.config.schema import SECTIONS, flag_name

if TYPE_CHECKING:
    from ring3.apps import Site
    from ring3.transport.tls_context import ServerTLS

EXIT_CONFIG = 2
EXIT_APP_STARTUP = 3


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for section_name, section_cls in SECTIONS.items():
        group = parser.add_argument_group(f"[{section_name}] settings")
        types = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            meta = dict(f.metadata)
            dest = f"cfg__{section_name}__{f.name}"
            help_text = f"{meta['doc']} (default: {_default_text(f.default)})"
            type_ = types[f.name]
            flag = flag_name(f.name, meta)
            if type_ is bool:
                group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                                   default=None, help=help_text)
            elif typing.get_origin(type_) is tuple:
                group.add_argument(flag, dest=dest, action="append", default=None,
                                   metavar="VALUE", help=help_text + "; repeatable")
            else:
                group.add_argument(flag, dest=dest, default=None, metavar="VALUE", help=help_text)


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(value) or "none"
    return repr(value) if isinstance(value, str) else str(value)


class _VersionAction(argparse.Action):
    """--version: the build is looked up only when asked (it finds the hot-path modules' files)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        from ring3 import compiled

        print(f"ring3 {__version__} ({compiled.describe()})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ring3", description="A web server that pays the least toll at the kernel boundary.")
    parser.add_argument("--version", action=_VersionAction, nargs=0,
                        help="show the version and the build (compiled with mypyc, or pure Python)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="serve a directory, an ASGI/WSGI application (--app), or the built-in demo site")
    serve.add_argument("root_dir", nargs="?", metavar="ROOT", help="directory to serve")
    serve.add_argument("--config", metavar="FILE", help="TOML config file")
    _add_config_flags(serve)
    check = commands.add_parser("check-config", help="validate a config file and print it")
    check.add_argument("config", metavar="FILE", help="TOML config file")
    _add_config_flags(check)
    return parser


def _overrides(args: argparse.Namespace) -> dict[tuple[str, str], Any]:
    found: dict[tuple[str, str], Any] = {}
    for dest, value in vars(args).items():
        if dest.startswith("cfg__") and value is not None:
            _, section_name, key = dest.split("__", 2)
            found[(section_name, key)] = value
    listen = found.get(("server", "listen"))
    if ("tls", "cert") in found and listen:
        # With --tls-cert, every --listen of the command line is TLS (unless it says otherwise).
        found[("server", "listen")] = [text if len(text.split()) > 1 else f"{text} tls"
                                       for text in listen]
    root = getattr(args, "root_dir", None)
    if root is not None:
        found[("static", "root")] = root
    return found


def load_config(args: argparse.Namespace) -> Config:
    path = getattr(args, "config", None)
    data = load_toml(path) if path else None
    return build_config(data, path or "<defaults>", _overrides(args))


def demo_root() -> str:
    """The built-in demo site's directory (shipped inside the package)."""
    return str(resources.files("ring3") / "demo")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"ring3: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        tls = _load_tls(config)
    except ConfigError as exc:
        print(f"ring3: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        return _check_config(config, tls, args.config)
    return _serve(config, tls, getattr(args, "config", None) or "command line", argv)


def _check_config(config: Config, tls: ServerTLS | None, source: str) -> int:
    """Print the effective config, and with [[site]] tables the routing table (as TOML comments)."""
    sys.stdout.write(render_toml(config))
    if config.sites:
        from ring3.apps import build_site
        from ring3.sites.build import routing_table
        from ring3.sites.router import SiteRouter

        try:
            site = build_site(config, demo_root(), tls, load_apps=False, source=source)
        except ConfigError as exc:
            print(f"ring3: config error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        assert isinstance(site.handler, SiteRouter)
        table = routing_table(site.handler)
        sys.stdout.write("\n# routing (sites by host, then locations in the order they are matched)\n")
        sys.stdout.write("".join(f"# {line}\n" for line in table.splitlines()))
    return 0


def _load_tls(config: Config) -> ServerTLS | None:
    """The certificates of the tls listeners, loaded and checked (None when no listener is tls: then
    no TLS code of ring3's is imported)."""
    from ring3.config import parse_listen

    if not any(parse_listen(text).tls for text in config.server.listen):
        return None
    from ring3.config.loader import tls_settings
    from ring3.transport.tls_context import load_server_tls

    return load_server_tls(tls_settings(config), config.http2.enabled)


def _checked(config: Config, tls: ServerTLS | None, source: str, *, load_apps: bool = True) -> Site:
    """The site `config` describes, built (its applications imported only with `load_apps`); raises
    ConfigError."""
    from ring3.apps import build_site

    root = config.static.root or demo_root()
    if (config.static.root or not (config.app.target or config.sites)) and not os.path.isdir(root):
        where = "static.root" if config.static.root else "demo site"
        raise ConfigError(source, where, f"{root!r} is not a directory")
    try:
        from ring3.loops import loop_factory

        loop_factory(config.server.loop)
    except ImportError:
        raise ConfigError(source, "server.loop",
                          "uvloop is not installed (pip install 'ring3[uvloop]')") from None
    return build_site(config, root, tls, load_apps=load_apps, source=source)


def _serve(config: Config, tls: ServerTLS | None, source: str, argv: list[str]) -> int:
    from ring3.handlers.lifespan import LifespanFailed
    from ring3.server import run

    worker = None
    if "RING3_WORKER" in os.environ:
        from ring3.supervisor.link import WorkerLink

        worker = WorkerLink.from_environment()
    name = f" (worker {worker.name})" if worker is not None else ""
    if worker is not None and tls is not None and worker.ticket_keys and config.tls.session_tickets:
        from ring3.transport import ticket_keys

        ticket_keys.share([cert.context for cert in tls.certificates], worker.ticket_keys)
    logging.basicConfig(level=config.server.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s [%(levelname)s] %(name)s{name}: %(message)s")
    master = worker is None and (config.server.master or worker_count(config.server.workers) > 1)
    try:
        site = _checked(config, tls, source, load_apps=not master)
    except ConfigError as exc:
        print(f"ring3: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if site.max_body_size > config.limits.max_body_size:  # a location allows more: the protocols must
        config = dataclasses.replace(config, limits=dataclasses.replace(
            config.limits, max_body_size=site.max_body_size))
    if worker is None:
        _announce(config, site.description, tls)
    if master:
        from ring3.supervisor.master import run_master

        def reload() -> Config:
            args = build_parser().parse_args(argv)
            fresh = load_config(args)
            _checked(fresh, _load_tls(fresh), source, load_apps=False)
            return fresh

        try:
            return run_master(argv, config, reload)
        except OSError as exc:
            print(f"ring3: cannot listen: {exc.strerror or exc}", file=sys.stderr)
            return 1
    try:
        run(config, site.handler, startup=site.startup, shutdown=site.shutdown, tls=tls, worker=worker)
    except OSError as exc:
        print(f"ring3: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except LifespanFailed as exc:
        print(f"ring3: the application failed to start: {exc}", file=sys.stderr)
        return EXIT_APP_STARTUP
    except KeyboardInterrupt:
        pass
    return 0


def _announce(config: Config, description: str, tls: ServerTLS | None) -> None:
    if not config.static.root and not config.app.target and not config.sites:
        print(f"ring3: no ROOT given, serving the built-in demo site from {demo_root()}", flush=True)
    else:
        print(f"ring3: serving {description}", flush=True)
    if config.static.compress:
        from ring3.files.compress import report

        print(f"ring3: compression of static files: {report(config.static.compress_encodings)}", flush=True)
    if tls is not None:
        from ring3.transport.tls_context import kernel_tls_status

        print(f"ring3: TLS: {kernel_tls_status()}", flush=True)
