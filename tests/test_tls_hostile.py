"""Hostile TLS clients against a real `ring3 serve`: plain HTTP on a TLS port, broken, silent and stalled
handshakes, a thousand of them at once, renegotiation; and closed connections freed at once."""

from __future__ import annotations

import gc
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import InProcessServer, RunningServer, recv_until_closed
from hostile.wire import read_until_eof, wait_until
from ring3.events import Request, Response
from test_floods import many_connections, raise_fd_limit
from test_ledger import admin_url, scrape
from tls_kit import Certs, serve_tls, tls_get

Start = Callable[..., RunningServer]


# -- hostile handshakes -------------------------------------------------------------------------------


def test_plain_http_on_a_tls_port_gets_a_cleartext_400(certs: Certs, site: Path,
                                                       ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs, "--admin", "127.0.0.1:0")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data, closed = read_until_eof(sock, 5)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"plain HTTP request was sent to an HTTPS port" in data
    assert b"connection: close" in data and closed
    assert scrape(admin_url(server))["ring3_tls_handshake_failures_total"] == 1


@pytest.mark.parametrize("hello", [
    b"\x00\x01garbage that is no record",  # not TLS, not HTTP: closed without an answer
    b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",  # a ClientHello too short to hold anything
    b"\x16\x03\x01\x00\x30" + b"\xff" * 48,  # a handshake record of garbage
    b"\x16\x03\x01\xff\xff" + b"\x01\x00\xff\xfb" + b"A" * 65531,  # a record over TLS's 16 KiB limit
])
def test_broken_client_hellos_are_closed(certs: Certs, site: Path, ring3_process: Start,
                                         hello: bytes) -> None:
    server = serve_tls(ring3_process, site, certs, "--admin", "127.0.0.1:0")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        try:
            sock.sendall(hello)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, closed = read_until_eof(sock, 5)
    assert closed
    assert b"HTTP/" not in data  # at most an alert
    assert scrape(admin_url(server))["ring3_tls_handshake_failures_total"] == 1
    assert tls_get(server.port, certs.client_context())[0] == 200  # and the server is fine


def _client_hello_prefix(port: int) -> bytes:
    """The first bytes of a real ClientHello (made by Python's ssl over memory buffers)."""
    client = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(),
                                                   server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()[:40]


def test_silent_and_stalled_handshakes_are_closed_at_the_handshake_timeout(
        certs: Certs, site: Path, ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs, "--tls-handshake-timeout", "0.5",
                       "--admin", "127.0.0.1:0")
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    stalled.sendall(_client_hello_prefix(server.port))  # and never the rest
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as gone:
        gone.sendall(_client_hello_prefix(server.port))  # then leaves halfway: counted at once
    started = time.monotonic()
    for sock in (silent, stalled):
        with sock:
            assert read_until_eof(sock, 5)[1]
    assert 0.4 < time.monotonic() - started < 8  # well before the default 10 s
    assert scrape(admin_url(server))["ring3_tls_handshake_failures_total"] == 3


HANDSHAKERS = 1000


def test_a_thousand_silent_handshakes_do_not_starve_a_normal_client(certs: Certs, site: Path,
                                                                    ring3_process: Start) -> None:
    raise_fd_limit(HANDSHAKERS * 2 + 512)
    server = serve_tls(ring3_process, site, certs, "--max-connections", str(HANDSHAKERS * 2),
                       "--tls-handshake-timeout", "60")
    context = certs.client_context()
    tls_get(server.port, context)
    latencies = []
    with many_connections(server.port, HANDSHAKERS) as idle:
        prefix = _client_hello_prefix(server.port)
        for sock in idle[::2]:  # half of them stop in the middle of their ClientHello
            sock.send(prefix)
        for _ in range(5):
            started = time.monotonic()
            assert tls_get(server.port, context)[2] == b"hello, world\n"
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)
    assert max(latencies) < 1.0, latencies
    assert server.process.poll() is None


def test_client_initiated_renegotiation_is_refused(certs: Certs, site: Path, ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs)
    # s_client renegotiates when a line starts with R (TLS 1.2); ring3's OpenSSL refuses it.
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_2",
               "-CAfile", str(certs.ca_file), "-servername", "localhost"]
    result = subprocess.run(command, input="R\n", capture_output=True, text=True, timeout=15)
    output = result.stdout + result.stderr
    assert "RENEGOTIATING" in output
    assert "no renegotiation" in output.lower() or "alert" in output.lower(), output
    assert tls_get(server.port, certs.client_context())[0] == 200


# -- memory ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True])
def test_closed_connections_are_freed_at_once_not_by_the_cycle_collector(
        certs: Certs, in_process: Callable[..., InProcessServer], tls: bool) -> None:
    """A TLS connection holds about 30 KiB in OpenSSL, which the cycle collector does not see: left to
    it, thousands of closed connections pile up between its passes (the bench saw 28 -> 99 MB)."""
    def handler(request: Request, body: object) -> Response:
        return Response(200, [], b"", b"hi")

    flags = {"server__listen": ["127.0.0.1:0 tls"], "tls__cert": [str(certs.main.cert)],
             "tls__key": [str(certs.main.key)]} if tls else {}
    server = in_process(handler, **flags)
    context = certs.client_context()
    names = {"Connection", "OutputPath", "TLSOutputPath", "TLSHandshake", "SSLObject", "LazyTimer"}
    gc.collect()
    gc.disable()
    try:
        for _ in range(30):
            if tls:
                assert tls_get(server.port, context, "/")[2] == b"hi"
            else:
                with server.connect() as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    assert recv_until_closed(sock).endswith(b"hi")
        def alive() -> list[str]:
            return [type(o).__name__ for o in gc.get_objects() if type(o).__name__ in names]

        assert wait_until(lambda: not server.server or not server.server.connections, 5)
        # The server's thread may still hold the last one for a moment (the accept loop's frame, which
        # answered and closed it as it accepted it): freed by reference counting, it goes soon after.
        wait_until(lambda: not alive(), 5)
        found = alive()
    finally:
        gc.enable()
    assert found == []
