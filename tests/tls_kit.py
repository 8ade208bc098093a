"""Certificates made in the test (trustme) and small TLS clients over real sockets on loopback."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trustme

from conftest import ResponseReader, RunningServer


@dataclass
class Pair:
    cert: Path
    key: Path


@dataclass
class Certs:
    ca: trustme.CA
    ca_file: Path
    main: Pair  # localhost, 127.0.0.1
    other: Pair  # other.test
    wild: Pair  # *.wild.test

    def client_context(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        for name, version in versions.items():
            setattr(context, name, version)
        return context


def write_pair(leaf: trustme.LeafCert, directory: Path, name: str) -> Pair:
    cert = directory / f"{name}.pem"
    key = directory / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return Pair(cert, key)


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    return Certs(ca, ca_file,
                 write_pair(ca.issue_cert("localhost", "127.0.0.1"), directory, "main"),
                 write_pair(ca.issue_cert("other.test"), directory, "other"),
                 write_pair(ca.issue_cert("*.wild.test"), directory, "wild"))


def tls_connect(port: int, context: ssl.SSLContext, server_hostname: str = "localhost",
                session: ssl.SSLSession | None = None, timeout: float = 5.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname=server_hostname, session=session)


def tls_get(port: int, context: ssl.SSLContext, path: str = "/hello.txt",
            server_hostname: str = "localhost") -> tuple[int, dict[bytes, bytes], bytes]:
    with tls_connect(port, context, server_hostname) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        return ResponseReader(sock).read()


def peer_names(sock: ssl.SSLSocket) -> set[str]:
    cert = sock.getpeercert()
    assert cert is not None
    return {str(value) for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"}


def tls_flags(certs: Certs, *pairs: str) -> list[str]:
    """--tls-cert/--tls-key for the named pairs of `certs` (main alone by default)."""
    flags: list[str] = []
    for name in pairs or ("main",):
        pair = getattr(certs, name)
        flags += ["--tls-cert", str(pair.cert), "--tls-key", str(pair.key)]
    return flags


def serve_tls(ring3_process: Callable[..., RunningServer], site: Path, certs: Certs, *flags: str,
              pairs: tuple[str, ...] = ()) -> RunningServer:
    """ring3 serving `site` over TLS on a free loopback port, access log off."""
    return ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                         *tls_flags(certs, *pairs), *flags)
