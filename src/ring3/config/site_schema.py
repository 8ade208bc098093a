"""The schema of `[[site]]` and `[[site.location]]`: virtual hosts, their locations, and the rules on them.

Like the flat sections of schema.py, every key is a field with a default and a doc string; the loader
(site_loader.py) and the reference page are generated from these classes. A location key left out is None
("not set"), so a location can inherit it from its site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ring3.config.proxy_schema import HealthSpec, ProxySpec
from ring3.config.schema import setting

Pairs = tuple[tuple[str, str], ...]  # a TOML table of strings, in file order


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthSpec:
    """HTTP basic authentication against an htpasswd file (`auth = { htpasswd = "...", realm = "..." }`)."""

    htpasswd: str = setting(
        "", "The htpasswd file, as Apache's htpasswd writes it: bcrypt (-B), SHA-256/512-crypt (-2, -5), "
        "APR1-MD5 (-m) or SHA-1 (-s) entries. Plaintext and DES-crypt entries are refused. Read at "
        "start.")
    realm: str = setting(
        "restricted", "The realm named in the 401's WWW-Authenticate challenge.")


@dataclass(frozen=True, kw_only=True, slots=True)
class RateLimitSpec:
    """A leaky bucket per key, as nginx's limit_req with nodelay (`rate_limit = { rate = "5/s", burst = 10
    }`): requests within the burst are served at once, beyond it they get 429 with Retry-After."""

    rate: str = setting(
        "", "Sustained rate per key: 'N/s' or 'N/m' (N a number).")
    burst: int = setting(
        0, "Requests above the rate a key may make at once before it is refused.", minimum=0)
    key: str = setting(
        "client", "What shares a bucket: 'client' (the client's address), 'host', 'location' (one "
        "bucket for every request of the location: given at site level, one per location), or "
        "'header:NAME' (a request header's value; requests without it share one bucket). Other keys "
        "given at site level share their buckets across the site's locations.")
    max_keys: int = setting(
        65536, "Buckets kept at most (memory stays bounded whatever the number of clients); when full, "
        "a bucket already drained, or else the least recently used, is dropped.", minimum=1)


@dataclass(frozen=True, kw_only=True, slots=True)
class RespondSpec:
    """A fixed answer (`respond = { status = 404, body = "no such site\\n" }`), as nginx's return."""

    status: int = setting(200, "The status code.", minimum=200)
    body: str = setting("", "The body (UTF-8).")
    content_type: str = setting("text/plain; charset=utf-8", "The Content-Type of a non-empty body.")


@dataclass(frozen=True, kw_only=True, slots=True)
class SiteTLSSpec:
    """The site's own certificate (`tls = { cert = "...", key = "..." }`): added to those of [tls], chosen
    by SNI for the site's names."""

    cert: str = setting("", "Certificate file (PEM, with its chain).")
    key: str = setting("", "Its private key (PEM).")


@dataclass(frozen=True, kw_only=True, slots=True)
class LocationSpec:
    """One `[[site.location]]`: a path pattern, one handler, and rules. A key left out is inherited from
    the site (the handler too: a location with only rules serves what the site serves)."""

    path: str = setting(
        "/", "What the location matches: '/prefix' (the longest matching prefix wins), '= /path' (exactly "
        "that path, first of all), '^~ /prefix' (a prefix that, when it is the longest, stops the regex "
        "search), '~ regex' or '~* regex' (case-insensitive), tried in file order after the prefixes. "
        "Paths are matched decoded and normalised; regexes are RE2 (linear time, no backreferences).")
    root: str | None = setting(
        None, "Serve static files from this directory; the whole request path is looked up in it (nginx's "
        "root).")
    alias: str | None = setting(
        None, "Serve static files from this directory, with the location's prefix replaced by it (nginx's "
        "alias: '/assets/' with alias '/srv/build/' serves /assets/app.js from /srv/build/app.js).")
    app: str | None = setting(
        None, "An ASGI or WSGI application, as 'module:attribute'. Locations naming the same target share "
        "one instance (one lifespan); the [app] section's settings apply to it. It sees the whole path.")
    redirect: str | None = setting(
        None, "Redirect to this URL or path; $uri, $args, $host, $scheme, $request_uri and a regex "
        "location's captures $1..$9 are replaced.")
    status: int | None = setting(
        None, "The redirect's status: 301 (the default), 302, 303, 307 or 308.")
    respond: RespondSpec | None = setting(None, "A fixed answer: { status, body, content_type }.")
    proxy: ProxySpec | None = setting(
        None, "A reverse proxy: a URL ('http://127.0.0.1:9000', with a path to replace the location's "
        "prefix: 'http://127.0.0.1:9000/v2/'; or 'unix:/run/app.sock'), or a table: { upstreams, balance, "
        "health, ... } (see proxy below).")
    index: tuple[str, ...] | None = setting(
        None, "File names tried when a directory is requested (default: [static] index).")
    try_files: tuple[str, ...] | None = setting(
        None, "Files tried in order before the 404 of a static location: '$uri' (the file itself), '$uri/' "
        "(the directory's index); the last entry is a fallback path routed again within the site "
        "('/index.html' for a single-page app) or '=CODE'.")
    dotfiles: bool | None = setting(
        None, "Serve names starting with a dot (default: [static] dotfiles).")
    listing: bool | None = setting(
        None, "List a directory without an index file (default: [static] listing).")
    compress: bool | None = setting(
        None, "Compression of what this location answers: static files on the fly (default: [static] "
        "compress, on) or an application's responses, streamed (default: [app] compress, off).")
    compress_encodings: tuple[str, ...] | None = setting(
        None, "Codecs for this location's compression (default: [static] compress_encodings).")
    compress_types: tuple[str, ...] | None = setting(
        None, "Content-Type prefixes compressed here (default: [static] compress_types).")
    compress_min_size: int | None = setting(
        None, "Smaller bodies are not compressed here (default: [static] compress_min_size).", unit="bytes",
        minimum=0)
    gzip_level: int | None = setting(
        None, "gzip level of static files compressed here (default: [static] gzip_level).", minimum=1)
    brotli_quality: int | None = setting(
        None, "Brotli quality of static files compressed here (default: [static] brotli_quality).",
        minimum=0)
    zstd_level: int | None = setting(
        None, "zstd level of static files compressed here (default: [static] zstd_level).", minimum=1)
    stream_gzip_level: int | None = setting(
        None, "gzip level of an application's responses here (default: [app] stream_gzip_level).",
        minimum=1)
    stream_brotli_quality: int | None = setting(
        None, "Brotli quality of an application's responses here (default: [app] stream_brotli_quality).",
        minimum=0)
    stream_zstd_level: int | None = setting(
        None, "zstd level of an application's responses here (default: [app] stream_zstd_level).",
        minimum=1)
    request_encodings: tuple[str, ...] | None = setting(
        None, "Content-Encodings accepted on request bodies here (default: [app] request_encodings, "
        "none: 415).")
    rewrite: tuple[str, ...] | None = setting(
        None, "Rules 'REGEX REPLACEMENT [FLAG]', tried in order on the path (nginx's rewrite). The "
        "replacement may use $1..$9, $uri, $args, $host, $scheme. FLAG: 'last' (the default: route the "
        "new path again), 'break' (stay in this location), 'redirect' (302) or 'permanent' (301); a "
        "replacement starting with 'http://', 'https://' or '$scheme' is a redirect (302 unless "
        "'permanent'), as in nginx. A replacement with '?' replaces the query; otherwise it is kept.")
    auth: AuthSpec | None = setting(None, "Basic authentication: { htpasswd, realm }.")
    allow: tuple[str, ...] | None = setting(
        None, "Client addresses or networks (CIDR) allowed; with allow set, all others get 403.")
    deny: tuple[str, ...] | None = setting(
        None, "Client addresses or networks (CIDR) refused with 403 (deny wins over allow); 'all' for every "
        "address.")
    headers: Pairs | None = setting(
        None, "Response headers: 'name' = value sets the field (replacing the handler's), '+name' = value "
        "adds one more, '-name' = \"\" removes it (Caddy's header directive). The framing fields "
        "(content-length, transfer-encoding, connection and the like) are ring3's and refused here.")
    max_body_size: int | None = setting(
        None, "Largest request body here (default: [limits] max_body_size); larger gets 413.",
        unit="bytes", minimum=0)
    error_pages: Pairs | None = setting(
        None, "Pages for ring3's own error responses: { 404 = \"/404.html\", \"500-599\" = \"/50x.html\" }, "
        "each a path routed within the site (its status stays) or a URL (302 to it). An application's "
        "own error responses are its own.")
    rate_limit: RateLimitSpec | None = setting(None, "A rate limit: { rate, burst, key, max_keys }.")
    request_id: bool | None = setting(
        None, "Give each request an X-Request-ID: the client's (1 to 128 letters, digits, '-', '_', '.') "
        "or a new random one; the application sees it, the response carries it, the access log shows it.")


# Location keys that name the handler: a location has at most one.
HANDLER_KEYS = ("root", "alias", "app", "redirect", "respond", "proxy")
# Location keys that configure a static handler.
STATIC_KEYS = ("index", "try_files", "dotfiles", "listing")


@dataclass(frozen=True, kw_only=True, slots=True)
class SiteSpec:
    """One `[[site]]`: the host names it answers for, and its locations. Location keys given at site level
    act as its '/' location, and its rules apply to every location that does not set them itself."""

    hosts: tuple[str, ...] = setting(
        (), "Host names: exact ('example.test'), wildcards ('*.example.test': any name below it), regexes "
        "('~^app[0-9]+\\.test$', RE2), or '*' for the default site, which takes every other Host. Matched "
        "case-insensitively, without the port: exact first, then the longest wildcard, then regexes in "
        "file order.")
    tls: SiteTLSSpec | None = setting(None, "The site's own certificate: { cert, key }.")
    access_log: str | None = setting(
        None, "This site's access log: '-' for stdout, a file path, or 'off' (default: [server] "
        "access_log).")
    access_log_format: str | None = setting(
        None, "'combined' or 'json' (default: [server] access_log_format).", choices=("combined", "json"))
    defaults: LocationSpec = setting(LocationSpec(), "The site-level location keys.")
    locations: tuple[LocationSpec, ...] = setting((), "The site's [[site.location]] tables, in file order.")


# The tables a key holds, for the loader and the reference page.
TABLES: dict[str, type[Any]] = {
    "auth": AuthSpec,
    "rate_limit": RateLimitSpec,
    "respond": RespondSpec,
    "tls": SiteTLSSpec,
    "proxy": ProxySpec,
    "health": HealthSpec,  # within proxy
}
# Tables that sit within another table, by the key that holds them.
NESTED_IN = {"health": "proxy"}

# Keys of later work, refused with a reason rather than as unknown.
NOT_YET: dict[str, str] = {}
