"""Sites under TLS: a site's own certificate chosen by SNI, and 421 for a request whose Host the
connection's certificate does not cover (HTTP/1.1 and HTTP/2, replayed requests included)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import ResponseReader, RunningServer
from sites_kit import serve_config
from tls_kit import peer_names, tls_connect

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tls_sites(tmp_path: Path, certs: Any, ring3_process: Callable[..., RunningServer]) -> RunningServer:
    return serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "off"
        [tls]
        cert = ["{certs.main.cert}"]
        key = ["{certs.main.key}"]
        [[site]]
        hosts = ["other.test"]
        tls = {{ cert = "{certs.other.cert}", key = "{certs.other.key}" }}
        respond = {{ body = "other" }}
        [[site]]
        hosts = ["*.wild.test"]
        tls = {{ cert = "{certs.wild.cert}", key = "{certs.wild.key}" }}
        respond = {{ body = "wild" }}
        [[site]]
        hosts = ["localhost", "127.0.0.1"]
        respond = {{ body = "local" }}
    """, listen="127.0.0.1:0 tls")


def curl(server: RunningServer, certs: Any, name: str, *options: str) -> tuple[int, str]:
    done = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--cacert", str(certs.ca_file),
                           "--resolve", f"{name}:{server.port}:127.0.0.1", *options,
                           f"https://{name}:{server.port}/"],
                          capture_output=True, text=True, timeout=30, check=True)
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_each_site_is_served_with_its_own_certificate(tls_sites: RunningServer, certs: Any,
                                                      version: str) -> None:
    assert curl(tls_sites, certs, "other.test", version) == (200, "other")
    assert curl(tls_sites, certs, "a.wild.test", version) == (200, "wild")
    assert curl(tls_sites, certs, "localhost", version) == (200, "local")
    with tls_connect(tls_sites.port, certs.client_context(), "other.test") as sock:
        assert peer_names(sock) == {"other.test"}


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_a_host_the_certificate_does_not_cover_gets_421(tls_sites: RunningServer, certs: Any,
                                                        version: str) -> None:
    # SNI a.wild.test; the request names another name under the same wildcard: covered (HTTP/2 clients
    # coalesce such requests onto one connection)
    assert curl(tls_sites, certs, "a.wild.test", version, "-H", "Host: b.wild.test") == (200, "wild")
    assert curl(tls_sites, certs, "a.wild.test", version, "-H", "Host: other.test")[0] == 421
    assert curl(tls_sites, certs, "localhost", version, "-H", "Host: other.test")[0] == 421
    assert curl(tls_sites, certs, "other.test", version, "-H", "Host: localhost")[0] == 421


def test_421_holds_for_replayed_requests(tls_sites: RunningServer, certs: Any) -> None:
    """The same request bytes get 200 on a connection whose certificate covers their Host and 421 on one
    whose certificate does not, however often they were answered before (the replay cache)."""
    raw = b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n"
    context = certs.client_context()
    with tls_connect(tls_sites.port, context, "other.test") as sock:
        reader = ResponseReader(sock)
        for _ in range(5):
            sock.sendall(raw)
            assert reader.read()[::2] == (200, b"other")
    with tls_connect(tls_sites.port, context, "localhost") as sock:
        reader = ResponseReader(sock)
        for _ in range(5):
            sock.sendall(raw)
            assert reader.read()[0] == 421
    with tls_connect(tls_sites.port, context, "other.test") as sock:
        sock.sendall(raw)
        assert ResponseReader(sock).read()[::2] == (200, b"other")
