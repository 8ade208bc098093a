"""PROXY protocol listeners and trusted forwarded fields, over real sockets on loopback."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import InProcessServer, RunningServer
from ring3.events import ConnectionInfo, Request, Response
from ring3.transport.proxy_protocol import V2_SIGNATURE

GET = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
V1 = b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\n"
V1_6 = b"PROXY TCP6 2001:db8::9 2001:db8::1 4711 443\r\n"
V2 = (V2_SIGNATURE + b"\x21\x11\x00\x0c" + socket.inet_aton("198.51.100.7") + socket.inet_aton("10.0.0.1")
      + struct.pack("!HH", 5555, 8080))
V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"


def exchange(port: int, data: bytes, pause: float = 0.0, read_body: bool = False) -> bytes:
    """Send `data` (the header alone first, if `pause`), read until the server closes or answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if pause:
            end = data.find(b"\r\n") + 2 if data.startswith(b"PROXY") else 16
            sock.sendall(data[:end])
            time.sleep(pause)
            data = data[end:]
        try:
            sock.sendall(data)
            answer = b""
            while b"\r\n\r\n" not in answer or (read_body and not answer.endswith(b")")):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            return b""
        return answer


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:  # closed with the header's bytes unread
        return True


def recorder() -> tuple[Callable[[Request, Any], Response], list[ConnectionInfo]]:
    seen: list[ConnectionInfo] = []

    def handler(request: Request, body: Any) -> Response:
        seen.append(request.conn)
        return Response(200, [(b"content-type", b"text/plain")], b"ok")
    return handler, seen


@pytest.mark.parametrize(("header", "client", "server"), [
    (V1, ("192.0.2.1", 1234), ("192.0.2.2", 80)),
    (V1_6, ("2001:db8::9", 4711), ("2001:db8::1", 443)),
    (V2, ("198.51.100.7", 5555), ("10.0.0.1", 8080)),
    (V2_LOCAL, None, None),  # the real peer
    (V1_UNKNOWN, None, None),
])
@pytest.mark.parametrize("pause", [0.0, 0.1])
def test_the_header_sets_the_connection_addresses(in_process: Callable[..., InProcessServer], header: bytes,
                                                   client: Any, server: Any, pause: float) -> None:
    handler, seen = recorder()
    running = in_process(handler, server__listen=["127.0.0.1:0 proxy_protocol"])
    assert exchange(running.port, header + GET, pause).startswith(b"HTTP/1.1 200")
    info = seen[-1]
    if client is None:
        assert info.client is not None and info.client[0] == "127.0.0.1"
        assert info.server == ("127.0.0.1", running.port)
    else:
        assert (info.client, info.server) == (client, server)


MALFORMED = [
    b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + b"\0" * 12,  # bad signature
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\0" * 12,  # bad version
    V2_SIGNATURE + b"\x21\x11\x00\x08" + b"\0" * 8,  # AF_INET with too few address bytes
    V2_SIGNATURE + b"\x21\x21\x00\x0c" + b"\0" * 12,  # AF_INET6 with AF_INET's length
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 99999\r\n",  # bad port
    b"PROXY TCP4 192.0.2.999 192.0.2.2 1234 80\r\n",  # bad address
    b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n",  # oversize
    b"PROXY TCP4 192.0.2.1",  # truncated: the client gives up (then the connection closes)
    b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n",  # plain HTTP on a PROXY listener
]


def test_malformed_headers_close_and_the_next_connection_works(
        in_process: Callable[..., InProcessServer], caplog: pytest.LogCaptureFixture) -> None:
    handler, seen = recorder()
    running = in_process(handler, server__listen=["127.0.0.1:0 proxy_protocol"])
    for bad in MALFORMED:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sock.sendall(bad)
            if bad.endswith(b"\r\n") or bad.startswith(b"\r\n"):
                assert closed(sock), bad  # closed, not answered
        assert exchange(running.port, V1 + GET).startswith(b"HTTP/1.1 200"), bad
    assert all(info.client == ("192.0.2.1", 1234) for info in seen)
    assert "Traceback" not in caplog.text


def test_a_header_past_the_timeout_closes(in_process: Callable[..., InProcessServer]) -> None:
    handler, _ = recorder()
    running = in_process(handler, server__listen=["127.0.0.1:0 proxy_protocol"],
                         limits__proxy_protocol_timeout=0.3)
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(V1[:10])
        started = time.monotonic()
        assert closed(sock)
        assert 0.2 < time.monotonic() - started < 3
    assert exchange(running.port, V1 + GET).startswith(b"HTTP/1.1 200")


def test_a_source_not_allowed_is_closed(in_process: Callable[..., InProcessServer]) -> None:
    handler, seen = recorder()
    running = in_process(handler, server__listen=["127.0.0.1:0 proxy_protocol"],
                         server__proxy_protocol_from=["10.0.0.0/8"])
    assert exchange(running.port, V1 + GET) == b""
    assert not seen


def test_server_proxy_protocol_covers_every_listener(in_process: Callable[..., InProcessServer]) -> None:
    handler, seen = recorder()
    running = in_process(handler, server__proxy_protocol=True)
    assert exchange(running.port, GET) == b""
    assert exchange(running.port, V2 + GET).startswith(b"HTTP/1.1 200")
    assert seen[-1].client == ("198.51.100.7", 5555)


FORWARDED = (b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.5, 10.1.2.3\r\n"
             b"X-Forwarded-Proto: https\r\n\r\n")


def test_forwarded_fields_from_a_trusted_peer(in_process: Callable[..., InProcessServer]) -> None:
    handler, seen = recorder()
    running = in_process(handler, server__trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    assert exchange(running.port, FORWARDED).startswith(b"HTTP/1.1 200")
    assert seen[-1].client == ("203.0.113.5", 0) and seen[-1].scheme == "https"
    assert seen[-1].via is not None and seen[-1].via[0] == "127.0.0.1"
    assert exchange(running.port, GET).startswith(b"HTTP/1.1 200")  # no fields: the peer
    assert seen[-1].client is not None and seen[-1].client[0] == "127.0.0.1" and seen[-1].via is None


def test_forwarded_fields_from_anyone_else_are_ignored(in_process: Callable[..., InProcessServer]) -> None:
    handler, seen = recorder()
    running = in_process(handler, server__trusted_proxies=["10.0.0.0/8"])
    assert exchange(running.port, FORWARDED).startswith(b"HTTP/1.1 200")
    assert seen[-1].client is not None and seen[-1].client[0] == "127.0.0.1" and seen[-1].scheme == "http"


def test_trust_is_decided_on_the_proxy_protocol_source(in_process: Callable[..., InProcessServer]) -> None:
    handler, seen = recorder()
    running = in_process(handler, server__listen=["127.0.0.1:0 proxy_protocol"],
                         server__trusted_proxies=["192.0.2.1", "10.0.0.0/8"])
    assert exchange(running.port, V1 + FORWARDED).startswith(b"HTTP/1.1 200")
    assert seen[-1].client == ("203.0.113.5", 0) and seen[-1].via == ("192.0.2.1", 1234)
    assert exchange(running.port, V2 + FORWARDED).startswith(b"HTTP/1.1 200")  # 198.51.100.7: untrusted
    assert seen[-1].client == ("198.51.100.7", 5555) and seen[-1].via is None


def test_access_log_shows_the_proxy_source_and_the_forwarded_client(
        site: Path, ring3_process: Callable[..., RunningServer]) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0 proxy_protocol",
                           "--trusted-proxies", "192.0.2.1", "--trusted-proxies", "10.0.0.0/8")
    assert exchange(server.port, V2 + GET).startswith(b"HTTP/1.1 200")
    assert exchange(server.port, V1 + FORWARDED.replace(b"GET / ", b"GET /hello.txt ")).startswith(
        b"HTTP/1.1 200")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum("GET /hello.txt" in line for line in server.stdout_lines) < 2:
        time.sleep(0.05)
    logged = [line.split()[0] for line in server.stdout_lines if "GET /hello.txt" in line]
    assert logged == ["198.51.100.7", "203.0.113.5"]


def test_proxy_protocol_before_tls(site: Path, certs: Any,
                                   ring3_process: Callable[..., RunningServer]) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0 tls proxy_protocol", "--access-log", "-",
                           "--tls-cert", str(certs.main.cert), "--tls-key", str(certs.main.key))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    raw.sendall(V1)
    with certs.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(GET)
        assert tls.recv(100).startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("GET /hello.txt" in x for x in server.stdout_lines):
        time.sleep(0.05)
    assert any(line.startswith("192.0.2.1 ") for line in server.stdout_lines)


def test_config_without_proxy_protocol_imports_none_of_it(site: Path) -> None:
    code = """
import asyncio, sys
from ring3.config import build_config
from ring3.server import Server
async def main():
    config = build_config(None, "<t>", {("server", "listen"): ["127.0.0.1:0"],
                                        ("server", "access_log"): "off"})
    server = Server(config, lambda request, body: None)
    server.start()
    await server.shutdown(0)
asyncio.run(main())
names = ("proxy_protocol", "proxy_preamble", "forwarded", "addresses")
print(sorted(n for n in sys.modules if n.endswith(names)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "[]", result


ASGI_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = repr((scope["client"], scope["scheme"])).encode()
    length = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": length})
    await send({"type": "http.response.body", "body": body})
'''
WSGI_APP = '''
def app(environ, start_response):
    body = repr((environ["REMOTE_ADDR"], environ["wsgi.url_scheme"])).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.mark.parametrize(("interface", "source"), [("asgi", ASGI_APP), ("wsgi", WSGI_APP)])
def test_applications_see_the_proxy_source_and_the_forwarded_client(
        tmp_path: Path, ring3_process: Callable[..., RunningServer], interface: str, source: str) -> None:
    (tmp_path / "who.py").write_text(source)
    server = ring3_process("--app", "who:app", "--app-dir", str(tmp_path), "--interface", interface,
                           "--listen", "127.0.0.1:0 proxy_protocol", "--access-log", "off",
                           "--trusted-proxies", "192.0.2.1", "--trusted-proxies", "10.0.0.0/8")
    untrusted = exchange(server.port, V2 + FORWARDED, read_body=True)
    trusted = exchange(server.port, V1 + FORWARDED, read_body=True)
    if interface == "asgi":
        assert untrusted.endswith(b"(('198.51.100.7', 5555), 'http')")
        assert trusted.endswith(b"(('203.0.113.5', 0), 'https')")
    else:
        assert untrusted.endswith(b"('198.51.100.7', 'http')")
        assert trusted.endswith(b"('203.0.113.5', 'https')")


def test_an_allow_rule_sees_the_forwarded_client(tmp_path: Path,
                                                 ring3_process: Callable[..., RunningServer]) -> None:
    from sites_kit import serve_config

    server = serve_config(ring3_process, tmp_path, """
        [server]
        access_log = "off"
        trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
        [[site]]
        hosts = ["*"]
        respond = { body = "open" }
        allow = ["203.0.113.0/24"]
    """)
    assert exchange(server.port, FORWARDED).startswith(b"HTTP/1.1 200")
    assert exchange(server.port, GET).startswith(b"HTTP/1.1 403")  # the peer itself: not allowed


def test_the_proxy_appends_to_a_trusted_chain() -> None:
    from ring3.proxy.headers import forwarded_fields

    request = Request(b"GET", b"/", b"/", b"", "1.1", [(b"x-forwarded-for", b"203.0.113.5, 10.1.2.3")],
                      b"t", True)
    request.conn = ConnectionInfo(("203.0.113.5", 0), None, "https", None, ("10.0.0.9", 4000))
    fields = forwarded_fields(request)
    assert b"x-forwarded-for: 203.0.113.5, 10.1.2.3, 10.0.0.9\r\n" in fields
    assert b"x-forwarded-proto: https\r\n" in fields
    assert b"forwarded: for=203.0.113.5, for=10.0.0.9;host=t;proto=http\r\n" in fields
    request.conn = ConnectionInfo(("198.51.100.1", 5), None)  # not from a trusted proxy: replaced
    assert b"x-forwarded-for: 198.51.100.1\r\n" in forwarded_fields(request)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_real_haproxy_in_front(tmp_path: Path, site: Path,
                                 ring3_process: Callable[..., RunningServer]) -> None:
    assert Path("/usr/sbin/haproxy").exists(), "haproxy is missing: scripts/test installs it"
    server = ring3_process(str(site), "--listen", "127.0.0.1:0 proxy_protocol")
    v2_port, v1_port = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend v2
    bind 127.0.0.1:{v2_port}
    default_backend ring3_v2
frontend v1
    bind 127.0.0.1:{v1_port}
    default_backend ring3_v1
backend ring3_v2
    server ring3 127.0.0.1:{server.port} send-proxy-v2
backend ring3_v1
    server ring3 127.0.0.1:{server.port} send-proxy
""")
    haproxy = subprocess.Popen(["/usr/sbin/haproxy", "-f", str(config), "-db"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        for port in (v2_port, v1_port):
            deadline = time.monotonic() + 5
            while True:
                try:
                    answer = exchange(port, GET)
                    if answer:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "haproxy did not come up"
                time.sleep(0.1)
            assert answer.startswith(b"HTTP/1.1 200")
    finally:
        haproxy.terminate()
        haproxy.wait(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum("GET /hello.txt" in x for x in server.stdout_lines) < 2:
        time.sleep(0.05)
    logged = [line for line in server.stdout_lines if "GET /hello.txt" in line]
    assert len(logged) == 2 and all(line.startswith("127.0.0.1 ") for line in logged)
    assert "connection closed" not in server.stderr()
