"""A location's `proxy` from TOML: a URL string or a table, checked so that `ring3 check-config` catches
what serving would refuse (an upstream that does not parse, a hash key of no known kind, a header rule
that would touch framing)."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from ring3.config.loader import ConfigError
from ring3.config.proxy_schema import ProxySpec

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_EXPECT = re.compile(r"^\s*\d{3}(\s*-\s*\d{3})?(\s*,\s*\d{3}(\s*-\s*\d{3})?)*\s*$")
# Request fields the proxy writes itself: a request_headers rule may not set them.
_OWN_FIELDS = frozenset(("host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                         "te", "trailer", "proxy-connection", "expect"))


def proxy_from_url(source: str, key_path: str, url: str) -> ProxySpec:
    """`proxy = "http://HOST:PORT/path"` or `"unix:/path"` as the table it stands for."""
    if url.startswith("unix:"):
        return ProxySpec(upstreams=(url,))
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.netloc:
        raise ConfigError(source, key_path, f"{url!r}: give 'http://HOST:PORT[/path]' or 'unix:/path' "
                          "(TLS to upstreams is not built)")
    if parsed.query or parsed.fragment:
        raise ConfigError(source, key_path, f"{url!r}: no query or fragment in a proxy URL")
    netloc = parsed.netloc if ":" in parsed.netloc.rpartition("]")[2] else parsed.netloc + ":80"
    return ProxySpec(upstreams=(netloc,), uri=parsed.path)


def check_proxy(source: str, where: str, spec: ProxySpec) -> None:
    from ring3.config.site_loader import check_header_pairs
    from ring3.proxy.upstreams import parse_entry

    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(source, f"{where}.proxy.{key}" if key else f"{where}.proxy", reason)

    if not spec.upstreams:
        raise fail("upstreams", "give at least one upstream ('127.0.0.1:9000', 'unix:/run/app.sock')")
    names = set()
    for number, entry in enumerate(spec.upstreams, 1):
        try:
            parsed = parse_entry(entry)
        except ValueError as exc:
            raise fail(f"upstreams[{number}]", str(exc)) from None
        if parsed.address.name in names:
            raise fail(f"upstreams[{number}]", f"{parsed.address.name} is listed twice")
        names.add(parsed.address.name)
    if spec.uri and not spec.uri.startswith("/"):
        raise fail("uri", f"{spec.uri!r}: a path starts with '/'")
    key = spec.hash_key
    if key not in ("client", "uri") and not (key[:7] in ("header:", "cookie:") and _TOKEN.match(key[7:])):
        raise fail("hash_key", f"{key!r}: one of 'client', 'uri', 'header:NAME' or 'cookie:NAME'")
    if any(not (" " <= c <= "~") for c in spec.host):
        raise fail("host", "only printable ASCII is allowed")
    check_header_pairs(fail, "request_headers", spec.request_headers, _OWN_FIELDS,
                       "the proxy writes this field itself")
    if spec.health is not None:
        if not spec.health.path.startswith("/"):
            raise fail("health.path", f"{spec.health.path!r}: a path starts with '/'")
        if not _EXPECT.match(spec.health.expect):
            raise fail("health.expect", f"{spec.health.expect!r}: give '200', '200-399' or '200,204'")


def proxy_value(source: str, key_path: str, raw: Any,
                table: Callable[[str, str, type[Any], Any], Any]) -> Any:
    """The `proxy` key: a URL, or a table read by the site loader's `table`."""
    if isinstance(raw, str):
        return proxy_from_url(source, key_path, raw)
    spec = table(source, key_path, ProxySpec, raw)
    assert dataclasses.is_dataclass(spec)
    return spec


def expected_statuses(text: str) -> Callable[[int], bool]:
    """health.expect as a test of a status."""
    ranges = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        ranges.append((int(low), int(high or low)))
    return lambda status: any(low <= status <= high for low, high in ranges)
