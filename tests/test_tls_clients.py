"""ring3 over TLS as real clients see it: curl, httpx, `openssl s_client`, the websockets library over wss,
headless Chromium and testssl.sh, each against a real `ring3 serve` process on loopback, with
certificates made for the test by trustme."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.sync.client import connect as ws_connect

from conftest import READY, RunningServer, start_ring3
from test_browser import CHROMIUM_FLAGS, chromium
from test_curl import run_curl

Start = Callable[..., RunningServer]
BIG = 5 * 1024 * 1024
HELLO = b"hello, world\n"
GET_HELLO = b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
# Cipher suites a TLS 1.2 handshake may end on: Mozilla's "intermediate" configuration.
MOZILLA_INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
}


def tool(*names: str) -> str:
    """The first of NAMES on PATH (scripts/test installs them all)."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(f"{' or '.join(names)} is missing: scripts/test installs it")


# -- certificates -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """A certificate chain and its private key, as files."""

    cert: Path
    key: Path

    def args(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]

    def spki_sha256(self) -> str:
        """Base64 SHA-256 of the leaf's SubjectPublicKeyInfo (what Chromium's SPKI allow-list takes)."""
        leaf = x509.load_pem_x509_certificate(self.cert.read_bytes())
        spki = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    default: Pair   # RSA, localhost and 127.0.0.1: what clients without SNI get
    ecdsa: Pair     # ECDSA, localhost and 127.0.0.1
    wildcard: Pair  # *.example.test
    exact: Pair     # www.example.test (also covered by the wildcard: the exact name must win)
    client: Pair    # a client certificate from the same CA

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def write_pair(ca: trustme.CA, directory: Path, name: str, *identities: str, common_name: str,
               key_type: trustme.KeyType = trustme.KeyType.ECDSA) -> Pair:
    leaf = ca.issue_cert(*identities, common_name=common_name, key_type=key_type)
    pair = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    pair.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(pair.key))
    return pair


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    return Pki(
        directory / "ca.pem",
        default=write_pair(ca, directory, "default", "localhost", "127.0.0.1", common_name="localhost",
                           key_type=trustme.KeyType.RSA),
        ecdsa=write_pair(ca, directory, "ecdsa", "localhost", "127.0.0.1", common_name="localhost"),
        wildcard=write_pair(ca, directory, "wildcard", "*.example.test", common_name="*.example.test"),
        exact=write_pair(ca, directory, "exact", "www.example.test", common_name="www.example.test"),
        client=write_pair(ca, directory, "client", "client.example.test", common_name="ring3 test client"),
    )


# -- the site and the servers -------------------------------------------------------------------------

INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>tls</title>
<link rel="stylesheet" href="/style.css"><script src="/app.js" defer></script></head>
<body><h1 id="title">ring3 over TLS</h1><img id="pic" src="/pic.svg" alt="pic">
<pre id="result">pending</pre></body></html>
"""
STYLE = "#title { color: rgb(1, 2, 3) }\n"
SCRIPT = """window.addEventListener("load", () => {
  const picture = document.getElementById("pic");
  document.getElementById("result").textContent = JSON.stringify({
    protocol: location.protocol,
    color: getComputedStyle(document.getElementById("title")).color,
    pictureWidth: picture.naturalWidth,
    resources: performance.getEntriesByType("resource").map((entry) => entry.name).sort(),
    nextHop: performance.getEntriesByType("navigation")[0].nextHopProtocol,
  });
});
"""
PICTURE = ('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30">'
           '<rect width="40" height="30"/></svg>\n')


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tls-site")
    (root / "index.html").write_text(INDEX)
    (root / "style.css").write_text(STYLE)
    (root / "app.js").write_text(SCRIPT)
    (root / "pic.svg").write_text(PICTURE)
    (root / "hello.txt").write_bytes(HELLO)
    (root / "data.bin").write_bytes(bytes(range(256)) * 64)  # 16 KiB
    (root / "big.bin").write_bytes(os.urandom(BIG))
    return root


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tls_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One TLS listener with three certificates: the RSA default, a wildcard and an exact name."""
    server = start_ring3([str(tls_site), "--listen", "127.0.0.1:0", "--access-log", "off",
                          *pki.default.args(), *pki.wildcard.args(), *pki.exact.args()],
                         tmp_path_factory.mktemp("tls-server"))
    yield server
    assert server.stop() == 0, server.stderr()


def listener_urls(server: RunningServer, count: int, timeout: float = 5.0) -> list[str]:
    """The URLs of the first COUNT readiness lines, in the order printed."""
    deadline = time.monotonic() + timeout
    while True:
        urls = [match.group(1) for line in list(server.stdout_lines) if (match := READY.search(line))]
        if len(urls) >= count or time.monotonic() > deadline:
            assert len(urls) >= count, (server.stdout_lines, server.stderr())
            return urls
        time.sleep(0.05)


def test_readiness_line_says_https(tls_server: RunningServer) -> None:
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+", tls_server.url), tls_server.url


# -- 1. curl --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def curl() -> str:
    return tool("curl")


def test_curl_get(curl: str, pki: Pki, tls_server: RunningServer, tls_site: Path, tmp_path: Path) -> None:
    for name in ("hello.txt", "data.bin"):
        out = tmp_path / name
        result = run_curl(curl, "-v", "-s", "--cacert", str(pki.ca_file), "-o", str(out),
                          "-w", "%{http_code} %{scheme}", f"{tls_server.url}/{name}")
        stderr = result.stderr.decode(errors="replace")
        assert result.stdout == b"200 HTTPS", stderr
        assert out.read_bytes() == (tls_site / name).read_bytes()
        # curl offers h2 and http/1.1: ring3 prefers h2 and speaks it.
        assert re.search(r"ALPN.*server accepted.*h2", stderr), stderr
        assert re.search(r"SSL connection using TLSv1\.3", stderr), stderr
        assert re.search(r"^< HTTP/2 200\s*$", stderr, re.MULTILINE), stderr
    http11 = run_curl(curl, "-v", "-s", "--http1.1", "--cacert", str(pki.ca_file), "-o", "/dev/null",
                      f"{tls_server.url}/hello.txt").stderr.decode(errors="replace")
    assert re.search(r"ALPN.*server accepted.*http/1\.1", http11), http11
    assert re.search(r"^< HTTP/1\.1 200 OK\r?$", http11, re.MULTILINE), http11


def test_curl_reuses_the_tls_connection(curl: str, pki: Pki, tls_server: RunningServer) -> None:
    result = run_curl(curl, "-v", "-s", "--cacert", str(pki.ca_file), "-o", "/dev/null", "-o", "/dev/null",
                      f"{tls_server.url}/hello.txt", f"{tls_server.url}/data.bin")
    stderr = result.stderr.decode(errors="replace")
    assert stderr.count("Connected to ") == 1, stderr
    assert stderr.count("SSL connection using") == 1, stderr  # one handshake for both
    assert re.search(r"Re-using existing connection", stderr), stderr
    assert len(re.findall(r"^< HTTP/2 200\s*$", stderr, re.MULTILINE)) == 2, stderr


def test_curl_range(curl: str, pki: Pki, tls_server: RunningServer, tls_site: Path, tmp_path: Path) -> None:
    big = (tls_site / "big.bin").read_bytes()
    for first, last in ((0, 99), (1_000_000, 2_999_999)):  # a small slice, and one from inside a big file
        out = tmp_path / f"range-{first}"
        result = run_curl(curl, "-s", "--cacert", str(pki.ca_file), "-r", f"{first}-{last}",
                          "-o", str(out), "-w", "%{http_code}", f"{tls_server.url}/big.bin")
        assert result.stdout == b"206"
        assert out.read_bytes() == big[first:last + 1]


def test_curl_head_then_get_on_one_connection(curl: str, pki: Pki, tls_server: RunningServer,
                                              tmp_path: Path) -> None:
    # A HEAD whose response carried a body would corrupt the GET that follows on the same connection.
    out = tmp_path / "after-head"
    result = run_curl(curl, "-v", "-s", "--cacert", str(pki.ca_file), "-I", f"{tls_server.url}/big.bin",
                      "--next", "-v", "-s", "--cacert", str(pki.ca_file), "-o", str(out),
                      f"{tls_server.url}/hello.txt")
    head = result.stdout.decode()
    stderr = result.stderr.decode(errors="replace")
    assert re.match(r"HTTP/2 200 \r\n", head), head
    assert re.search(rf"^content-length: {BIG}\r$", head, re.MULTILINE | re.IGNORECASE), head
    assert "Re-using existing connection" in stderr, stderr
    assert out.read_bytes() == HELLO


def test_plain_http_to_the_tls_port(curl: str, pki: Pki, tls_server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "plain"
    result = run_curl(curl, "-s", "-o", str(out), "-w", "%{http_code}",
                      f"http://127.0.0.1:{tls_server.port}/hello.txt")
    assert result.stdout == b"400"
    body = out.read_text()
    assert re.search(r"plain HTTP", body, re.IGNORECASE), body
    assert re.search(r"HTTPS port", body, re.IGNORECASE), body
    # and TLS on the same port is unharmed
    result = run_curl(curl, "-s", "--cacert", str(pki.ca_file), f"{tls_server.url}/hello.txt")
    assert result.stdout == HELLO


# -- 2. httpx -------------------------------------------------------------------------------------------


def test_httpx_requests_share_one_connection(pki: Pki, tls_server: RunningServer, tls_site: Path) -> None:
    client_ports = set()
    with httpx.Client(verify=pki.context(), timeout=10) as client:
        for name in ("hello.txt", "data.bin", "index.html", "hello.txt", "style.css"):
            response = client.get(f"{tls_server.url}/{name}")
            assert response.status_code == 200
            assert response.http_version == "HTTP/1.1"
            assert response.content == (tls_site / name).read_bytes()
            stream = response.extensions["network_stream"]
            tls = stream.get_extra_info("ssl_object")
            assert tls.version() == "TLSv1.3"
            assert tls.selected_alpn_protocol() == "http/1.1"
            client_ports.add(stream.get_extra_info("client_addr")[1])
    assert len(client_ports) == 1, client_ports


def test_httpx_large_file(pki: Pki, tls_server: RunningServer, tls_site: Path) -> None:
    expected = hashlib.sha256((tls_site / "big.bin").read_bytes()).hexdigest()
    with httpx.Client(verify=pki.context(), timeout=30) as client:
        for _ in range(2):  # the second from ring3's open-file cache
            digest = hashlib.sha256()
            with client.stream("GET", f"{tls_server.url}/big.bin") as response:
                assert response.status_code == 200
                assert response.headers["content-length"] == str(BIG)
                for chunk in response.iter_bytes():
                    digest.update(chunk)
            assert digest.hexdigest() == expected


# -- 3. openssl s_client --------------------------------------------------------------------------------


def s_client(port: int, pki: Pki, *args: str) -> subprocess.CompletedProcess[str]:
    """`openssl s_client` asks for hello.txt and waits until the server closes; stdout and stderr together."""
    return subprocess.run(
        [tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.ca_file),
         "-ign_eof", *args],
        input=GET_HELLO.decode(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace", timeout=20, check=False)


def assert_served(result: subprocess.CompletedProcess[str], protocol: str) -> None:
    """A verified handshake on PROTOCOL, hello.txt in the answer, and a clean TLS close (close_notify)."""
    out = result.stdout
    assert re.search(rf"^(New|Reused), {re.escape(protocol)}, Cipher is ", out, re.MULTILINE), out
    assert "Verify return code: 0 (ok)" in out, out
    assert "HTTP/1.1 200 OK" in out, out
    assert HELLO.decode() in out, out
    assert result.returncode == 0, out  # an exit without close_notify shows as "unexpected eof"


def cipher(out: str) -> str:
    match = re.search(r"^(?:New|Reused), \S+, Cipher is (\S+)$", out, re.MULTILINE)
    assert match, out
    return match.group(1)


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_s_client_versions(pki: Pki, tls_server: RunningServer, version: str) -> None:
    result = s_client(tls_server.port, pki, version)
    protocol = {"-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}[version]
    assert_served(result, protocol)
    if protocol == "TLSv1.2":
        assert cipher(result.stdout) in MOZILLA_INTERMEDIATE_TLS12, result.stdout
    else:
        assert cipher(result.stdout).startswith("TLS_"), result.stdout


@contextmanager
def permissive_tls_server(pair: Pair) -> Iterator[int]:
    """A Python TLS server that still accepts TLS 1.0 and 1.1: the control that shows this machine's
    openssl can speak them, so that ring3 refusing them is ring3's doing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(pair.cert, pair.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                conn.settimeout(5)
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(65536)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n" + HELLO)
                    tls.unwrap()
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.parametrize(("version", "protocol"), [("-tls1_1", "TLSv1.1"), ("-tls1", "TLSv1")])
def test_s_client_old_versions_refused(pki: Pki, tls_server: RunningServer, version: str,
                                       protocol: str) -> None:
    legacy = ("-cipher", "DEFAULT:@SECLEVEL=0")  # the client's own policy would refuse them otherwise
    with permissive_tls_server(pki.default) as control_port:
        control = s_client(control_port, pki, version, *legacy)
    assert re.search(rf"Protocol\s*: {re.escape(protocol)}$", control.stdout, re.MULTILINE), control.stdout
    assert "HTTP/1.1 200 OK" in control.stdout, control.stdout
    result = s_client(tls_server.port, pki, version, *legacy)
    assert result.returncode != 0, result.stdout
    assert "alert protocol version" in result.stdout, result.stdout
    assert "HTTP/1.1" not in result.stdout, result.stdout
    assert_served(s_client(tls_server.port, pki, "-tls1_3"), "TLSv1.3")  # still serving


def subject(out: str) -> str:
    match = re.search(r"^subject=(.*)$", out, re.MULTILINE)
    assert match, out
    return match.group(1)


@pytest.mark.parametrize(("servername", "common_name"), [
    ("www.example.test", "www.example.test"),  # exact beats the wildcard that also matches
    ("api.example.test", "*.example.test"),
    ("a.b.example.test", "localhost"),         # a wildcard covers one label only: the default
    ("unknown.test", "localhost"),
    (None, "localhost"),                       # no SNI at all
])
def test_s_client_sni_picks_the_certificate(pki: Pki, tls_server: RunningServer, servername: str | None,
                                            common_name: str) -> None:
    name_args = ["-servername", servername] if servername else ["-noservername"]
    # the chain must verify for the name the certificate was picked for
    verify_name = "localhost" if common_name == "localhost" or servername is None else servername
    result = s_client(tls_server.port, pki, *name_args, "-verify_hostname", verify_name,
                      "-verify_return_error")
    assert subject(result.stdout).endswith(f"CN = {common_name}"), result.stdout
    assert_served(result, "TLSv1.3")


def test_s_client_sni_strict_refuses_unknown_names(pki: Pki, tls_site: Path, ring3_process: Start) -> None:
    server = ring3_process(str(tls_site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           *pki.ecdsa.args(), *pki.exact.args(), "--tls-sni-strict")
    known = s_client(server.port, pki, "-servername", "www.example.test",
                     "-verify_hostname", "www.example.test", "-verify_return_error")
    assert subject(known.stdout).endswith("CN = www.example.test"), known.stdout
    assert_served(known, "TLSv1.3")
    unknown = s_client(server.port, pki, "-servername", "unknown.test")
    assert unknown.returncode != 0, unknown.stdout
    assert "no peer certificate available" in unknown.stdout, unknown.stdout
    assert re.search(r"unrecognized name|alert handshake failure", unknown.stdout), unknown.stdout
    assert "HTTP/1.1" not in unknown.stdout, unknown.stdout


@pytest.mark.parametrize("offer", [None, "http/1.1", "spdy/3.1,http/1.1"])
def test_s_client_alpn_http11(pki: Pki, tls_server: RunningServer, offer: str | None) -> None:
    result = s_client(tls_server.port, pki, *(["-alpn", offer] if offer else []))
    expected = "ALPN protocol: http/1.1" if offer else "No ALPN negotiated"
    assert expected in result.stdout, result.stdout
    assert_served(result, "TLSv1.3")


@pytest.mark.parametrize("offer", ["h2", "h2,http/1.1", "http/1.1,h2"])
def test_s_client_alpn_h2(pki: Pki, tls_server: RunningServer, offer: str) -> None:
    """ALPN prefers h2 whatever the client's order (RFC 7301 3.2: the server selects)."""
    result = s_client(tls_server.port, pki, "-alpn", offer)
    assert "ALPN protocol: h2" in result.stdout, result.stdout
    # What s_client then sends is HTTP/1.1 text, not the HTTP/2 preface: no answer in HTTP/1.1.
    assert "HTTP/1.1 200" not in result.stdout, result.stdout


@pytest.mark.parametrize(("version", "protocol"), [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")])
def test_s_client_session_resumption(pki: Pki, tls_server: RunningServer, tmp_path: Path, version: str,
                                     protocol: str) -> None:
    session = tmp_path / "session.pem"
    first = s_client(tls_server.port, pki, version, "-sess_out", str(session))
    assert_served(first, protocol)
    assert f"New, {protocol}," in first.stdout, first.stdout
    assert session.stat().st_size > 0
    second = s_client(tls_server.port, pki, version, "-sess_in", str(session))
    assert_served(second, protocol)
    assert f"Reused, {protocol}," in second.stdout, second.stdout


# -- 4. websockets over wss, and what applications see ------------------------------------------------

APP = '''
import json


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    tls = scope.get("extensions", {}).get("tls")
    seen = json.dumps({"scheme": scope["scheme"], "tls": tls is not None,
                       "tls_version": tls.get("tls_version") if tls else None})
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": seen.encode()})
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": seen})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


def wsgi(environ, start_response):
    seen = {"url_scheme": environ["wsgi.url_scheme"], "https": environ.get("HTTPS")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]
'''


@pytest.fixture
def apps(tmp_path: Path) -> Path:
    directory = tmp_path / "apps"
    directory.mkdir()
    (directory / "tlsapp.py").write_text(textwrap.dedent(APP))
    return directory


def serve_app(ring3_process: Start, pki: Pki, apps: Path, target: str) -> RunningServer:
    return ring3_process("--app", target, "--app-dir", str(apps), "--listen", "127.0.0.1:0",
                         "--access-log", "off", *pki.ecdsa.args())


def test_websocket_over_wss(pki: Pki, apps: Path, ring3_process: Start) -> None:
    server = serve_app(ring3_process, pki, apps, "tlsapp:app")
    wss = server.url.replace("https://", "wss://", 1) + "/echo"
    payload = os.urandom(200_000)  # many TLS records each way
    with ws_connect(wss, ssl=pki.context(), open_timeout=10, max_size=2**20) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"scheme": "wss", "tls": True, "tls_version": 0x0304}
        for message in ("héllo over TLS", payload, "again"):
            ws.send(message)
            assert ws.recv(timeout=10) == message
    with httpx.Client(verify=pki.context(), timeout=10) as client:
        seen = client.get(server.url + "/scope").json()
    assert seen == {"scheme": "https", "tls": True, "tls_version": 0x0304}
    assert server.stop() == 0, server.stderr()


def test_wsgi_environ_over_tls(pki: Pki, apps: Path, ring3_process: Start) -> None:
    server = serve_app(ring3_process, pki, apps, "tlsapp:wsgi")
    with httpx.Client(verify=pki.context(), timeout=10) as client:
        seen = client.get(server.url + "/environ").json()
    assert seen == {"url_scheme": "https", "https": "on"}


# -- 5. headless Chromium -------------------------------------------------------------------------------


def test_chromium_loads_the_page_and_its_assets_over_https(pki: Pki, tls_site: Path, ring3_process: Start,
                                                           tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server = ring3_process(str(tls_site), "--listen", "127.0.0.1:0", "--access-log", str(log),
                           *pki.ecdsa.args())
    # Trust exactly this leaf (by its public key), not "any certificate".
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         f"--ignore-certificate-errors-spki-list={pki.ecdsa.spki_sha256()}", "--virtual-time-budget=10000",
         "--dump-dom", server.url + "/"],
        capture_output=True, text=True, timeout=90, check=False)
    match = re.search(r'<pre id="result">(.*?)</pre>', result.stdout, re.DOTALL)
    assert match, (result.stdout[-2000:], result.stderr[-2000:])
    seen = json.loads(html.unescape(match.group(1)))
    assert seen["protocol"] == "https:", seen
    assert seen["color"] == "rgb(1, 2, 3)", seen  # the stylesheet applied
    assert seen["pictureWidth"] == 40, seen       # the image decoded
    assert seen["nextHop"] == "h2", seen  # ALPN: HTTP/2 over TLS
    assert seen["resources"] == [f"{server.url}/{name}" for name in ("app.js", "pic.svg", "style.css")], seen
    assert server.stop() == 0, server.stderr()
    served = log.read_text()
    for path in ("/", "/style.css", "/app.js", "/pic.svg"):
        assert re.search(rf'"GET {re.escape(path)} HTTP/2\.0" 200 ', served), served


# -- 6. testssl.sh --------------------------------------------------------------------------------------


def test_testssl_finds_nothing_weak(pki: Pki, tls_server: RunningServer, tmp_path: Path) -> None:
    """Protocols (-p), cipher categories (-s) and the vulnerability checks (-U): about 25 s on loopback.
    The full run, for a person (a few minutes):
        testssl --color 0 --jsonfile full.json 127.0.0.1:PORT
    """
    report = tmp_path / "testssl.json"
    result = subprocess.run(
        [tool("testssl", "testssl.sh"), "--quiet", "--color", "0", "--warnings", "off",
         "--jsonfile", str(report), "-p", "-s", "-U", f"127.0.0.1:{tls_server.port}"],
        capture_output=True, text=True, timeout=100, check=False)
    text = result.stdout + result.stderr
    findings = {entry["id"]: entry for entry in json.loads(report.read_text())}
    expected = {
        "SSLv2": "not offered", "SSLv3": "not offered", "TLS1": "not offered", "TLS1_1": "not offered",
        "TLS1_2": "offered", "TLS1_3": "offered with final", "ALPN": "http/1.1",
        "cipherlist_NULL": "not offered", "cipherlist_aNULL": "not offered",
        "cipherlist_EXPORT": "not offered", "cipherlist_LOW": "not offered",
        "cipherlist_3DES_IDEA": "not offered", "cipherlist_AVERAGE": "not offered",  # obsolete CBC
        "cipherlist_STRONG": "offered",
    }
    assert {key: findings.get(key, {}).get("finding") for key in expected} == expected, text
    vulnerabilities = ("heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego", "secure_client_renego",
                       "CRIME_TLS", "BREACH", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN",
                       "LOGJAM", "BEAST", "LUCKY13", "RC4")
    assert set(vulnerabilities) <= set(findings), sorted(findings)
    bad = {key: entry for key, entry in findings.items() if entry["severity"] not in ("OK", "INFO")}
    assert not bad, bad
    assert "VULNERABLE" not in text, text
    assert result.returncode == 0, text


# -- the config file: listener words, [tls], [limits] ---------------------------------------------------


def write_config(path: Path, root: Path, listen: list[str], **sections: dict[str, object]) -> Path:
    """A ring3.toml serving ROOT on LISTEN (access log off), with more SECTIONS (JSON values are TOML)."""
    values: dict[str, dict[str, object]] = {
        "server": {"listen": listen, "access_log": "off"}, "static": {"root": str(root)}, **sections}
    lines = []
    for section, keys in values.items():
        lines += [f"[{section}]", *(f"{key} = {json.dumps(value)}" for key, value in keys.items()), ""]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def config_server(pki: Pki, tls_site: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[RunningServer, str, str]]:
    """A config file with a TLS listener (TLS 1.3 only, an encrypted key, a 1 s handshake timeout) and a
    redirect-https listener. Yields the server, its https URL and its http URL."""
    directory = tmp_path_factory.mktemp("tls-config")
    key = serialization.load_pem_private_key(pki.ecdsa.key.read_bytes(), password=None)
    encrypted = directory / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"s3cret pass")))
    (directory / "password").write_text("s3cret pass\n")
    listen = ["127.0.0.1:0 tls", "127.0.0.1:0 redirect-https"]
    config = write_config(directory / "ring3.toml", tls_site, listen, limits={"tls_handshake_timeout": 1},
                          tls={"cert": [str(pki.ecdsa.cert)], "key": [str(encrypted)],
                               "key_password_file": str(directory / "password"), "min_version": "1.3"})
    server = start_ring3(["--config", str(config)], directory)
    urls = listener_urls(server, 2)
    https = next(url for url in urls if url.startswith("https://"))
    plain = next(url for url in urls if url.startswith("http://"))
    yield server, https, plain
    assert server.stop() == 0, server.stderr()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_config_min_version_13(pki: Pki, config_server: tuple[RunningServer, str, str]) -> None:
    _, https, _ = config_server
    assert_served(s_client(port_of(https), pki, "-tls1_3"), "TLSv1.3")  # the encrypted key was loaded
    refused = s_client(port_of(https), pki, "-tls1_2")
    assert refused.returncode != 0, refused.stdout
    assert "alert protocol version" in refused.stdout, refused.stdout


def test_config_redirect_https(curl: str, config_server: tuple[RunningServer, str, str]) -> None:
    _, https, plain = config_server
    # to the first tls listener's port, path and query kept, whatever the method
    for method in (["-X", "GET"], ["-I"], ["-X", "POST", "-d", "a=b"]):
        result = run_curl(curl, "-s", "-o", "/dev/null", *method, "-w", "%{http_code} %{redirect_url}",
                          f"{plain}/sub/page.html?x=1&y=two")
        assert result.stdout.decode() == f"301 {https}/sub/page.html?x=1&y=two", (method, result.stdout)


def test_config_tls_handshake_timeout(pki: Pki, config_server: tuple[RunningServer, str, str]) -> None:
    _, https, _ = config_server
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port_of(https)), timeout=10) as sock:
        try:
            data = sock.recv(4096)  # no ClientHello ever comes
        except ConnectionResetError:
            data = b""
    elapsed = time.monotonic() - started
    assert data == b"", data
    assert 0.8 <= elapsed <= 4, elapsed
    assert_served(s_client(port_of(https), pki, "-tls1_3"), "TLSv1.3")


def test_client_certificate_required(curl: str, pki: Pki, tls_site: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "ring3.toml", tls_site, ["127.0.0.1:0 tls"],
                          tls={"cert": [str(pki.ecdsa.cert)], "key": [str(pki.ecdsa.key)],
                               "verify_client": "required", "client_ca": str(pki.ca_file)})
    stranger = write_pair(trustme.CA(), tmp_path, "stranger", "client.example.test", common_name="stranger")
    server = start_ring3(["--config", str(config)], tmp_path)
    try:
        url = f"{server.url}/hello.txt"

        def fetch(*args: str) -> subprocess.CompletedProcess[bytes]:
            command = [curl, "--max-time", "30", "-s", "-S", "--cacert", str(pki.ca_file), *args, url]
            return subprocess.run(command, capture_output=True, timeout=60, check=False)

        # Over h2 curl reports a refused TLS 1.3 client certificate as "getpeername() failed", without
        # the alert's name: the refusals are checked over HTTP/1.1, where it prints the alert.
        refusals = {
            "alert certificate required": fetch("--http1.1"),  # TLS 1.3 names the missing certificate
            "alert handshake failure": fetch("--http1.1", "--tls-max", "1.2"),
            "alert unknown ca": fetch("--http1.1", "--cert", str(stranger.cert), "--key", str(stranger.key)),
        }
        for alert, refused in refusals.items():
            assert refused.returncode != 0, refused
            assert refused.stdout == b"", refused
            assert alert in refused.stderr.decode(errors="replace"), refused
        client = ("--cert", str(pki.client.cert), "--key", str(pki.client.key))
        for version in ("1.2", "1.3"):
            accepted = fetch("--tls-max", version, *client)
            assert accepted.returncode == 0, accepted
            assert accepted.stdout == HELLO
    finally:
        assert server.stop() == 0, server.stderr()
