"""TLS for the bench: an ECDSA P-256 certificate made at bench time, and the client side the harness
itself uses (readiness probes, the session each server settles on).

The load tools (wrk, h2load) do not verify the certificate; the harness's own client does, against this
certificate, so a server that presents anything else fails its readiness probe.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchkit.figures import Record

CERT_DAYS = 2  # the certificate outlives any run, and no more
# nginx logs "$ssl_session_reused $connection_requests" per request in the handshake scenarios.
NGINX_LOG_FORMAT = "$ssl_session_reused $connection_requests"
PROBE_TIMEOUT = 5.0
ALPN = ("http/1.1",)  # what the harness's HTTP/1.1 probes (http.client) and h2load --h1 ask for
ALPN_H2 = ("h2", "http/1.1")  # what h2load offers without --h1, as browsers do
# OpenSSL's default TLS 1.3 order, which wrk (no cipher option) offers: h2load is told the same, so both
# load tools get the same suite from a server that follows the client's order (nginx, granian).
TLS13_CIPHERS = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"


@dataclass(frozen=True)
class TlsFiles:
    """The certificate (PEM) and its private key (PKCS#8 PEM: granian takes no other)."""

    cert: Path
    key: Path


def files(work: Path) -> TlsFiles:
    """Where the run's certificate and key are (made by make_certificate)."""
    return TlsFiles(work / "tls" / "cert.pem", work / "tls" / "key.pem")


def make_certificate(work: Path, host: str) -> TlsFiles:
    """A self-signed ECDSA P-256 certificate for the IP address `host`, with `openssl req`."""
    made = files(work)
    made.cert.parent.mkdir(parents=True, exist_ok=True)
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(made.key), "-out", str(made.cert), "-days", str(CERT_DAYS), "-subj",
            "/CN=ring3 bench", "-addext", f"subjectAltName=IP:{host}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"openssl req failed: {out.stderr[-1500:]}")
    made.key.chmod(0o644)  # nginx's master reads it as root; the run's folder is private anyway
    return made


def client_context(made: TlsFiles, alpn: tuple[str, ...] = ALPN) -> ssl.SSLContext:
    """TLS 1.3 only, trusting the run's certificate alone (hostname checked against its IP SAN)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cafile=str(made.cert))
    context.set_alpn_protocols(list(alpn))
    return context


def session_record(host: str, port: int, made: TlsFiles, alpn: tuple[str, ...] = ALPN) -> Record:
    """One handshake by the harness, offering `alpn`: the protocol, suite and ALPN the server settled on."""
    with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as raw, \
            client_context(made, alpn).wrap_socket(raw, server_hostname=host) as conn:
        cipher = conn.cipher()
        return {"version": conn.version(), "cipher": cipher[0] if cipher else None,
                "alpn": conn.selected_alpn_protocol()}
