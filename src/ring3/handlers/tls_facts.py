"""What applications learn of a TLS connection: ASGI's TLS extension and WSGI's HTTPS variables
(mod_ssl's names, as gunicorn and Apache give them)."""

from __future__ import annotations

from typing import Any

from ring3.events import TLSInfo


def asgi_tls_extension(info: TLSInfo) -> dict[str, Any]:
    """scope["extensions"]["tls"] (ASGI TLS extension, version 0.2)."""
    return {
        "server_cert": info.server_cert,
        "client_cert_chain": [info.client_cert] if info.client_cert else [],
        "client_cert_name": info.client_cert_name,
        "client_cert_error": None,  # a certificate that fails verification fails the handshake
        "tls_version": info.version_code or None,
        "cipher_suite": info.cipher_id or None,
    }


def wsgi_tls_environ(info: TLSInfo) -> dict[str, str]:
    """The environ keys of an https request."""
    environ = {"HTTPS": "on", "SSL_PROTOCOL": info.version, "SSL_CIPHER": info.cipher}
    if info.client_cert:
        environ["SSL_CLIENT_CERT"] = info.client_cert
        if info.client_cert_name:
            environ["SSL_CLIENT_S_DN"] = info.client_cert_name
    if info.server_name:
        environ["SSL_TLS_SNI"] = info.server_name
    return environ
