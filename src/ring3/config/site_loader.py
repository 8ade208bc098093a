"""`[[site]]` tables from TOML into validated SiteSpecs, each error one line naming its key path.

Key paths count from 1 as people do: `site[2].location[1].rate_limit.rate` is the first location of the
second [[site]]. A misspelt key gets a suggestion. What can be checked without serving is checked here
(regexes compile, directories exist, addresses parse, an htpasswd file is readable and well formed), so
`ring3 check-config` catches it too.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import types
import typing
from typing import Any

from ring3.config.loader import ConfigError, coerce
from ring3.config.site_schema import (
    HANDLER_KEYS,
    NOT_YET,
    TABLES,
    LocationSpec,
    Pairs,
    RateLimitSpec,
    SiteSpec,
)

_SITE_ONLY = ("hosts", "tls", "access_log", "access_log_format")
_LOCATION_KEYS = tuple(f.name for f in dataclasses.fields(LocationSpec))
_SITE_KEYS = (*_SITE_ONLY, *(k for k in _LOCATION_KEYS if k != "path"), "location")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOST_NAME = re.compile(r"^(?:\*\.)?(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
                        r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*r?/\s*(s|m)\s*$")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
REWRITE_FLAGS = ("last", "break", "redirect", "permanent")
# Fields that say how a message is framed or carried: ring3 writes them, a headers rule may not.
FRAMING_FIELDS = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                            "te", "trailer", "proxy-connection"))


def parse_rate(text: str) -> float | None:
    """Requests per second from 'N/s' or 'N/m' (nginx's '5r/s' too); None if it is neither."""
    match = _RATE.match(text)
    if match is None or float(match.group(1)) <= 0:
        return None
    return float(match.group(1)) / (60.0 if match.group(2) == "m" else 1.0)


def parse_error_code(text: str) -> tuple[int, int] | None:
    """'404' or '500-599' as an inclusive range of codes from 300 to 599; None if it is neither."""
    first, dash, last = text.partition("-")
    if not first.isdigit() or (dash and not last.isdigit()):
        return None
    low, high = int(first), int(last) if dash else int(first)
    return (low, high) if 300 <= low <= high <= 599 else None


def compile_regex(text: str, case_insensitive: bool = False) -> Any:
    """An RE2 pattern (linear-time matching); raises ValueError with RE2's reason."""
    import re2

    options = re2.Options()
    options.case_sensitive = not case_insensitive
    options.log_errors = False
    try:
        return re2.compile(text.encode("utf-8"), options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"{text!r} does not compile: {reason}") from None


def split_location_path(text: str) -> tuple[str, str]:
    """A location's path into its kind ('prefix', 'exact', 'stop', 'regex', 'iregex') and its pattern."""
    modifier, space, rest = text.strip().partition(" ")
    kinds = {"=": "exact", "^~": "stop", "~": "regex", "~*": "iregex"}
    if space and modifier in kinds:
        return kinds[modifier], rest.strip()
    return "prefix", text.strip()


def load_sites(raw: Any, source: str) -> tuple[SiteSpec, ...]:
    """Every [[site]] of the file, checked; raises ConfigError."""
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError(source, "site", "expected [[site]] tables")
    sites = tuple(_site(source, f"site[{number}]", table) for number, table in enumerate(raw, 1))
    _check_hosts(source, sites)
    return sites


def _unknown(source: str, key_path: str, key: str, known: tuple[str, ...]) -> ConfigError:
    if key in NOT_YET:
        return ConfigError(source, key_path, NOT_YET[key])
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
    return ConfigError(source, key_path, "unknown key" + hint)


def _site(source: str, where: str, table: dict[str, Any]) -> SiteSpec:
    for key in table:
        if key not in _SITE_KEYS:
            raise _unknown(source, f"{where}.{key}", key, _SITE_KEYS)
    site_values = {key: _value(source, f"{where}.{key}", SiteSpec, key, table[key])
                   for key in _SITE_ONLY if key in table}
    if not site_values.get("hosts"):
        raise ConfigError(source, f"{where}.hosts", "a site needs its host names (or [\"*\"] for the "
                          "default site)")
    for host in site_values["hosts"]:
        _check_host_pattern(source, f"{where}.hosts", host)
    defaults = _location(source, where, {k: v for k, v in table.items()
                                         if k not in _SITE_ONLY and k != "location"}, site_level=True)
    raw_locations = table.get("location", [])
    if not isinstance(raw_locations, list) or not all(isinstance(t, dict) for t in raw_locations):
        raise ConfigError(source, f"{where}.location", "expected [[site.location]] tables")
    locations = tuple(_location(source, f"{where}.location[{number}]", location_table)
                      for number, location_table in enumerate(raw_locations, 1))
    seen: dict[str, str] = {}
    for number, location in enumerate(locations, 1):
        key = " ".join(split_location_path(location.path))
        if key in seen:
            raise ConfigError(source, f"{where}.location[{number}].path",
                              f"{location.path!r} is {seen[key]}'s path too")
        seen[key] = f"location[{number}]"
        if location.alias is not None and split_location_path(location.path)[0] in ("regex", "iregex"):
            raise ConfigError(source, f"{where}.location[{number}].alias", "alias needs a prefix or exact "
                              "location (use root, or a rewrite, with a regex)")
    spec = SiteSpec(**site_values, defaults=defaults, locations=locations)
    if spec.tls is not None:
        if not (spec.tls.cert and spec.tls.key):
            raise ConfigError(source, f"{where}.tls", "give both cert and key")
        for key in ("cert", "key"):
            path = getattr(spec.tls, key)
            if not os.access(path, os.R_OK) or not os.path.isfile(path):
                raise ConfigError(source, f"{where}.tls.{key}", f"{path!r} cannot be read")
    return spec


def _check_host_pattern(source: str, key: str, host: str) -> None:
    if host == "*":
        return
    if host.startswith("~"):
        try:
            compile_regex(host[1:], case_insensitive=True)
        except ValueError as exc:
            raise ConfigError(source, key, str(exc)) from None
        return
    if not _HOST_NAME.match(host.lower().rstrip(".")) and not _is_address(host):
        raise ConfigError(source, key, f"{host!r} is not a host name, a '*.' wildcard, '~regex' or '*'")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _check_hosts(source: str, sites: tuple[SiteSpec, ...]) -> None:
    claimed: dict[str, int] = {}
    for number, site in enumerate(sites, 1):
        for host in site.hosts:
            key = host if host.startswith("~") else host.lower().rstrip(".")
            if key in claimed and claimed[key] != number:
                raise ConfigError(source, f"site[{number}].hosts",
                                  f"{host!r} is claimed by site[{claimed[key]}] too")
            claimed[key] = number


def _location(source: str, where: str, table: dict[str, Any], site_level: bool = False) -> LocationSpec:
    known = tuple(k for k in _LOCATION_KEYS if not (site_level and k == "path"))
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in known:
            raise _unknown(source, f"{where}.{key}", key, known)
        values[key] = _value(source, f"{where}.{key}", LocationSpec, key, raw)
    handlers = [key for key in table if key in HANDLER_KEYS]  # in file order
    if len(handlers) > 1:
        raise ConfigError(source, f"{where}.{handlers[1]}",
                          f"a location has one handler, and {handlers[0]} is given too")
    if not site_level and "path" not in values:
        raise ConfigError(source, f"{where}.path", "a location needs its path, such as '/app/'")
    location = LocationSpec(**values)
    _check_location(source, where, location)
    return location


def _value(source: str, key_path: str, cls: type[Any], key: str, raw: Any) -> Any:
    """One key's raw TOML value, typed and checked against the schema."""
    field = next(f for f in dataclasses.fields(cls) if f.name == key)
    type_ = typing.get_type_hints(cls)[key]
    args = [a for a in typing.get_args(type_) if a is not type(None)]
    if typing.get_origin(type_) in (typing.Union, types.UnionType):
        type_ = args[0]
    if key == "proxy" and cls is LocationSpec:
        from ring3.config.proxy_loader import proxy_value

        return proxy_value(source, key_path, raw, _table)
    if key in TABLES:
        return _table(source, key_path, TABLES[key], raw)
    if type_ == Pairs:
        return _pairs(source, key_path, raw)
    return coerce(source, key_path, raw, type_, dict(field.metadata))


def _table(source: str, key_path: str, cls: type[Any], raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(source, key_path, "expected a table, such as { key = value }")
    known = tuple(f.name for f in dataclasses.fields(cls))
    values: dict[str, Any] = {}
    for key, item in raw.items():
        if key not in known:
            raise _unknown(source, f"{key_path}.{key}", key, known)
        values[key] = _value(source, f"{key_path}.{key}", cls, key, item)
    return cls(**values)


def _pairs(source: str, key_path: str, raw: Any) -> Pairs:
    if not isinstance(raw, dict):
        raise ConfigError(source, key_path, "expected a table of strings, such as { name = \"value\" }")
    pairs: list[tuple[str, str]] = []
    for key, value in raw.items():
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ConfigError(source, f"{key_path}.{key}", f"expected a string, got {value!r}")
        pairs.append((str(key), str(value)))
    return tuple(pairs)


def _check_location(source: str, where: str, location: LocationSpec) -> None:
    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(source, f"{where}.{key}", reason)

    kind, pattern = split_location_path(location.path)
    if kind in ("regex", "iregex"):
        try:
            compile_regex(pattern, kind == "iregex")
        except ValueError as exc:
            raise fail("path", str(exc)) from None
    elif not pattern.startswith("/"):
        raise fail("path", f"{location.path!r}: a path starts with '/' (or '= ', '^~ ', '~ ', '~* ')")
    for key in ("root", "alias"):
        directory = getattr(location, key)
        if directory is not None and not os.path.isdir(directory):
            raise fail(key, f"{directory!r} is not a directory")
    if location.app is not None:
        module, colon, attribute = location.app.partition(":")
        if not (module and colon and attribute):
            raise fail("app", "give it as 'module:attribute', such as 'mysite.asgi:application'")
    if location.status is not None:
        if location.redirect is None:
            raise fail("status", "status goes with redirect (respond has its own)")
        if location.status not in REDIRECT_STATUSES:
            raise fail("status", f"a redirect's status is one of {', '.join(map(str, REDIRECT_STATUSES))}")
    if location.respond is not None and not 200 <= location.respond.status <= 599:
        raise fail("respond.status", "a status from 200 to 599 is needed")
    if location.try_files is not None:
        _check_try_files(fail, location.try_files)
    for key in ("allow", "deny"):
        for address in getattr(location, key) or ():
            if address != "all":
                try:
                    ipaddress.ip_network(address, strict=False)
                except ValueError:
                    raise fail(key, f"{address!r} is not an address or network (CIDR), or 'all'") from None
    check_header_pairs(fail, "headers", location.headers or (), FRAMING_FIELDS,
                       "a framing field: ring3 sets it from the response itself")
    for code, target in location.error_pages or ():
        if parse_error_code(code) is None:
            raise fail(f"error_pages.{code}", "a status (404) or a range (500-599) from 300 to 599 is needed")
        if not target.startswith(("/", "http://", "https://")):
            raise fail(f"error_pages.{code}", f"{target!r}: give a path ('/404.html') or a URL")
    if location.rate_limit is not None:
        _check_rate_limit(fail, location.rate_limit)
    for key, high in (("gzip_level", 9), ("brotli_quality", 11), ("zstd_level", 22), ("stream_gzip_level", 9),
                      ("stream_brotli_quality", 11), ("stream_zstd_level", 22)):
        level = getattr(location, key)
        if level is not None and level > high:
            raise fail(key, f"must be at most {high}, got {level}")
    for key in ("compress_encodings", "request_encodings"):
        for name in getattr(location, key) or ():
            if name not in ("br", "zstd", "gzip"):
                raise fail(key, f"unknown codec {name!r}; known: br, zstd, gzip")
    for number, rule in enumerate(location.rewrite or (), 1):
        parts = rule.split()
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in REWRITE_FLAGS):
            raise fail(f"rewrite[{number}]", f"{rule!r}: give 'REGEX REPLACEMENT [FLAG]', FLAG one of "
                       f"{', '.join(REWRITE_FLAGS)}")
        try:
            compile_regex(parts[0])
        except ValueError as exc:
            raise fail(f"rewrite[{number}]", str(exc)) from None
    if location.auth is not None:
        _check_auth(fail, location.auth.htpasswd)
    if location.proxy is not None:
        from ring3.config.proxy_loader import check_proxy

        check_proxy(source, where, location.proxy)


def check_header_pairs(fail: Any, key: str, pairs: Pairs, refused: frozenset[str], reason: str) -> None:
    """Header edits ('name', '+name', '-name'): valid names, printable values, none of `refused`."""
    for name, value in pairs:
        bare = name[1:] if name[:1] in "+-" else name
        if not _TOKEN.match(bare):
            raise fail(f"{key}.{name}", "not a valid header name")
        if bare.lower() in refused:
            raise fail(f"{key}.{name}", reason)
        if any(not (" " <= c <= "~" or c == "\t") for c in value):
            raise fail(f"{key}.{name}", "only printable ASCII is allowed in a header value")


def _check_try_files(fail: Any, entries: tuple[str, ...]) -> None:
    if not entries:
        raise fail("try_files", "give at least one entry")
    for entry in entries[:-1]:
        if "$uri" not in entry and not entry.startswith("/"):
            raise fail("try_files", f"{entry!r}: an entry is a path, with $uri for the request's")
    last = entries[-1]
    if last.startswith("="):
        if not last[1:].isdigit() or not 200 <= int(last[1:]) <= 599:
            raise fail("try_files", f"{last!r}: '=CODE' needs a status from 200 to 599")
    elif not last.startswith("/") and not last.startswith("$uri"):
        raise fail("try_files", f"{last!r}: the last entry is a path ('/index.html') or '=404'")


def _check_rate_limit(fail: Any, spec: RateLimitSpec) -> None:
    if parse_rate(spec.rate) is None:
        raise fail("rate_limit.rate", f"{spec.rate!r}: give a rate such as '5/s' or '100/m'")
    if spec.key not in ("client", "host", "location") and not (
            spec.key.startswith("header:") and _TOKEN.match(spec.key[7:])):
        raise fail("rate_limit.key", f"{spec.key!r}: one of 'client', 'host', 'location' or 'header:NAME'")


def _check_auth(fail: Any, path: str) -> None:
    from ring3.sites.htpasswd import Htpasswd, HtpasswdError

    if not path:
        raise fail("auth.htpasswd", "the htpasswd file is needed")
    try:
        Htpasswd.load(path)
    except HtpasswdError as exc:
        raise fail("auth.htpasswd", f"{path}: {exc}") from None
