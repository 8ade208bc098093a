"""TLS listeners against a real `ring3 serve`: configuration and startup errors, SNI, ALPN, resumption,
client certificates, what applications see, HTTP features over TLS, and hostile handshakes."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ResponseReader, RunningServer
from hostile.wire import wait_until
from ring3.config import ConfigError, build_config, parse_listen
from test_ledger import admin_url, mismatches, scrape, traced
from tls_kit import Certs, peer_names, serve_tls, tls_connect, tls_flags, tls_get

Start = Callable[..., RunningServer]


def run_cli(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ring3", *args], capture_output=True, text=True,
                           timeout=timeout)


# -- configuration ----------------------------------------------------------------------------------


def test_listen_options_parse() -> None:
    assert parse_listen("0.0.0.0:443 tls").tls
    assert parse_listen("[::1]:80 redirect-https").redirect_https
    assert parse_listen("unix:/run/a b.sock tls") == parse_listen("unix:/run/a b.sock tls")
    assert parse_listen("unix:/run/a b.sock tls").unix_path == "/run/a b.sock"
    assert not parse_listen("127.0.0.1:80 plain").tls
    for bad in ("127.0.0.1:443 ssl", "127.0.0.1:443 tls redirect-https", " tls", "127.0.0.1:1 tls plain"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_tls_listener_without_certificate_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"server": {"listen": ["127.0.0.1:0 tls"]}}, "site.toml")
    assert info.value.key == "tls.cert"


@pytest.mark.parametrize(("data", "key"), [
    ({"tls": {"cert": ["a.pem"], "key": []}}, "tls.key"),
    ({"server": {"listen": ["127.0.0.1:0"]}, "tls": {"cert": ["a.pem"], "key": ["a.key"]}}, "server.listen"),
    ({"server": {"listen": ["127.0.0.1:0 tls"]},
      "tls": {"cert": ["a.pem"], "key": ["a.key"], "verify_client": "required"}}, "tls.client_ca"),
])
def test_inconsistent_tls_settings_name_the_key(data: dict[str, dict[str, object]], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(data, "site.toml")
    assert info.value.key == key


def test_certificates_alone_listen_on_the_default_tls_address() -> None:
    config = build_config(None, "<defaults>", {("tls", "cert"): ["a.pem"], ("tls", "key"): ["a.key"]})
    assert config.server.listen == ("127.0.0.1:8443 tls",)


def test_tls_cert_on_the_command_line_makes_every_command_line_listener_tls(tmp_path: Path) -> None:
    result = run_cli("check-config", str(_toml(tmp_path, "")), "--listen", "127.0.0.1:1",
                     "--listen", "127.0.0.1:2 redirect-https", "--tls-cert", "x.pem", "--tls-key", "x.key")
    # The files do not exist: the listeners were understood, then the certificate was checked.
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "tls.cert" in result.stderr and "x.pem" in result.stderr


def test_plain_keeps_a_command_line_listener_plain_beside_tls_ones(certs: Certs, site: Path,
                                                                  ring3_process: Start) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0 plain",
                           "--access-log", "off", *tls_flags(certs))
    assert wait_until(lambda: sum("listening on" in line for line in server.stdout_lines) == 2, 5)
    secure, plain = [line.split()[-1] for line in server.stdout_lines if "listening on" in line]
    assert secure.startswith("https://") and plain.startswith("http://")
    with socket.create_connection(("127.0.0.1", int(plain.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert ResponseReader(sock).read()[2] == b"hello, world\n"


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ring3.toml"
    path.write_text(text)
    return path


def _expired_pair(certs: Certs, directory: Path) -> tuple[Path, Path]:
    import datetime

    from tls_kit import write_pair

    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    leaf = certs.ca.issue_cert("localhost", not_before=past, not_after=past + datetime.timedelta(days=1))
    pair = write_pair(leaf, directory, "expired")
    return pair.cert, pair.key


def _encrypted_key(certs: Certs, directory: Path, passphrase: bytes) -> Path:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(certs.main.key.read_bytes(), None)
    path = directory / "encrypted.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(passphrase)))
    return path


@pytest.mark.parametrize("fault", ["missing cert", "missing key", "unreadable key", "mismatch",
                                   "not pem", "encrypted without passphrase", "wrong passphrase"])
def test_bad_certificate_or_key_fails_startup_in_one_line(certs: Certs, tmp_path: Path, site: Path,
                                                         fault: str) -> None:
    cert, key = certs.main.cert, certs.main.key
    extra: list[str] = []
    if fault == "missing cert":
        cert = tmp_path / "nope.pem"
    elif fault == "missing key":
        key = tmp_path / "nope.key"
    elif fault == "unreadable key":
        key = tmp_path / "dir.key"
        key.mkdir()
    elif fault == "mismatch":
        key = certs.other.key
    elif fault == "not pem":
        cert = tmp_path / "garbage.pem"
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    else:
        key = _encrypted_key(certs, tmp_path, b"right horse")
        if fault == "wrong passphrase":
            password = tmp_path / "password"
            password.write_text("wrong horse\n")
            extra = ["--tls-key-password-file", str(password)]
    result = run_cli("serve", str(site), "--listen", "127.0.0.1:0", "--tls-cert", str(cert),
                     "--tls-key", str(key), *extra)
    assert result.returncode == 2, result
    assert result.stderr.startswith("ring3: config error: tls: tls."), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    named = cert if fault in ("missing cert", "not pem") else key
    assert str(named) in result.stderr


@pytest.mark.parametrize(("flags", "key"), [
    (["--tls-ciphers", "NO-SUCH-SUITE"], "tls.ciphers"),
    (["--tls-verify-client", "required", "--tls-client-ca", "/nonexistent/ca.pem"], "tls.client_ca"),
])
def test_bad_tls_settings_fail_startup_in_one_line(certs: Certs, site: Path, flags: list[str],
                                                   key: str) -> None:
    result = run_cli("serve", str(site), "--listen", "127.0.0.1:0", *tls_flags(certs), *flags)
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"ring3: config error: tls: {key}: "), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_key_with_a_passphrase_from_a_file_serves(certs: Certs, tmp_path: Path, site: Path,
                                                    ring3_process: Start) -> None:
    key = _encrypted_key(certs, tmp_path, b"right horse")
    password = tmp_path / "password"
    password.write_text("right horse\n")
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--tls-cert", str(certs.main.cert), "--tls-key", str(key),
                           "--tls-key-password-file", str(password))
    assert tls_get(server.port, certs.client_context())[2] == b"hello, world\n"


def test_an_expired_certificate_warns_and_still_serves(certs: Certs, tmp_path: Path, site: Path,
                                                       ring3_process: Start) -> None:
    cert, key = _expired_pair(certs, tmp_path)
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--tls-cert", str(cert), "--tls-key", str(key))
    context = certs.client_context()
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        tls_get(server.port, context)
    server.stop()
    assert "expired on 2020-01-02" in server.stderr()


# -- protocols, SNI, ALPN, resumption -----------------------------------------------------------------


def test_tls_12_and_13_are_served_and_older_versions_refused(certs: Certs, site: Path,
                                                            ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = certs.client_context(minimum_version=version, maximum_version=version)
        with tls_connect(server.port, context) as sock:
            assert sock.version() == version.name.replace("v1_", "v1.")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(certs.ca_file))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the very point: an outdated client
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL"):
        tls_connect(server.port, old)


def test_sni_picks_the_matching_certificate_exact_then_wildcard_else_the_default(
        certs: Certs, site: Path, ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs, pairs=("main", "other", "wild"))
    context = certs.client_context()
    with tls_connect(server.port, context, "other.test") as sock:
        assert peer_names(sock) == {"other.test"}
    with tls_connect(server.port, context, "a.wild.test") as sock:
        assert peer_names(sock) == {"*.wild.test"}
    context.check_hostname = False
    with tls_connect(server.port, context, "unknown.test") as sock:
        assert peer_names(sock) == {"localhost"}  # the first pair is the default


def test_sni_strict_refuses_an_unknown_name(certs: Certs, site: Path, ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs, "--tls-sni-strict", pairs=("main", "other"))
    context = certs.client_context()
    context.check_hostname = False
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        tls_connect(server.port, context, "unknown.test")
    with tls_connect(server.port, context, "other.test") as sock:
        assert peer_names(sock) == {"other.test"}


def test_alpn_prefers_h2_and_a_client_without_a_match_still_gets_http11(
        certs: Certs, site: Path, ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs)
    cases = ((["h2", "http/1.1"], "h2"), (["http/1.1", "h2"], "h2"), (["http/1.1"], "http/1.1"),
             (["spdy/3.1"], None), (None, None))
    for offered, chosen in cases:
        context = certs.client_context()
        if offered:
            context.set_alpn_protocols(offered)
        with tls_connect(server.port, context) as sock:
            assert sock.selected_alpn_protocol() == chosen
            if chosen == "h2":
                continue  # HTTP/2 over TLS: tests/test_h2_clients.py
            sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert ResponseReader(sock).read()[2] == b"hello, world\n"


def test_alpn_offers_no_h2_when_http2_is_off(certs: Certs, site: Path, ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs, "--no-http2")
    context = certs.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with tls_connect(server.port, context) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_returning_client_resumes_its_session(certs: Certs, site: Path, ring3_process: Start,
                                                version: ssl.TLSVersion) -> None:
    server = serve_tls(ring3_process, site, certs, "--admin", "127.0.0.1:0")
    context = certs.client_context(minimum_version=version, maximum_version=version)
    with tls_connect(server.port, context) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        ResponseReader(sock).read()  # TLS 1.3 tickets arrive after the handshake: read first
        session = sock.session
        assert not sock.session_reused
    assert session is not None
    with tls_connect(server.port, context, session=session) as sock:
        assert sock.session_reused
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert ResponseReader(sock).read()[2] == b"hello, world\n"
    metrics = scrape(admin_url(server))
    assert metrics['ring3_tls_handshakes_total{kind="full"}'] == 1
    assert metrics['ring3_tls_handshakes_total{kind="resumed"}'] == 1


def test_without_session_tickets_tls13_does_not_resume(certs: Certs, site: Path,
                                                       ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs, "--no-tls-session-tickets")
    context = certs.client_context(minimum_version=ssl.TLSVersion.TLSv1_3)
    with tls_connect(server.port, context) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        ResponseReader(sock).read()
        session = sock.session
    with tls_connect(server.port, context, session=session) as sock:
        assert not sock.session_reused


# -- HTTP over TLS ------------------------------------------------------------------------------------


def test_keep_alive_pipelining_range_conditional_and_replay_over_tls(certs: Certs, site: Path,
                                                                     ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs, "--admin", "127.0.0.1:0")
    request = b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with tls_connect(server.port, certs.client_context()) as sock:
        reader = ResponseReader(sock)
        for _ in range(4):  # repeats of the same bytes: the replay cache answers from the third
            sock.sendall(request)
            status, headers, body = reader.read()
            assert (status, body) == (200, b"hello, world\n")
        etag = headers[b"etag"]
        sock.sendall(request * 3)  # pipelined in one record
        assert [reader.read()[2] for _ in range(3)] == [b"hello, world\n"] * 3
        sock.sendall(b"GET /data.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=10-19\r\n\r\n")
        status, headers, body = reader.read()
        assert (status, body) == (206, bytes(range(10, 20)))
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: " + etag + b"\r\n\r\n")
        assert reader.read()[0] == 304
        sock.sendall(b"HEAD /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, headers, body = reader.read(head_only=True)
        assert (status, headers[b"content-length"], body) == (200, b"13", b"")
    assert scrape(admin_url(server))["ring3_responses_replayed_total"] >= 1


def test_a_large_file_reaches_a_slow_reader_whole(certs: Certs, site: Path, ring3_process: Start) -> None:
    payload = bytes(range(256)) * (24 * 1024 + 7)  # 6 MiB and a bit: many chunks and short sends
    (site / "big.bin").write_bytes(payload)
    server = serve_tls(ring3_process, site, certs, "--admin", "127.0.0.1:0")
    with tls_connect(server.port, certs.client_context(), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = bytearray()
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, _, received = bytes(received).partition(b"\r\n\r\n")
        body = bytearray(received)
        reads = 0
        while len(body) < len(payload):
            body += sock.recv(65536)
            reads += 1
            if reads % 64 == 0:
                time.sleep(0.01)  # let the server meet a full socket now and then
        assert b"content-length: %d" % len(payload) in head
        assert bytes(body) == payload
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")  # still in step
        assert ResponseReader(sock).read()[2] == b"hello, world\n"
    metrics = scrape(admin_url(server))
    assert metrics['ring3_bytes_sent_total{path="zero_copy"}'] == 0  # no sendfile through TLS
    assert metrics["ring3_bytes_encrypted_total"] >= len(payload)


def test_ledger_agrees_with_strace_over_tls(certs: Certs, site: Path, tmp_path: Path,
                                           ring3_process: Start) -> None:
    """OpenSSL makes no system call of its own: every recv and send under TLS is ring3's, counted,
    handshakes (full and resumed), files read in chunks and close_notify included."""
    (site / "300k.bin").write_bytes(bytes(range(256)) * 1200)
    server = serve_tls(ring3_process, site, certs, "--admin", "127.0.0.1:0")
    context = certs.client_context()

    def exercise() -> int:
        session = None
        for connection in range(6):
            with tls_connect(server.port, context, session=session) as sock:
                reader = ResponseReader(sock)
                for index in range(40):
                    path = ("/hello.txt", "/300k.bin", "/missing")[(index + connection) % 3]
                    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                    reader.read()
                session = sock.session
        return 240

    ledger, traced_calls, summary = traced(server, tmp_path, exercise)
    assert ledger["recv"] >= 240 and ledger["pread"] >= 80 and ledger["sendfile"] == 0
    found = mismatches(ledger, traced_calls)
    assert not found, "\n".join(found) + "\n" + summary


@pytest.mark.parametrize("request_bytes", [
    b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",  # close_notify rides along
    b"GET /data.bin HTTP/1.0\r\n\r\n",
    b"HEAD /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    b"GET /nowhere HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
])
def test_a_last_response_ends_with_close_notify(certs: Certs, site: Path, ring3_process: Start,
                                                request_bytes: bytes) -> None:
    server = serve_tls(ring3_process, site, certs)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with certs.client_context().wrap_socket(raw, server_hostname="localhost",
                                            suppress_ragged_eofs=False) as sock:
        sock.sendall(request_bytes)
        received = b""
        while chunk := sock.recv(65536):  # SSLEOFError if the connection ends without close_notify
            received += chunk
    status = int(received.split(b" ", 2)[1])
    assert status == (404 if b"nowhere" in request_bytes else 200)
    if b"data.bin" in request_bytes:
        assert received.endswith(bytes(range(256)) * 4)


def test_graceful_shutdown_sends_close_notify(certs: Certs, site: Path, ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock = certs.client_context().wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    with sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        ResponseReader(sock).read()
        server.process.send_signal(signal.SIGTERM)
        # A close without close_notify would raise SSLEOFError here (suppress_ragged_eofs=False).
        assert sock.recv(100) == b""
    assert server.stop() == 0


APP = '''
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": repr((scope["scheme"], sorted(scope["extensions"])))})
        await send({"type": "websocket.close"})
        return
    tls = scope["extensions"]["tls"]
    facts = repr((scope["scheme"], tls["tls_version"], tls["cipher_suite"], tls["client_cert_name"],
                  len(tls["client_cert_chain"]), tls["server_cert"][:27]))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": facts.encode()})
'''

WSGI_APP = '''
def app(environ, start_response):
    start_response("200 OK", [("content-type", "text/plain")])
    keys = ("wsgi.url_scheme", "HTTPS", "SSL_PROTOCOL", "SSL_CLIENT_S_DN")
    facts = [environ.get(key) for key in keys] + [environ.get("SSL_CLIENT_CERT", "")[:27]]
    return [repr(facts).encode()]
'''


def _app_server(ring3_process: Start, tmp_path: Path, certs: Certs, source: str, *flags: str
                ) -> RunningServer:
    (tmp_path / "tls_app.py").write_text(source)
    return ring3_process("--app", "tls_app:app", "--app-dir", str(tmp_path), "--listen", "127.0.0.1:0",
                         "--access-log", "off", *tls_flags(certs), *flags)


def _client_cert_context(certs: Certs, tmp_path: Path) -> ssl.SSLContext:
    context = certs.client_context()
    leaf = certs.ca.issue_cert("alice@example.test", common_name="alice", organization_name="Example",
                                organization_unit_name="Dev")
    from tls_kit import write_pair

    pair = write_pair(leaf, tmp_path, "alice")
    context.load_cert_chain(str(pair.cert), str(pair.key))
    return context


def test_asgi_sees_https_and_the_tls_extension_with_a_client_certificate(
        certs: Certs, tmp_path: Path, ring3_process: Start) -> None:
    server = _app_server(ring3_process, tmp_path, certs, APP, "--tls-verify-client", "optional",
                         "--tls-client-ca", str(certs.ca_file))
    status, _, body = tls_get(server.port, _client_cert_context(certs, tmp_path), "/")
    assert status == 200
    assert eval(body) == ("https", 0x0304, 0x1302, "CN=alice,OU=Dev,O=Example", 1,
                          "-----BEGIN CERTIFICATE-----")
    status, _, body = tls_get(server.port, certs.client_context(), "/")  # optional: none sent is fine
    assert eval(body)[3:5] == (None, 0)


def test_required_client_certificate_refuses_a_client_without_one(certs: Certs, tmp_path: Path,
                                                                  ring3_process: Start) -> None:
    server = _app_server(ring3_process, tmp_path, certs, APP, "--tls-verify-client", "required",
                         "--tls-client-ca", str(certs.ca_file))
    with pytest.raises((ssl.SSLError, ConnectionResetError, AssertionError)):
        # TLS 1.3 clients learn of the refusal on their first read.
        tls_get(server.port, certs.client_context(), "/")
    assert tls_get(server.port, _client_cert_context(certs, tmp_path), "/")[0] == 200


def test_wsgi_sees_https_and_the_client_certificate(certs: Certs, tmp_path: Path,
                                                    ring3_process: Start) -> None:
    server = _app_server(ring3_process, tmp_path, certs, WSGI_APP, "--tls-verify-client", "optional",
                         "--tls-client-ca", str(certs.ca_file))
    body = tls_get(server.port, _client_cert_context(certs, tmp_path), "/")[2]
    assert eval(body) == ["https", "on", "TLSv1.3", "CN=alice,OU=Dev,O=Example",
                          "-----BEGIN CERTIFICATE-----"]


# -- plain and redirect listeners beside tls ones -----------------------------------------------------


def test_a_config_file_mixes_plain_tls_and_redirect_listeners(certs: Certs, site: Path, tmp_path: Path,
                                                              ring3_process: Start) -> None:
    config = _toml(tmp_path, f'''
[server]
listen = ["127.0.0.1:0", "127.0.0.1:0 tls", "127.0.0.1:0 redirect-https"]
access_log = "off"
[static]
root = "{site}"
[tls]
cert = ["{certs.main.cert}"]
key = ["{certs.main.key}"]
''')
    server = ring3_process("--config", str(config))
    assert wait_until(lambda: sum("listening on" in line for line in server.stdout_lines) == 3, 5)
    urls = [line.split()[-1] for line in server.stdout_lines if "listening on" in line]
    plain, secure, redirect = urls
    assert plain.startswith("http://") and secure.startswith("https://")
    tls_port = int(secure.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", int(plain.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert ResponseReader(sock).read()[2] == b"hello, world\n"
    assert tls_get(tls_port, certs.client_context())[2] == b"hello, world\n"
    with socket.create_connection(("127.0.0.1", int(redirect.rsplit(":", 1)[1])), timeout=5) as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"GET /hello.txt?a=1&b=%20 HTTP/1.1\r\nHost: Example.TEST:8080\r\n\r\n")
        status, headers, _ = reader.read()
        assert status == 301
        assert headers[b"location"] == b"https://example.test:%d/hello.txt?a=1&b=%%20" % tls_port
        sock.sendall(b"POST /form HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 0\r\n\r\n")
        assert reader.read()[1][b"location"] == b"https://[::1]:%d/form" % tls_port
        sock.sendall(b"GET / HTTP/1.1\r\nHost: evil.test/@x\r\n\r\n")
        assert reader.read()[0] == 400


def test_a_plain_config_loads_no_tls_code(site: Path) -> None:
    """Nor any HTTP/2 code (nor the hpack library) while no client speaks HTTP/2."""
    code = """
import asyncio, socket, sys
from ring3.apps import build_site
from ring3.config import build_config
from ring3.server import Server

async def main():
    config = build_config(None, "<t>", {("server", "listen"): ["127.0.0.1:0"],
                                        ("static", "root"): sys.argv[1], ("server", "access_log"): "off"})
    server = Server(config, build_site(config, sys.argv[1]).handler)
    port = int(server.start()[0].rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /hello.txt HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
    assert (await reader.readuntil(b"hello, world\\n")).startswith(b"HTTP/1.1 200")
    writer.close()
    await server.shutdown(0)

asyncio.run(main())
print(sorted(name for name in sys.modules if name.startswith(("ring3.transport", "ring3.http2", "hpack"))))
"""
    result = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True,
                            timeout=30)
    assert result.stdout.strip() == "[]", result


# -- limits and bodies over TLS -------------------------------------------------------------------------


ECHO_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''


def test_a_large_request_body_is_decrypted_whole_and_echoed(certs: Certs, tmp_path: Path,
                                                            ring3_process: Start) -> None:
    server = _app_server(ring3_process, tmp_path, certs, ECHO_APP, "--max-body-size", "4m")
    payload = bytes(range(256)) * 8192  # 2 MiB: many records per read, reading paused and resumed
    with tls_connect(server.port, certs.client_context(), timeout=30) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(payload)
                     + payload)
        status, _, body = ResponseReader(sock, timeout=30).read()
        assert (status, body == payload) == (200, True)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000000\r\n\r\n")
        assert ResponseReader(sock).read()[0] == 413  # the limit holds over TLS too


def test_the_header_timeout_holds_after_the_handshake(certs: Certs, site: Path, ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs, "--header-timeout", "0.5")
    with tls_connect(server.port, certs.client_context()) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: lo")  # and never the rest
        started = time.monotonic()
        status = ResponseReader(sock).read()[0]
        assert status == 408
        assert time.monotonic() - started < 8
