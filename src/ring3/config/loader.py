"""Turn TOML files and command-line values into a validated, frozen Config."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ring3.config.schema import SECTIONS, Config, TLSSection

_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*$")
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_FACTORS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}


class ConfigError(Exception):
    """A setting that cannot be used: where it came from, which key, and why."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}")
        self.source = source
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One parsed listen address."""

    host: str
    port: int
    unix_path: str = ""
    tls: bool = False  # the "tls" option: connections on it speak TLS
    redirect_https: bool = False  # the "redirect-https" option: every request gets a 301 to https
    proxy_protocol: bool = False  # the "proxy_protocol" option: a PROXY protocol header comes first

    @property
    def is_unix(self) -> bool:
        return bool(self.unix_path)


# The words that may follow an address in `listen`, as nginx's `listen 443 ssl`.
LISTEN_OPTIONS = ("tls", "redirect-https", "plain", "proxy_protocol")


def parse_listen(text: str) -> ListenAddress:
    """Parse HOST:PORT, [IPv6]:PORT or unix:/path, then its option words (LISTEN_OPTIONS); raise
    ValueError with the reason."""
    address, words = text.strip(), list[str]()
    while True:  # option words from the end: a unix socket's path may hold spaces
        rest, _, last = address.rpartition(" ")
        if not rest.strip() or last not in LISTEN_OPTIONS:
            break
        words.insert(0, last)
        address = rest.strip()
    if not address:
        raise ValueError("an address is needed")
    if not address.startswith("unix:") and len(address.split()) > 1:
        raise ValueError(f"{text!r}: unknown option {address.split()[-1]!r}; known: "
                         f"{', '.join(LISTEN_OPTIONS)}")
    if "tls" in words and ("redirect-https" in words or "plain" in words):
        raise ValueError(f"{text!r}: a listener is either tls or plain HTTP")
    parsed = _parse_address(address)
    if words:
        parsed = dataclasses.replace(parsed, tls="tls" in words, redirect_https="redirect-https" in words,
                                     proxy_protocol="proxy_protocol" in words)
    return parsed


def _parse_address(text: str) -> ListenAddress:
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("unix: needs a path")
        return ListenAddress(host="", port=0, unix_path=path)
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r} is not [IPv6]:PORT")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r} is not HOST:PORT")
        if ":" in host:
            raise ValueError(f"{text!r}: put an IPv6 address in brackets, [::1]:PORT")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: port must be a number from 0 to 65535")
    return ListenAddress(host=host, port=int(port_text))


def field_types(section_cls: type[Any]) -> dict[str, Any]:
    """The resolved type of each field of a section class."""
    return typing.get_type_hints(section_cls)


def coerce(source: str, key: str, value: Any, type_: Any, meta: dict[str, Any]) -> Any:
    """Check one raw value (from TOML or a flag's text) against its field and return it typed."""
    from_text = isinstance(value, str)
    unit = meta.get("unit", "")
    result: Any
    if type_ is bool:
        if from_text and value.lower() in ("true", "yes", "on", "1"):
            result = True
        elif from_text and value.lower() in ("false", "no", "off", "0"):
            result = False
        elif isinstance(value, bool):
            result = value
        else:
            raise ConfigError(source, key, f"expected true or false, got {value!r}")
    elif type_ is int:
        result = _to_int(source, key, value, unit)
    elif type_ is float:
        result = _to_float(source, key, value)
    elif type_ is str:
        if meta.get("number_too") and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # workers = 4 as well as workers = "auto"
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {value!r}")
        result = value
    elif typing.get_origin(type_) is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(source, key, f"expected a list of strings, got {value!r}")
        result = tuple(items)
    else:  # pragma: no cover - the schema only uses the types above
        raise ConfigError(source, key, f"unsupported type {type_!r}")
    minimum = meta.get("minimum")
    is_number = isinstance(result, int | float) and not isinstance(result, bool)
    if minimum is not None and is_number and result < minimum:
        raise ConfigError(source, key, f"must be at least {minimum}, got {result}")
    choices = meta.get("choices") or ()
    if choices and result not in choices:
        raise ConfigError(source, key, f"must be one of {', '.join(choices)}, got {result!r}")
    return result


def _to_int(source: str, key: str, value: Any, unit: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _SIZE.match(value) if unit == "bytes" else re.match(r"^\s*(\d+)\s*()$", value)
        if match:
            return int(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()]
    hint = " (a size like 16384, '16k' or '1m')" if unit == "bytes" else ""
    raise ConfigError(source, key, f"expected a whole number{hint}, got {value!r}")


def _to_float(source: str, key: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        result = float(match.group(1)) * _DURATION_FACTORS[match.group(2)]
    else:
        raise ConfigError(source, key, f"expected seconds (a number, or '500ms', '10s'), got {value!r}")
    if not math.isfinite(result):
        raise ConfigError(source, key, f"must be finite, got {value!r}")
    return result


def load_toml(path: str) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a ConfigError."""
    try:
        with open(path, "rb") as stream:
            return tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(path, "-", f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "-", f"not valid TOML: {exc}") from None


Overrides = dict[tuple[str, str], Any]


def build_config(file_data: dict[str, Any] | None = None, source: str = "<config>",
                 overrides: Overrides | None = None,
                 override_source: str = "command line") -> Config:
    """Validate file data and command-line overrides (which win) into a Config."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    sites: tuple[Any, ...] = ()
    for section_name, body in (file_data or {}).items():
        if section_name == "site":
            from ring3.config.site_loader import load_sites

            sites = load_sites(body, source)
            continue
        if section_name not in SECTIONS:
            raise ConfigError(source, section_name, f"unknown section; known: {', '.join(SECTIONS)}, site")
        if not isinstance(body, dict):
            raise ConfigError(source, section_name, "expected a table, like [server]")
        for key, raw in body.items():
            sections[section_name][key] = _check(source, section_name, key, raw)
    for (section_name, key), raw in (overrides or {}).items():
        sections[section_name][key] = _check(override_source, section_name, key, raw)
    certificates = sections["tls"].get("cert") or any(site.tls for site in sites)
    if certificates and "listen" not in sections["server"]:
        sections["server"]["listen"] = (DEFAULT_TLS_LISTEN,)
    built = {name: SECTIONS[name](**values) for name, values in sections.items()}
    config = Config(**built, sites=sites)
    given = overrides or {}
    _check_mounts(config, override_source if ("static", "mount") in given else source)
    _check_tls(config, override_source if given.keys() & {("tls", "cert"), ("server", "listen")} else source)
    return config


# Where `ring3 serve --tls-cert C --tls-key K` listens when no listener is given anywhere.
DEFAULT_TLS_LISTEN = "127.0.0.1:8443 tls"


def tls_settings(config: Config) -> TLSSection:
    """[tls] with every site's own certificate after its own, for SNI to choose from."""
    own = [site.tls for site in config.sites if site.tls is not None]
    if not own:
        return config.tls
    return dataclasses.replace(config.tls, cert=(*config.tls.cert, *(spec.cert for spec in own)),
                               key=(*config.tls.key, *(spec.key for spec in own)))


def _check_tls(config: Config, source: str) -> None:
    tls = tls_settings(config)
    listeners = [parse_listen(text) for text in config.server.listen]
    if any(listener.tls for listener in listeners) and not tls.cert:
        raise ConfigError(source, "tls.cert", "a listener is marked tls but no certificate is given "
                          "(--tls-cert and --tls-key, or cert and key in [tls])")
    if len(tls.cert) != len(tls.key):
        raise ConfigError(source, "tls.key", f"{len(tls.cert)} certificates but {len(tls.key)} keys; "
                          "give one key per certificate, in the same order")
    if tls.cert and not any(listener.tls for listener in listeners):
        raise ConfigError(source, "server.listen", "certificates are given but no listener is tls; "
                          "mark one, such as '0.0.0.0:443 tls'")
    if tls.verify_client != "off" and not tls.client_ca:
        raise ConfigError(source, "tls.client_ca", f"verify_client is {tls.verify_client!r}: give the "
                          "CA file that client certificates must chain to")


def _check_mounts(config: Config, source: str) -> None:
    app, static = config.app, config.static
    if app.target and static.root and mount_prefix(app.mount) == mount_prefix(static.mount):
        raise ConfigError(source, "static.mount",
                          f"the application is mounted at {app.mount!r} too; give the static files "
                          "their own prefix, such as '/static'")


def mount_prefix(mount: str) -> str:
    """A mount point as routing compares it: without a trailing slash ('' for the root)."""
    return mount.rstrip("/")


def _check(source: str, section_name: str, key: str, raw: Any) -> Any:
    section_cls = SECTIONS[section_name]
    fields = {f.name: f for f in dataclasses.fields(section_cls)}
    if key not in fields:
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(fields)}"
        raise ConfigError(source, f"{section_name}.{key}", f"unknown key; {hint}")
    type_ = field_types(section_cls)[key]
    dotted = f"{section_name}.{key}"
    value = coerce(source, dotted, raw, type_, dict(fields[key].metadata))
    check = _VALUE_CHECKS.get(dotted)
    if check is not None:
        reason = check(value)
        if reason:
            raise ConfigError(source, dotted, reason)
    return value


def _check_listen(addresses: tuple[str, ...]) -> str | None:
    if not addresses:
        return "at least one address is needed"
    for address in addresses:
        try:
            parse_listen(address)
        except ValueError as exc:
            return str(exc)
    return None


def _check_admin(address: str) -> str | None:
    if not address:
        return None
    try:
        parsed = parse_listen(address)
    except ValueError as exc:
        return str(exc)
    return "the admin listener takes HOST:PORT, not a unix socket" if parsed.is_unix else None


MAX_WORKERS = 256


def _check_workers(value: str) -> str | None:
    if value == "auto" or (value.isdigit() and 1 <= int(value) <= MAX_WORKERS):
        return None
    return f"{value!r}: give a number from 1 to {MAX_WORKERS}, or 'auto' (one per CPU)"


def worker_count(value: str) -> int:
    """The number of workers `server.workers` asks for ('auto': the CPUs this process may use)."""
    return len(os.sched_getaffinity(0)) if value == "auto" else int(value)


def _check_header_value(value: str) -> str | None:
    if any(not (" " <= c <= "~" or c == "\t") for c in value):
        return "only printable ASCII is allowed in a header value"
    return None


def _check_index(names: tuple[str, ...]) -> str | None:
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            return f"{name!r} is not a plain file name"
    return None


# Checks of single values beyond their type, run wherever the value comes from, so errors name the
# right source (the file or the command line).
def _check_mount(prefix: str) -> str | None:
    if not prefix.startswith("/") or "?" in prefix or "#" in prefix or "//" in prefix:
        return "a URL path prefix starting with '/' is needed, such as '/' or '/static'"
    if any(not ("!" <= c <= "~") for c in prefix):
        return "only printable ASCII without spaces is allowed (percent-encode the rest)"
    return None


def _check_root_path(prefix: str) -> str | None:
    if not prefix:
        return None
    if prefix.endswith("/"):
        return "give it without a trailing '/', such as '/api'"
    return _check_mount(prefix)


def _check_app_target(target: str) -> str | None:
    if not target:
        return None
    module, colon, attribute = target.partition(":")
    if not colon or not module or not attribute:
        return "give it as 'module:attribute', such as 'myproject.asgi:application'"
    return None


def _check_encodings(names: tuple[str, ...]) -> str | None:
    unknown = [name for name in names if name not in ("br", "zstd", "gzip")]
    return f"unknown codec {unknown[0]!r}; known: br, zstd, gzip" if unknown else None


def network_error(values: tuple[str, ...]) -> str | None:
    """Why one of `values` is not an address or a CIDR network, or None."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not an IP address or a CIDR network (such as '10.0.0.0/8' or '::1')"
    return None


def _range_check(low: int, high: int) -> Callable[[Any], str | None]:
    return lambda value: None if low <= value <= high else f"must be from {low} to {high}, got {value}"


_VALUE_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "static.compress_encodings": _check_encodings,
    "app.request_encodings": _check_encodings,
    "app.stream_gzip_level": _range_check(1, 9),
    "app.stream_brotli_quality": _range_check(0, 11),
    "app.stream_zstd_level": _range_check(1, 22),
    "static.gzip_level": _range_check(1, 9),
    "static.brotli_quality": _range_check(0, 11),
    "static.zstd_level": _range_check(1, 22),
    "server.listen": _check_listen,
    "server.admin": _check_admin,
    "server.workers": _check_workers,
    "server.server_header": _check_header_value,
    "server.proxy_protocol_from": network_error,
    "server.trusted_proxies": network_error,
    "static.index": _check_index,
    "static.mount": _check_mount,
    "app.target": _check_app_target,
    "app.mount": _check_mount,
    "app.root_path": _check_root_path,
}


def render_toml(config: Config) -> str:
    """The effective config as TOML that load_toml() reads back to the same Config."""
    lines: list[str] = []
    for section_name in SECTIONS:
        section = getattr(config, section_name)
        lines.append(f"[{section_name}]")
        for f in dataclasses.fields(section):
            lines.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
        lines.append("")
    return "\n".join(lines)


def _toml_char(char: str) -> str:
    if char in ('"', "\\"):
        return "\\" + char
    if (char < " " and char != "\t") or char == "\x7f":
        return f"\\u{ord(char):04x}"
    return char


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = "".join(_toml_char(c) for c in str(value))
    return f'"{escaped}"'
