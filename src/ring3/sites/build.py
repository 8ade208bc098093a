"""From the [[site]] specs to the router: each location's effective keys (its own, else its site's), its
handler, and its chain of rules; applications loaded once per target; one file cache for every static
location; the routing table that `ring3 check-config` prints.

Inheritance: a location's rules (auth, allow, deny, headers, max_body_size, error_pages, rate_limit,
request_id) and static keys (index, try_files, dotfiles) are its site's unless it sets them; a location
without a handler serves what its site serves. A site-level rewrite runs before a location is chosen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ring3.config import Config, ConfigError, StaticSection
from ring3.config.site_loader import compile_regex, parse_error_code, parse_rate, split_location_path
from ring3.config.site_schema import HANDLER_KEYS, STATIC_KEYS, LocationSpec, SiteSpec
from ring3.files.cache import FileCache
from ring3.files.compress import OnTheFly
from ring3.handlers import Handler
from ring3.handlers.static import StaticHandler, new_compressor, new_file_cache
from ring3.sites.hosts import HostTable
from ring3.sites.paths import canonical_pattern
from ring3.sites.ratelimit import RateLimiter
from ring3.sites.router import HostSite, Location, SiteRouter
from ring3.sites.rules import AccessRule, AuthRule, BodyLimitRule, HeaderRule, RateRule, RequestIdRule
from ring3.sites.targets import ErrorPages, Redirect, Respond, Rewrite, TryFiles

if TYPE_CHECKING:
    from ring3.observe.access_log import AccessLog
    from ring3.proxy.handler import ProxyHandler
    from ring3.transport.tls_context import ServerTLS

RULE_KEYS = ("auth", "allow", "deny", "headers", "max_body_size", "error_pages", "rate_limit", "request_id",
             "compress", "compress_encodings", "compress_types", "compress_min_size", "request_encodings",
             *(f"{kind}{name}" for kind in ("", "stream_")
               for name in ("gzip_level", "brotli_quality", "zstd_level")))
STATIC_COMPRESSION = ("compress_encodings", "compress_types", "compress_min_size", "gzip_level",
                      "brotli_quality", "zstd_level")
STREAM_LEVELS = ("stream_gzip_level", "stream_brotli_quality", "stream_zstd_level")
# Rules whose answer depends on more than the request's bytes (the client's address, the time, a random
# id, a password file's state): their locations stay out of the replay cache.
NOT_REPLAYABLE = ("auth", "allow", "deny", "rate_limit", "request_id")


def effective(defaults: LocationSpec, location: LocationSpec) -> LocationSpec:
    """A location's keys with its site's filled in where it sets none."""
    changes: dict[str, Any] = {}
    for key in (*RULE_KEYS, *STATIC_KEYS):
        if getattr(location, key) is None:
            changes[key] = getattr(defaults, key)
    if all(getattr(location, key) is None for key in HANDLER_KEYS):
        for key in (*HANDLER_KEYS, "status"):
            changes[key] = getattr(defaults, key)
    return dataclasses.replace(location, **changes)


class Builder:
    """Builds one router; keeps what locations share (applications, the file cache, rate limiters)."""

    def __init__(self, config: Config, source: str, app_handler: Callable[[str], Handler]) -> None:
        self.config = config
        self.source = source
        self.app_handler = app_handler  # target -> its handler (loaded once)
        self.files: FileCache | None = new_file_cache(config.static)
        self.limiters: dict[int, RateLimiter] = {}
        self.logs: list[AccessLog] = []
        self.proxies: list[ProxyHandler] = []
        self._compressors: dict[tuple[Any, ...], OnTheFly | None] = {}
        self._tags = 0
        self.max_body_size = config.limits.max_body_size

    def router(self, sites: tuple[SiteSpec, ...], legacy: Handler | None,
               tls: ServerTLS | None) -> SiteRouter:
        for spec in sites:
            for location in (spec.defaults, *spec.locations):
                if location.max_body_size is not None:
                    self.max_body_size = max(self.max_body_size, location.max_body_size)
        built = [self.site(f"site[{number}]", spec) for number, spec in enumerate(sites, 1)]
        default: HostSite | None = None
        for spec, site in zip(sites, built, strict=True):
            if "*" in spec.hosts:
                default = site
        if default is None and legacy is not None:
            default = HostSite("the command line's site", ("*",), None)
            legacy_location = Location("the command line's site", legacy, "[static]/[app]")
            default.locations.add("prefix", "/", legacy_location, compile_regex)
            built.append(default)
        hosts: HostTable[HostSite] = HostTable(default or built[0])
        for spec, site in zip(sites, built, strict=False):
            for pattern in spec.hosts:
                if pattern != "*":
                    hosts.add(pattern, site, compile_regex)
        cert_names = None
        if tls is not None:
            cert_names = {}
            for cert in tls.certificates:
                exact = frozenset(name.encode() for name in cert.names if not name.startswith("*."))
                wild = tuple(name[2:].encode() for name in cert.names if name.startswith("*."))
                cert_names[cert.pem] = (exact, wild)
        return SiteRouter(hosts, built, cert_names)

    def site(self, where: str, spec: SiteSpec) -> HostSite:
        log: Any = None
        if spec.access_log is not None or spec.access_log_format is not None:
            log = self._open_log(where, spec)
        site = HostSite(where, spec.hosts, log)
        defaults = spec.defaults
        has_root_location = any(split_location_path(loc.path) == ("prefix", "/") for loc in spec.locations)
        if not has_root_location and any(getattr(defaults, key) is not None for key in HANDLER_KEYS):
            root = dataclasses.replace(defaults, path="/", rewrite=None)
            self._add(site, where, root)
        for number, location in enumerate(spec.locations, 1):
            self._add(site, f"{where}.location[{number}]", effective(defaults, location))
        if defaults.rewrite:
            site.rewrite = Rewrite(self._rewrites(defaults.rewrite), site.locate, site.locate)
            site.plain = False
            site.where += f" (rewrite first: {', '.join(defaults.rewrite)})"
        return site

    def _open_log(self, where: str, spec: SiteSpec) -> Any:
        from ring3.observe.access_log import AccessLog

        target = spec.access_log if spec.access_log is not None else self.config.server.access_log
        style = spec.access_log_format or self.config.server.access_log_format
        try:
            log = AccessLog.open(target, None, style=style)
        except OSError as exc:
            raise ConfigError(self.source, f"{where}.access_log", f"cannot open {target!r}: "
                              f"{exc.strerror}") from None
        if log is None:
            return False
        self.logs.append(log)
        return log

    def _add(self, site: HostSite, where: str, spec: LocationSpec) -> None:
        kind, pattern = split_location_path(spec.path)
        handle, what = self._handler(site, where, spec, kind, pattern)
        if spec.rewrite:  # after the rules: a rewritten request has passed this location's too
            handle = Rewrite(self._rewrites(spec.rewrite), site.locate, handle)
        handle, rules = self._rules(site, spec, handle)
        if spec.rewrite:
            rules.insert(0, f"rewrite x{len(spec.rewrite)}")
        describe = what + (f"  [{', '.join(rules)}]" if rules else "")
        site.locations.add(kind, pattern, Location(where, handle, describe), compile_regex)

    def _handler(self, site: HostSite, where: str, spec: LocationSpec, kind: str,
                 pattern: str) -> tuple[Handler, str]:
        replayable = not any(getattr(spec, key) is not None for key in NOT_REPLAYABLE)
        if spec.root is not None or spec.alias is not None:
            self._tags += 1
            strip = canonical_pattern(pattern) if spec.alias is not None else b""
            if strip.endswith(b"/"):
                strip = strip[:-1]  # what is left starts with '/', as the resolver wants
            static = StaticHandler(self.config.static, spec.alias or spec.root or "", strip=strip,
                                   cache=self.files if self.files is not None else False,
                                   cache_tag=b"\0%d\0" % self._tags,
                                   replayable=replayable, index=spec.index, dotfiles=spec.dotfiles,
                                   compress=self._compressor(spec), listing=spec.listing)
            what = f"alias {static.root}" if spec.alias is not None else f"root {static.root}"
            if spec.try_files:
                tried = TryFiles(static, spec.try_files, site.locate)
                return tried, f"{what}, try_files {list(spec.try_files)}"
            return static, what
        if spec.app is not None:
            from ring3.apps import wrap_app

            try:
                shared = self.app_handler(spec.app)
            except ConfigError as exc:
                raise ConfigError(self.source, f"{where}.app", exc.reason) from None
            levels = {key: getattr(spec, key) for key in STREAM_LEVELS if getattr(spec, key) is not None}
            config = dataclasses.replace(self.config, static=self._compression(spec),
                                         app=dataclasses.replace(self.config.app, **levels))
            handler = wrap_app(shared, config, compress=spec.compress,
                               request_encodings=spec.request_encodings, max_body_size=spec.max_body_size)
            compressed = spec.compress if spec.compress is not None else self.config.app.compress
            return handler, f"app {spec.app}" + (", compressed" if compressed else "")
        if spec.redirect is not None:
            regex = compile_regex(pattern, kind == "iregex") if kind in ("regex", "iregex") else None
            status = spec.status or 301
            return Redirect(spec.redirect, status, regex), f"redirect {status} {spec.redirect}"
        if spec.proxy is not None:
            from ring3.proxy.handler import ProxyHandler

            prefix = canonical_pattern(pattern) if kind in ("prefix", "stop", "exact") else b""
            proxy = ProxyHandler(spec.proxy, where, prefix)
            self.proxies.append(proxy)
            proxy.splice_ok = proxy.splice_ok and not spec.compress
            handler = proxy if not spec.compress else wrap_proxy(proxy, self.config, spec)
            names = ", ".join(spec.proxy.upstreams)
            shown = f"proxy {names} ({spec.proxy.balance})" + (", compressed" if spec.compress else "")
            return handler, shown
        if spec.respond is not None:
            answer = spec.respond
            return (Respond(answer.status, answer.body, answer.content_type, replayable),
                    f"respond {answer.status}")
        raise ConfigError(self.source, where, "no handler: give root, alias, app, redirect, respond or proxy "
                          "here or at site level")

    def _rules(self, site: HostSite, spec: LocationSpec, handle: Handler) -> tuple[Handler, list[str]]:
        rules: list[str] = []
        limit = self.config.limits.max_body_size if spec.max_body_size is None else spec.max_body_size
        if limit < self.max_body_size:  # the protocols enforce the largest limit of all; this one is less
            handle = BodyLimitRule(limit, handle)
            rules.append(f"max_body_size {limit}")
        if spec.auth is not None:
            from ring3.sites.htpasswd import Htpasswd

            handle = AuthRule(Htpasswd.load(spec.auth.htpasswd), spec.auth.realm, handle)
            rules.append(f"auth {spec.auth.htpasswd}")
        if spec.allow is not None or spec.deny is not None:
            handle = AccessRule(spec.allow or (), spec.deny or (), handle)
            rules.append(" ".join(f"{word} {' '.join(values)}" for word, values
                                  in (("allow", spec.allow), ("deny", spec.deny)) if values))
        if spec.rate_limit is not None:
            limit_spec = spec.rate_limit
            # One limiter per table, shared by the locations that inherit it; 'location' means each its own.
            shared = id(limit_spec) if limit_spec.key != "location" else id(handle)
            limiter = self.limiters.get(shared)
            if limiter is None:
                rate = parse_rate(limit_spec.rate)
                assert rate is not None  # the loader checked it
                limiter = self.limiters[shared] = RateLimiter(rate, limit_spec.burst, limit_spec.max_keys)
            handle = RateRule(limiter, limit_spec.key, handle)
            rules.append(f"rate_limit {limit_spec.rate} burst {limit_spec.burst} by {limit_spec.key}")
        if spec.error_pages:
            pages = []
            for code, page in spec.error_pages:
                low_high = parse_error_code(code)
                assert low_high is not None
                pages.append((*low_high, page.encode("utf-8")))
            handle = ErrorPages(pages, site.locate, handle)
            rules.append("error_pages")
        if spec.headers:
            handle = HeaderRule(spec.headers, handle)
            rules.append("headers")
        if spec.request_id:
            handle = RequestIdRule(handle)
            rules.append("request_id")
        return handle, rules

    def _compression(self, spec: LocationSpec) -> StaticSection:
        """[static] with the location's compression keys in place of its own."""
        changes = {key: getattr(spec, key) for key in STATIC_COMPRESSION if getattr(spec, key) is not None}
        return dataclasses.replace(self.config.static, **changes) if changes else self.config.static

    def _compressor(self, spec: LocationSpec) -> OnTheFly | None:
        """On-the-fly compression for static locations, one per distinct setting (they share its codecs)."""
        key = (spec.compress, *(getattr(spec, name) for name in STATIC_COMPRESSION))
        if key not in self._compressors:
            self._compressors[key] = new_compressor(self._compression(spec), spec.compress)
        return self._compressors[key]

    @staticmethod
    def _rewrites(rules: tuple[str, ...]) -> list[tuple[Any, bytes, str]]:
        compiled = []
        for rule in rules:
            parts = rule.split()
            compiled.append((compile_regex(parts[0]), parts[1].encode("utf-8"),
                             parts[2] if len(parts) == 3 else "last"))
        return compiled


def wrap_proxy(proxy: Handler, config: Config, spec: LocationSpec) -> Handler:
    """A proxy whose location asks for compression: the upstream's responses compressed as they stream
    (those it compressed itself pass as they are)."""
    from ring3.handlers.compressing import CompressingHandler

    static = config.static
    app = config.app
    levels = {"gzip": spec.stream_gzip_level or app.stream_gzip_level,
              "br": spec.stream_brotli_quality if spec.stream_brotli_quality is not None
              else app.stream_brotli_quality, "zstd": spec.stream_zstd_level or app.stream_zstd_level}
    return CompressingHandler(proxy, encodings=spec.compress_encodings or static.compress_encodings,
                              levels=levels, min_size=static.compress_min_size,
                              types=spec.compress_types or static.compress_types,
                              event_stream=app.compress_event_stream)


def routing_table(router: SiteRouter) -> str:
    """The effective routing, as `ring3 check-config` prints it: sites by host, then locations in the
    order matching considers them."""
    lines: list[str] = []
    names: dict[int, list[str]] = {}
    for pattern, site in router.hosts.names():
        names.setdefault(id(site), []).append(pattern)
    for site in router.sites:
        hosts = names.get(id(site), [])
        if site is router.hosts.default:
            hosts.append("* (default)")
        lines.append(f"{site.where}: {', '.join(hosts) or '(no host)'}")
        for match, location in site.locations.describe():
            lines.append(f"  {match:<28} {location.describe}    ({location.where})")
    return "\n".join(lines) + "\n"
