"""The server's TLS contexts: certificates loaded and checked, protocol settings, SNI and ALPN.

Built once at startup, in each worker (a reload builds them anew, re-reading the certificates). OpenSSL
draws session ticket keys for each context; under a master, the workers are given one set of keys
(transport/ticket_keys.py) so that a session resumes on any worker. Only imported when a listener is
marked tls.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ring3.config import ConfigError
from ring3.config.schema import TLSSection

logger = logging.getLogger("ring3.error")

# What ALPN offers, in ring3's order of preference (h2 unless [http2] enabled is off); a client that offers
# none of these (or no ALPN at all) gets HTTP/1.1.
ALPN_PROTOCOLS = ("h2", "http/1.1")
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"off": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_SOURCE = "tls"


@dataclass(frozen=True, slots=True)
class Certificate:
    """One loaded certificate: its files, the names it answers for, and its context."""

    cert_path: str
    pem: str  # the certificate itself (the file's first PEM block), for applications that ask
    names: tuple[str, ...]  # subjectAltName DNS names (the subject's CN without any), lower case
    not_after: float
    context: ssl.SSLContext


class ServerTLS:
    """Every certificate's context, and the choice between them by SNI name (exact, then wildcard)."""

    def __init__(self, certificates: list[Certificate], strict: bool) -> None:
        self.certificates = certificates
        self.default = certificates[0].context
        self.strict = strict
        self.seen_name: str | None = None  # the SNI name of the handshake step running now
        self.cipher_ids = {cipher["name"]: cipher["id"] & 0xFFFF for cipher in self.default.get_ciphers()}
        self._pems = {id(cert.context): cert.pem for cert in certificates}
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wildcard: dict[str, ssl.SSLContext] = {}
        for cert in certificates:
            for name in cert.names:
                if name.startswith("*."):
                    self._wildcard.setdefault(name[2:], cert.context)
                else:
                    self._exact.setdefault(name, cert.context)
        self.default.sni_callback = self._on_server_name

    def certificate_pem(self, context: ssl.SSLContext) -> str | None:
        """The certificate (PEM) a context answers with."""
        return self._pems.get(id(context))

    def context_for(self, name: str | None) -> ssl.SSLContext | None:
        """The context that answers for `name` (None: no certificate does)."""
        if name is None:
            return self.default
        name = name.lower().rstrip(".")
        context = self._exact.get(name)
        if context is None:
            _, dot, parent = name.partition(".")
            if dot:
                context = self._wildcard.get(parent)
        return context

    def _on_server_name(self, connection: ssl.SSLObject | ssl.SSLSocket, name: str | None,
                        _context: ssl.SSLContext) -> int | None:
        self.seen_name = name
        context = self.context_for(name)
        if context is None:
            if self.strict:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            return None  # the default certificate answers
        if context is not self.default:
            connection.context = context
        return None


def load_server_tls(settings: TLSSection, http2: bool = True) -> ServerTLS:
    """Load and check every certificate and key; a ConfigError names the file and the reason. ALPN
    offers h2 with `http2`."""
    password = _read_password(settings.key_password_file) if settings.key_password_file else None
    alpn = ALPN_PROTOCOLS if http2 else ALPN_PROTOCOLS[1:]
    certificates = [_load_certificate(settings, cert, key, password, alpn)
                    for cert, key in zip(settings.cert, settings.key, strict=True)]
    return ServerTLS(certificates, settings.sni_strict)


def kernel_tls_status() -> str:
    """Whether kernel TLS could carry files (sendfile) here, in words for the startup line."""
    python_has = hasattr(ssl, "OP_ENABLE_KTLS")
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as stream:
            kernel_has = "tls" in stream.read().split()
    except OSError:
        kernel_has = False
    if python_has and kernel_has:
        return ("kernel TLS is available but not used yet: TLS records are made in user space, files "
                "are read and encrypted in 256 KiB chunks")
    missing = [what for what, has in (("this Python has no ssl.OP_ENABLE_KTLS (3.12+)", python_has),
                                      ("the kernel offers no tls module", kernel_has)) if not has]
    return "TLS records are made in user space (no kernel TLS: " + "; ".join(missing) + ")"


def _read_password(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(_SOURCE, "tls.key_password_file", f"{path}: cannot read: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _read_pem(key: str, path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as stream:
            return stream.read()
    except OSError as exc:
        raise ConfigError(_SOURCE, key, f"{path}: cannot read: {_reason(exc)}") from None


def _load_certificate(settings: TLSSection, cert_path: str, key_path: str,
                      password: str | None, alpn: tuple[str, ...]) -> Certificate:
    cert_text = _read_pem("tls.cert", cert_path)
    key_text = _read_pem("tls.key", key_path)
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise ConfigError(_SOURCE, "tls.cert", f"{cert_path}: no PEM certificate in it")
    if "PRIVATE KEY-----" not in key_text:
        raise ConfigError(_SOURCE, "tls.key", f"{key_path}: no PEM private key in it")
    encrypted = "ENCRYPTED" in key_text
    if encrypted and password is None:
        raise ConfigError(_SOURCE, "tls.key", f"{key_path}: the key is encrypted; give its passphrase "
                          "in a file with tls.key_password_file")
    context = _new_context(settings, alpn)
    def supply() -> str:  # a callable, so that OpenSSL never prompts on a terminal for a passphrase
        return password or ""

    try:
        context.load_cert_chain(cert_path, key_path, password=supply)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(_SOURCE, "tls.key", f"{key_path}: does not match the certificate "
                              f"{cert_path}") from None
        if encrypted:
            raise ConfigError(_SOURCE, "tls.key", f"{key_path}: cannot decrypt it: wrong passphrase "
                              f"in {settings.key_password_file}") from None
        raise ConfigError(_SOURCE, "tls.cert", f"{cert_path} with {key_path}: OpenSSL cannot load them "
                          f"({exc.reason or exc})") from None
    names, not_after = _describe(cert_path)
    now = time.time()
    if not_after < now:
        logger.warning("the certificate %s expired on %s; clients will refuse it", cert_path,
                       time.strftime("%Y-%m-%d", time.gmtime(not_after)))
    end = cert_text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    pem = cert_text[cert_text.index("-----BEGIN CERTIFICATE-----"):end] + "\n"
    return Certificate(cert_path, pem, names, not_after, context)


def _new_context(settings: TLSSection, alpn: tuple[str, ...]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[settings.min_version]
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    # Mozilla's intermediate profile lets the client pick among its (all strong) suites: a phone
    # without AES instructions then gets ChaCha20. Python's server contexts prefer their own order.
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.set_ciphers(settings.ciphers)
    except ssl.SSLError:
        raise ConfigError(_SOURCE, "tls.ciphers", f"OpenSSL knows none of {settings.ciphers!r}") from None
    if not settings.session_tickets:
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
    context.set_alpn_protocols(list(alpn))
    if settings.verify_client != "off":
        context.verify_mode = _VERIFY[settings.verify_client]
        try:
            context.load_verify_locations(cafile=settings.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(_SOURCE, "tls.client_ca",
                              f"{settings.client_ca}: cannot load: {_reason(exc)}") from None
    return context


def _describe(cert_path: str) -> tuple[tuple[str, ...], float]:
    """The DNS names of the first certificate in the file, and when it expires."""
    # The standard library parses a certificate file only through this helper (the one behind
    # getpeercert(); public APIs give parsed certificates of CAs or peers only), and ring3 has no
    # runtime dependency that parses X.509. Its result is getpeercert()'s documented dict.
    decode: Callable[[str], dict[str, Any]] = ssl._ssl._test_decode_cert  # type: ignore[attr-defined]
    try:
        info = decode(os.fspath(cert_path))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(_SOURCE, "tls.cert", f"{cert_path}: not a certificate ({exc})") from None
    names = tuple(str(value).lower() for kind, value in info.get("subjectAltName", ()) if kind == "DNS")
    if not names:
        for rdn in info.get("subject", ()):
            names += tuple(str(value).lower() for key, value in rdn if key == "commonName")
    return names, ssl.cert_time_to_seconds(str(info["notAfter"]))
