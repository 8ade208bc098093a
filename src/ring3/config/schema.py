"""The one declarative config schema.

Every setting is a field of a frozen dataclass with a typed default and a doc string. The TOML loader, the
command-line flags and the reference page in docs/ are all generated from these classes, so no option is
spelled out twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ring3.files.compress import COMPRESSIBLE_TYPES

KiB = 1024
MiB = 1024 * KiB

Unit = Literal["", "bytes", "seconds"]


def setting(default: Any, doc: str, *, unit: Unit = "", minimum: float | None = None,
            choices: tuple[str, ...] = (), flag: str = "", number_too: bool = False) -> Any:
    """A config field: its default, its doc string, and what the loader checks (`number_too`: a text
    setting that takes a whole number too)."""
    metadata = {"doc": doc, "unit": unit, "minimum": minimum, "choices": choices, "flag": flag,
                "number_too": number_too}
    if isinstance(default, list | dict):
        raise TypeError("mutable defaults are not allowed; use a tuple")
    return field(default=default, metadata=metadata)


def flag_name(key: str, metadata: Any) -> str:
    """The command-line flag of a config key: its own if the schema names one, else --key-with-dashes."""
    return str(metadata.get("flag") or "--" + key.replace("_", "-"))


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerSection:
    """Listeners, identity and logging."""

    listen: tuple[str, ...] = setting(
        ("127.0.0.1:8000",),
        "Addresses to listen on: HOST:PORT, [IPv6]:PORT or unix:/path. Port 0 picks a free port. "
        "Option words may follow the address: 'tls' (HTTPS on it, with the certificates of [tls]) or "
        "'redirect-https' (plain HTTP answering every request with 301 to the same host, path and query "
        "over https, on the first tls listener's port), as in \"0.0.0.0:443 tls\". With --tls-cert on "
        "the command line, every --listen of the command line without an option word is tls; 'plain' "
        "keeps one plain HTTP. 'proxy_protocol' (nginx's word) makes a listener expect a PROXY protocol "
        "header (v1 or v2) first, before TLS on a tls listener; see proxy_protocol_from.",
        flag="--listen")
    admin: str = setting(
        "", "Admin listener (HOST:PORT): /metrics in Prometheus text format (every worker's ledger summed, "
        "and per-worker series), /healthz (200 while the process answers) and /readyz (200 while it "
        "serves; 503 while it starts or drains); empty for none. Keep it on loopback or a private "
        "network.", flag="--admin")
    workers: str = setting(
        "1", "Worker processes: a number, or 'auto' for one per CPU this process may run on. With more "
        "than one, a master process binds the listeners, starts the workers and replaces any that dies; "
        "it reloads on SIGHUP. 1 is a single process, as fast as ever, unless 'master' is on.",
        flag="--workers", number_too=True)
    master: bool = setting(
        False, "Run the master process even with one worker, for what it gives: reload on SIGHUP without "
        "a refused connection, a worker replaced if it dies, an upgrade on SIGUSR2.", flag="--master")
    worker_start_timeout: float = setting(
        60.0, "How long a new worker may take to be ready (its application started, its listeners "
        "accepting); past it a reload is given up and the old workers serve on.", unit="seconds",
        minimum=1)
    server_header: str = setting(
        "ring3", "Value of the Server response header; empty to send none.")
    access_log: str = setting(
        "-", "Where the access log goes, in Combined Log Format: '-' for stdout, a file path, or 'off'.",
        flag="--access-log")
    access_log_format: str = setting(
        "combined", "The access log's format: 'combined' (Combined Log Format, with the request id as a "
        "last quoted field where a site gives one, and after all 'upstream=ADDRESS upstream_time=SECONDS' "
        "for a proxied request) or 'json' (one JSON object per line).",
        choices=("combined", "json"), flag="--access-log-format")
    log_level: str = setting(
        "info", "Level of the error log on stderr.",
        choices=("debug", "info", "warning", "error", "critical"), flag="--log-level")
    loop: str = setting(
        "asyncio", "Event loop: 'asyncio' (the standard library's; the ledger counts its epoll calls) or "
        "'uvloop' (install ring3[uvloop]; its epoll calls are not counted).",
        choices=("asyncio", "uvloop"), flag="--loop")
    replay_cache_entries: int = setting(
        1024, "Whole responses remembered by the exact bytes of the request that got them (like "
        "HTTP.sys's response cache): a repeat of those bytes is answered without parsing or calling "
        "the handler, once the handler confirms the response still holds (a static file re-checked "
        "as its cache is). Hot static files only, for now. 0 turns it off.", minimum=0)
    replay_max_request: int = setting(
        4 * KiB, "Longest request (its whole bytes) the replay cache remembers.", unit="bytes",
        minimum=0)
    proxy_protocol: bool = setting(
        False, "Every listener of `listen` expects a PROXY protocol header (v1 or v2, as HAProxy's "
        "send-proxy and send-proxy-v2 write it) before the client's bytes, as the 'proxy_protocol' "
        "listen option asks of one; the connection's client address is then the header's source. "
        "Never on the admin listener.")
    proxy_protocol_from: tuple[str, ...] = setting(
        ("127.0.0.0/8", "::1"), "Addresses and CIDR networks a PROXY protocol listener accepts "
        "connections from (the load balancers); a connection from anywhere else is closed before a byte "
        "is read. A Unix socket's peer is always accepted.")
    trusted_proxies: tuple[str, ...] = setting(
        (), "Addresses and CIDR networks of the proxies whose X-Forwarded-For, X-Forwarded-Proto and "
        "Forwarded fields are believed: from a connection whose client (after the PROXY protocol, if any) "
        "is in one of them, they set the client address and scheme that logs, rules and applications "
        "see. Forwarded wins over X-Forwarded-* when both are there. Empty: believed from no one.")
    shutdown_grace: float = setting(
        10.0, "On SIGTERM, SIGINT or SIGQUIT, and for the old workers of a reload, how long in-flight "
        "responses may take to finish before the connections are closed.", unit="seconds", minimum=0)


@dataclass(frozen=True, kw_only=True, slots=True)
class LimitsSection:
    """Limits on what a client may send and how long it may take. Each maps to a status code."""

    # nginx large_client_header_buffers 8k; gunicorn limit_request_line 4094.
    max_request_line: int = setting(
        8 * KiB, "Longest request target (URI) accepted; longer gets 414.", unit="bytes", minimum=64)
    # nginx 4 x 8k; h11 16 KiB; gunicorn 100 fields x 8190.
    max_header_bytes: int = setting(
        16 * KiB, "Largest request head (request line and header fields); larger gets 431.",
        unit="bytes", minimum=256)
    # gunicorn limit_request_fields 100.
    max_header_count: int = setting(
        100, "Most header fields in one request; more gets 431.", minimum=1)
    # nginx client_max_body_size 1m.
    max_body_size: int = setting(
        1 * MiB, "Largest request body; larger gets 413 and the connection is closed.",
        unit="bytes", minimum=0)
    # nginx client_header_timeout 60s; ring3 is stricter against slowloris.
    header_timeout: float = setting(
        10.0, "Time allowed to receive a whole request head, from its first byte (or from the "
        "connection's opening); past it the client gets 408 and the connection is closed.",
        unit="seconds", minimum=0.01)
    # nginx client_body_timeout 60s.
    body_timeout: float = setting(
        30.0, "Longest wait between two reads of a request body; past it 408 and close.",
        unit="seconds", minimum=0.01)
    # nginx keepalive_timeout 75s; uvicorn 5s.
    keepalive_timeout: float = setting(
        15.0, "How long an idle keep-alive connection is kept open.", unit="seconds", minimum=0)
    # nginx keepalive_requests 1000.
    max_requests_per_connection: int = setting(
        1000, "Requests served on one connection before it is closed (Connection: close); on HTTP/2, "
        "streams, after which GOAWAY lets those begun finish.",
        minimum=1)
    # nginx worker_connections 512 (768 in Debian's config).
    max_connections: int = setting(
        10000, "Open client connections at most; at the limit ring3 stops accepting until one "
        "closes.", minimum=1)
    # nginx limit_conn (off unless configured); HAProxy's src_conn_cur tracking.
    max_connections_per_address: int = setting(
        0, "Open connections one client address may hold; more are closed as they are accepted. 0 for "
        "no limit (the default: behind a load balancer every connection comes from its address).",
        minimum=0)
    # nginx send_timeout 60s.
    send_timeout: float = setting(
        30.0, "Longest wait for a client to take more response bytes; past it the connection is "
        "dropped.", unit="seconds", minimum=0.01)
    # nginx: client_header_timeout (60s) covers the handshake; Caddy 10s (read_header).
    tls_handshake_timeout: float = setting(
        10.0, "Time allowed for a whole TLS handshake, from the connection's opening; past it the "
        "connection is closed.", unit="seconds", minimum=0.01)
    # HAProxy accept-proxy: timeout client; nginx: client_header_timeout (60s) covers it.
    proxy_protocol_timeout: float = setting(
        5.0, "Time allowed for a whole PROXY protocol header to arrive, from the connection's opening; "
        "past it the connection is closed.", unit="seconds", minimum=0.01)
    # nginx lingering_timeout 5s.
    lingering_timeout: float = setting(
        2.0, "After an error response, how long unread request bytes are drained before closing, "
        "so the client sees the response instead of a reset.", unit="seconds", minimum=0)


@dataclass(frozen=True, kw_only=True, slots=True)
class StaticSection:
    """The static file handler."""

    root: str = setting(
        "", "Directory to serve. Empty serves the built-in demo site.")
    index: tuple[str, ...] = setting(
        ("index.html",), "File names tried, in order, when a directory is requested.")
    dotfiles: bool = setting(
        False, "Serve files and directories whose name starts with a dot.")
    follow_symlinks_outside_root: bool = setting(
        False, "Serve files reached through symlinks that resolve outside the root.")
    sendfile_min_size: int = setting(
        16 * KiB, "Bodies at least this large go out with sendfile; smaller ones are read and "
        "joined to the headers in one send.", unit="bytes", minimum=0)
    cache_max_bytes: int = setting(
        32 * MiB, "Memory for the cache of small hot files (whole responses kept in memory); 0 turns "
        "it off. A file enters on its second request within 10 s.", unit="bytes", minimum=0)
    cache_max_file_size: int = setting(
        16 * KiB, "Largest file kept in the cache; keep it at most sendfile_min_size so that larger "
        "bodies still go out zero-copy.", unit="bytes", minimum=0)
    open_files_max: int = setting(
        1000, "Files larger than cache_max_file_size kept open for reuse (like nginx's open_file_cache "
        "max=1000); a hit then costs no open, stat or close. 0 turns it off.", minimum=0)
    cache_recheck: float = setting(
        1.0, "How often a cached file is checked (one stat) for changes on disk: a change is "
        "visible within this time.", unit="seconds", minimum=0)
    precompressed: bool = setting(
        True, "Serve a file's precompressed variant (FILE.br, FILE.zst, FILE.gz beside it) to clients "
        "whose Accept-Encoding takes it (br before zstd before gzip at equal q), with Content-Encoding, "
        "Vary and an ETag of its own; ranges apply to the variant. Known from each directory's names, "
        "listed at most once per cache_recheck, so a file without variants costs nothing more. Needs "
        "the file cache (cache_max_bytes or open_files_max). A variant older than its file is not served.")
    listing: bool = setting(
        False, "List a directory that has no index file (an HTML page sortable by name, size or time, "
        "with a filter; JSON for Accept: application/json), instead of answering 403.",
        flag="--listing")
    compress: bool = setting(
        True, "Compress static files of compressible types on the fly, once per file version, when the "
        "file cache admits them (in a worker thread; until then they go out as they are), and keep the "
        "results in memory within compress_cache_bytes. Static files carry no secrets, so BREACH does "
        "not apply to them.")
    compress_encodings: tuple[str, ...] = setting(
        ("br", "zstd", "gzip"), "Codecs for on-the-fly compression: gzip always works; br needs "
        "ring3[brotli] and zstd ring3[zstd] (reported at start when missing).")
    compress_types: tuple[str, ...] = setting(
        COMPRESSIBLE_TYPES, "Content-Type prefixes compressed on the fly.")
    compress_min_size: int = setting(
        256, "Smaller files are not compressed (the saving is less than a packet).", unit="bytes",
        minimum=0)
    compress_max_size: int = setting(
        64 * MiB, "Larger files are not compressed on the fly: precompress them (FILE.br, FILE.gz). Files "
        "above 1 MiB are compressed at brotli 9 and zstd 15, so that once per version takes seconds.",
        unit="bytes", minimum=0)
    compress_cache_bytes: int = setting(
        32 * MiB, "Memory for bodies compressed on the fly, beside cache_max_bytes; when it is full, "
        "further files go out as they are until entries leave the file cache. Compressed bodies larger "
        "than cache_max_file_size are kept on disk instead (compress_disk_bytes).", unit="bytes", minimum=0)
    compress_disk_bytes: int = setting(
        1024 * MiB, "Disk for large compressed bodies, kept in unlinked files in compress_dir (open, so "
        "they go out by sendfile, and gone when ring3 stops or the entry leaves the cache).",
        unit="bytes", minimum=0)
    compress_dir: str = setting(
        "", "Directory of those files; empty for the system's temporary directory ($TMPDIR, /tmp).")
    gzip_level: int = setting(9, "gzip level for on-the-fly compression (1 to 9).", minimum=1)
    brotli_quality: int = setting(11, "Brotli quality for on-the-fly compression (0 to 11).", minimum=0)
    zstd_level: int = setting(19, "zstd level for on-the-fly compression (1 to 22).", minimum=1)
    max_ranges: int = setting(
        16, "Most ranges honoured in one Range header; more (or overlapping ranges larger than "
        "the file) get the whole file with 200.", minimum=1)
    mount: str = setting(
        "/", "URL path prefix the static files are served under (the prefix is not part of the file "
        "path). With an application at '/', give the files their own prefix, such as '/static'.",
        flag="--static-mount")


@dataclass(frozen=True, kw_only=True, slots=True)
class AppSection:
    """A Python web application (ASGI 3 or WSGI) served next to the static files."""

    target: str = setting(
        "", "The application, as 'module:attribute' (the attribute may be dotted); empty for none.",
        flag="--app")
    factory: bool = setting(
        False, "The target is a callable that takes no arguments and returns the application.",
        flag="--factory")
    interface: str = setting(
        "auto", "How to call the application: 'asgi' (ASGI 3), 'wsgi' (PEP 3333), or 'auto': ASGI "
        "when it is a coroutine function (or its __call__ is), else WSGI.",
        choices=("auto", "asgi", "wsgi"), flag="--interface")
    app_dir: str = setting(
        ".", "Directory put first on sys.path before the application is imported.", flag="--app-dir")
    mount: str = setting(
        "/", "URL path prefix the application is served under; it is added to the ASGI root_path "
        "(WSGI SCRIPT_NAME) and the paths it gets still carry it.", flag="--mount")
    root_path: str = setting(
        "", "ASGI root_path (WSGI SCRIPT_NAME) for an application behind a proxy that strips a "
        "prefix: it is prepended to every path the application sees.", flag="--root-path")
    lifespan: str = setting(
        "auto", "ASGI lifespan protocol: 'on' (a startup failure stops the server), 'off', or 'auto' "
        "(used when the application supports it).", choices=("auto", "on", "off"), flag="--lifespan")
    wsgi_threads: int = setting(
        10, "Threads running WSGI requests; more requests wait for a free thread. 0 runs the "
        "application on the event loop's own thread, one request at a time after its whole body has "
        "arrived: no thread handoff, for applications that never block (no I/O, no sleeping).",
        minimum=0)
    websocket_max_message: int = setting(
        16 * MiB, "Largest WebSocket message accepted; a larger one closes the socket with 1009.",
        unit="bytes", minimum=1)
    websocket_ping_interval: float = setting(
        20.0, "Idle time after which a WebSocket is sent a ping; 0 for never.", unit="seconds",
        minimum=0)
    websocket_ping_timeout: float = setting(
        20.0, "How long a ping may go unanswered before the WebSocket is closed.", unit="seconds",
        minimum=0.01)
    websocket_compression: bool = setting(
        True, "Offer permessage-deflate to WebSocket clients that ask for it.")
    compress: bool = setting(
        False, "Compress the application's responses as it sends them (streamed: flushed at each piece "
        "it sends), for clients that accept br, zstd or gzip: compressible types only, never a response "
        "with its own Content-Encoding, Cache-Control: no-transform, a 206, or text/event-stream (unless "
        "compress_event_stream). Off by default: a page that mixes a secret with what an attacker sends "
        "can leak it through compressed sizes (BREACH).", flag="--app-compress")
    compress_event_stream: bool = setting(
        False, "Compress text/event-stream responses too (each event flushed).")
    stream_gzip_level: int = setting(6, "gzip level for streamed compression (1 to 9).", minimum=1)
    stream_brotli_quality: int = setting(4, "Brotli quality for streamed compression (0 to 11).", minimum=0)
    stream_zstd_level: int = setting(3, "zstd level for streamed compression (1 to 22).", minimum=1)
    request_encodings: tuple[str, ...] = setting(
        (), "Content-Encodings accepted on request bodies (gzip, br, zstd), decoded before the "
        "application reads them, within max_body_size; a body in any other coding gets 415.")


# Mozilla's "intermediate" profile (v5.7) for TLS 1.2; TLS 1.3's suites are OpenSSL's (all three are in
# the profile). The DHE suites apply only when DH parameters are loaded, which ring3 does not do.
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")


@dataclass(frozen=True, kw_only=True, slots=True)
class TLSSection:
    """Certificates and protocol settings of the listeners marked 'tls'."""

    cert: tuple[str, ...] = setting(
        (), "Certificate files (PEM: the certificate first, then its chain, as certbot's "
        "fullchain.pem). Paired in order with key; with several, SNI picks the certificate whose "
        "subjectAltName matches the requested name (exact, then wildcard), and the first is the "
        "default.", flag="--tls-cert")
    key: tuple[str, ...] = setting(
        (), "Private key files (PEM, ECDSA or RSA), one per cert, in the same order.", flag="--tls-key")
    key_password_file: str = setting(
        "", "File whose first line is the passphrase of the encrypted keys; empty for keys without "
        "one.", flag="--tls-key-password-file")
    sni_strict: bool = setting(
        False, "Refuse a handshake whose SNI name matches no certificate (unrecognized_name alert) "
        "instead of answering with the default certificate. Clients that send no name still get the "
        "default.", flag="--tls-sni-strict")
    min_version: str = setting(
        "1.2", "Oldest TLS version accepted ('1.2' or '1.3'); older ones are never offered.",
        choices=("1.2", "1.3"), flag="--tls-min-version")
    ciphers: str = setting(
        INTERMEDIATE_CIPHERS, "TLS 1.2 cipher suites, in OpenSSL's syntax (the default is Mozilla's "
        "intermediate profile). TLS 1.3 suites are OpenSSL's own.", flag="--tls-ciphers")
    session_tickets: bool = setting(
        True, "Issue session tickets (TLS 1.3 and 1.2) so a returning client skips the full handshake. "
        "The ticket keys live in the process and change when it restarts. Off, TLS 1.3 clients do not "
        "resume; TLS 1.2 clients still may, by session id, from this process's session cache.",
        flag="--tls-session-tickets")
    verify_client: str = setting(
        "off", "Client certificates (mutual TLS): 'off', 'optional' (verified when sent) or "
        "'required' (a handshake without a valid one fails). Needs client_ca.",
        choices=("off", "optional", "required"), flag="--tls-verify-client")
    client_ca: str = setting(
        "", "CA certificates (PEM) that client certificates must chain to.", flag="--tls-client-ca")


@dataclass(frozen=True, kw_only=True, slots=True)
class Http2Section:
    """HTTP/2: over TLS when the client's ALPN offers h2, and in cleartext (h2c) when a client opens
    with the HTTP/2 connection preface (prior knowledge). The SETTINGS ring3 announces and the limits
    that keep a connection's streams and frames bounded."""

    enabled: bool = setting(
        True, "Offer h2 by ALPN on the tls listeners (preferred to http/1.1).", flag="--http2")
    cleartext: bool = setting(
        True, "Take HTTP/2 with prior knowledge (h2c) on the plain listeners: the connection preface "
        "tells it from HTTP/1.1.", flag="--h2c")
    # nginx http2_max_concurrent_streams 128.
    max_concurrent_streams: int = setting(
        128, "Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); more are "
        "refused with RST_STREAM REFUSED_STREAM.", minimum=1)
    initial_window_size: int = setting(
        65535, "Request body bytes a client may send on a stream before the handler reads them "
        "(SETTINGS_INITIAL_WINDOW_SIZE): an app that does not read holds the upload back.",
        unit="bytes", minimum=1, flag="--h2-initial-window-size")
    connection_window_size: int = setting(
        1024 * KiB, "Request body bytes a client may send on all its streams together before they are "
        "read (the connection's flow-control window).", unit="bytes", minimum=65535)
    max_frame_size: int = setting(
        16 * KiB, "Largest frame payload accepted (SETTINGS_MAX_FRAME_SIZE; 16384 to 16777215); larger "
        "is a connection error FRAME_SIZE_ERROR.", unit="bytes", minimum=16384)
    # nginx: large_client_header_buffers 4 x 8k.
    max_header_list_size: int = setting(
        32 * KiB, "Largest request header list, measured as RFC 9113 does (name, value and 32 bytes "
        "per field; SETTINGS_MAX_HEADER_LIST_SIZE): larger gets 431. A header block whose compressed "
        "size passes it is a connection error ENHANCE_YOUR_CALM (the CONTINUATION flood).",
        unit="bytes", minimum=1024)
    header_table_size: int = setting(
        4096, "Size of the HPACK dynamic table the client may use for its requests "
        "(SETTINGS_HEADER_TABLE_SIZE).", unit="bytes", minimum=0)
    websockets: bool = setting(
        True, "Announce SETTINGS_ENABLE_CONNECT_PROTOCOL and take WebSockets over HTTP/2 (RFC 8441's "
        "extended CONNECT) for ASGI applications; off, browsers open their WebSockets over HTTP/1.1.")
    file_frames: str = setting(
        "read", "How DATA frames of a file leave on h2c: 'read' (one preadv reads many frames' payloads "
        "between their headers, sent in one call: a copy, few syscalls) or 'sendfile' (each frame's "
        "header with MSG_MORE, then its payload by sendfile: no copy, two syscalls a frame). Under TLS "
        "files are read, to be encrypted.", choices=("read", "sendfile"))
    control_frame_burst: int = setting(
        1000, "Frames that ask work without carrying a request forward (PING, SETTINGS, PRIORITY, "
        "empty DATA or CONTINUATION, a stream reset before its answer: Rapid Reset, a refused stream) "
        "a client may send in a burst; past the budget the connection ends with GOAWAY "
        "ENHANCE_YOUR_CALM.", minimum=1)
    control_frame_rate: float = setting(
        100.0, "How fast that budget refills, in frames per second.", minimum=0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """ring3's whole configuration."""

    server: ServerSection = field(default_factory=ServerSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    static: StaticSection = field(default_factory=StaticSection)
    app: AppSection = field(default_factory=AppSection)
    tls: TLSSection = field(default_factory=TLSSection)
    http2: Http2Section = field(default_factory=Http2Section)
    # The [[site]] tables (config/site_schema.py): virtual hosts and their locations. Empty: the one
    # site that [static] and [app] describe.
    sites: tuple[Any, ...] = ()


# Section name -> section class, in the order of Config's fields.
SECTIONS: dict[str, type[Any]] = {
    "server": ServerSection,
    "limits": LimitsSection,
    "static": StaticSection,
    "app": AppSection,
    "tls": TLSSection,
    "http2": Http2Section,
}
