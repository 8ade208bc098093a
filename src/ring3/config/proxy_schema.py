"""The schema of a location's `proxy`: a URL (`proxy = "http://127.0.0.1:9000"`, `"unix:/run/app.sock"`)
or a table with the upstream pool and how it is used. Every key has a default and a doc string; the
loader (site_loader.py) and the reference page are generated from these classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ring3.config.schema import setting

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class HealthSpec:
    """Active health checks (`health = { path = "/healthz", interval = "5s" }`): each upstream is asked
    GET `path` every `interval`; `fall` failures in a row take it out, `rise` successes bring it back."""

    path: str = setting("/", "The path asked (with the proxy's Host).")
    interval: float = setting(5.0, "Time between two checks of one upstream.", unit="seconds", minimum=0.05)
    timeout: float = setting(2.0, "A check that takes longer has failed.", unit="seconds", minimum=0.01)
    expect: str = setting(
        "200-399", "The statuses that pass: '200', '200-399', or a list such as '200,204'.")
    fall: int = setting(2, "Failed checks in a row that take an upstream out.", minimum=1)
    rise: int = setting(1, "Passed checks in a row that bring it back (also from an exclusion by max_fails: "
                        "passes counted from its start).", minimum=1)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProxySpec:
    """A reverse proxy to a pool of HTTP/1.1 upstreams (`proxy = { upstreams = [...], balance = ... }`)."""

    upstreams: tuple[str, ...] = setting(
        (), "The upstream servers: 'HOST:PORT', '[IPv6]:PORT', 'http://HOST:PORT' or 'unix:/path', each "
        "with options 'weight=N' (1 to 1000), 'max_fails=N', 'fail_timeout=10s' and 'backup' (used only "
        "when no other upstream is up). Host names are resolved once, at start.")
    uri: str = setting(
        "", "A path that replaces the location's prefix in what is sent upstream (nginx's proxy_pass "
        "with a URI: '/api/' with uri '/v2/' sends /api/users as /v2/users). Empty: the request target "
        "goes upstream as the client sent it. A URL's path gives it too: 'http://127.0.0.1:9000/v2/'.")
    balance: str = setting(
        "round_robin", "How an upstream is chosen: 'round_robin' (weighted, smooth), 'least_conn' (fewest "
        "requests in flight for its weight) or 'hash' (consistent hashing on hash_key: a key keeps its "
        "upstream while it is up, and only the keys of an upstream that goes move).",
        choices=("round_robin", "least_conn", "hash"))
    hash_key: str = setting(
        "client", "The key of balance = 'hash': 'client' (the client's address), 'uri', 'header:NAME' or "
        "'cookie:NAME'.")
    host: str = setting(
        "", "The Host sent upstream: empty passes the client's; '$proxy_host' sends the upstream's "
        "address; anything else is sent as given.")
    forwarded: bool = setting(
        True, "Send X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and Forwarded (RFC 7239) with "
        "the client's address, scheme and Host, replacing any the client sent (it could forge them).")
    request_headers: Pairs = setting(
        (), "Request headers for the upstream: 'name' = value sets, '+name' = value adds, '-name' = \"\" "
        "removes (the response's are the location's headers rule).")
    connect_timeout: float = setting(
        5.0, "Time to connect to an upstream; then the next one is tried (or 502).", unit="seconds",
        minimum=0.001)
    send_timeout: float = setting(
        60.0, "Time the upstream may take to accept more of the request (head or body).", unit="seconds",
        minimum=0.001)
    first_byte_timeout: float = setting(
        60.0, "Time from the request's end to the response's first byte (504 after it).", unit="seconds",
        minimum=0.001)
    read_timeout: float = setting(
        60.0, "Time the upstream may stay silent within a response body (the client's connection is "
        "then aborted) or, after an upgrade, both sides may.", unit="seconds", minimum=0.001)
    keepalive: int = setting(
        32, "Idle connections kept per upstream (0: a new connection per request).", minimum=0)
    keepalive_timeout: float = setting(
        60.0, "An idle upstream connection is closed after this long.", unit="seconds", minimum=0.001)
    keepalive_requests: int = setting(
        10000, "Requests one upstream connection carries before it is closed.", minimum=1)
    max_tries: int = setting(
        3, "Upstreams tried for one request: after a failed connect, a reset before the response, or a "
        "502/503/504 from the upstream before any byte went to the client; only for idempotent methods "
        "(never a POST, PATCH or LOCK whose body was sent).", minimum=1)
    retry_timeout: float = setting(
        10.0, "No new try starts this long after the request's first.", unit="seconds", minimum=0.0)
    max_fails: int = setting(
        1, "Failures (connect, timeout, a bad response) within fail_timeout that take an upstream out "
        "for fail_timeout (0: never; a lone upstream never is, as in nginx).", minimum=0)
    fail_timeout: float = setting(
        10.0, "The window of max_fails, and how long a failed upstream stays out.", unit="seconds",
        minimum=0.0)
    health: HealthSpec | None = setting(None, "Active health checks: { path, interval, timeout, expect, "
                                        "fall, rise }.")
    request_buffering: bool = setting(
        False, "Read the request body (up to request_buffer_size) before connecting upstream, as nginx's "
        "proxy_request_buffering, so a slow upload holds no upstream connection; a larger body is sent "
        "on as it comes, after the buffer.")
    request_buffer_size: int = setting(
        1024 * 1024, "The bound of request_buffering.", unit="bytes", minimum=0)
    max_header_bytes: int = setting(
        32 * 1024, "Largest response head an upstream may send (502 above it).", unit="bytes",
        minimum=256)
    max_header_count: int = setting(
        100, "Most header fields in an upstream's response head (502 above it).", minimum=1)
    max_informational: int = setting(
        8, "Most 1xx responses before the final one (a flood beyond it is 502).", minimum=0)
    splice: bool = setting(
        True, "Move response bodies of known length from the upstream socket to a cleartext HTTP/1.1 "
        "client by splice(2) through a pipe, so they never enter Python.")
    splice_min_size: int = setting(
        64 * 1024, "Smaller bodies are copied (splice's extra calls cost more than the copy).",
        unit="bytes", minimum=0)
