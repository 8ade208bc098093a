"""A TLS connection until its handshake is over; then it becomes an ordinary Connection.

Costs nothing but the socket until the client sends its first bytes (no OpenSSL state is made for a
client that only connects), and is closed `tls_handshake_timeout` after the connection opened, however
the client dribbles. A first byte that cannot begin a TLS record but begins an HTTP method gets a
cleartext 400, as nginx answers (400 "The plain HTTP request was sent to HTTPS port").
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ring3.events import ConnectionInfo, TLSInfo
from ring3.http1.connection import RECV_SIZE, Connection
from ring3.http1.serialize import serialize_head
from ring3.transport.tls_context import ServerTLS
from ring3.transport.tls_stream import TLSOutputPath

if TYPE_CHECKING:
    from ring3.handlers import Handler
    from ring3.http2.connection import H2Connection
    from ring3.server import Server

logger = logging.getLogger("ring3.error")

_HANDSHAKE_RECORD = 0x16  # a TLS record of content type handshake: how every ClientHello begins
_PLAIN_HTTP_BODY = b"400 Bad Request: a plain HTTP request was sent to an HTTPS port; use https://\n"
_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


class TLSHandshake:
    """Reads and answers one client's handshake, then hands the socket to a Connection."""

    __slots__ = ("_deadline", "_done", "_fd", "_handler", "_incoming", "_info", "_lingering", "_loop", "_obj",
                 "_outgoing", "_peer", "_pending", "_server", "_server_name", "_sock", "_tls", "_writing",
                 "closed")

    def __init__(self, server: Server, sock: socket.socket, peer: str, info: ConnectionInfo,
                 tls: ServerTLS, handler: Handler | None = None) -> None:
        """`handler` answers the connection's requests instead of the server's (see Connection)."""
        loop = server.loop
        self._handler = handler
        self._server = server
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._peer = peer
        self._info = info
        self._tls = tls
        self._obj: ssl.SSLObject | None = None
        self._incoming: ssl.MemoryBIO | None = None
        self._outgoing: ssl.MemoryBIO | None = None
        self._pending = b""  # handshake bytes the socket did not take yet
        self._writing = False
        self._lingering = False
        self._done = False  # the handshake is over (its last bytes may still wait for the socket)
        self._server_name: str | None = None
        self.closed = False
        loop.add_reader(self._fd, self._on_readable)
        self._deadline = loop.call_later(server.config.limits.tls_handshake_timeout, self._timed_out)

    def _on_readable(self) -> None:
        ledger = self._server.ledger
        ledger.recv += 1
        try:
            data = self._sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        ledger.bytes_received += len(data)
        if not data or self._lingering:
            if not data:
                if self._obj is not None and not self._lingering:
                    self._server.ledger.tls_handshake_failures += 1  # broken off halfway
                self.close()
            return
        obj = self._obj
        if obj is None:
            if data[0] != _HANDSHAKE_RECORD:
                self._not_tls(data)
                return
            self._incoming = incoming = ssl.MemoryBIO()
            self._outgoing = outgoing = ssl.MemoryBIO()
            obj = self._obj = self._tls.default.wrap_bio(incoming, outgoing, server_side=True)
        assert self._incoming is not None
        self._incoming.write(data)
        tls = self._tls
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            self._send_pending()
            return
        except (ssl.SSLError, OSError) as exc:
            self._failed(exc)
            return
        finally:
            if tls.seen_name is not None:  # the SNI callback ran in this call: the name is ours
                self._server_name, tls.seen_name = tls.seen_name, None
        if not self._done:
            self._done = True
            ledger.tls_handshakes += 1
            if obj.session_reused:
                ledger.tls_resumed += 1
        self._established(obj)

    def read_now(self) -> None:
        """Take what the socket holds already (the ClientHello that came right after a PROXY header)."""
        self._on_readable()

    def _failed(self, exc: BaseException) -> None:
        ledger = self._server.ledger
        ledger.tls_handshake_failures += 1
        # Internet noise (scanners, old clients): worth a line only when debugging.
        logger.debug("%s: TLS handshake failed: %s", self._peer, exc)
        self._send_pending()  # the alert that says why, if OpenSSL made one
        self.close()

    def _established(self, obj: ssl.SSLObject) -> None:
        server = self._server
        ledger = server.ledger
        if self._pending:
            # The socket did not take the end of our handshake flight; rare enough to wait for.
            self._send_pending()
            if self._pending:
                return
        # The reader stays registered: the Connection's add_reader only swaps the callback (no epoll_ctl).
        self._detach(keep_reader=True)
        assert self._incoming is not None and self._outgoing is not None
        facts = _describe(obj, self._server_name, self._tls)
        info = ConnectionInfo(self._info.client, self._info.server, "https", facts)
        incoming, outgoing = self._incoming, self._outgoing
        sock = self._sock

        def output(on_error: Callable[[BaseException], None]) -> TLSOutputPath:
            return TLSOutputPath(sock, server.loop, ledger, server.config.static.sendfile_min_size,
                                 on_error, obj, incoming, outgoing)

        connection: Connection | H2Connection
        if facts.alpn == "h2":
            from ring3.http2.connection import H2Connection

            connection = H2Connection(server, sock, self._peer, info, output, handler=self._handler)
        else:
            connection = Connection(server, sock, self._peer, info, output, handler=self._handler)
        server.connection_replaced(self, connection)
        tls_output = connection.tls
        assert tls_output is not None
        if incoming.pending:  # the client's first request came with its Finished
            try:
                early = tls_output.decrypt(flush=False)
            except BlockingIOError:
                early = b""
            except OSError:
                connection.close()
                return
            if early:
                # Our last handshake records (TLS 1.3's session tickets, TLS 1.2's Finished) wait in
                # OpenSSL's buffer: an answer made now leaves with them in one send.
                tls_output.hold_early(early)
                connection.read_now()
        if outgoing.pending and not connection.closed:
            tls_output.send_control()

    # -- writing handshake bytes ------------------------------------------------------------------

    def _send_pending(self) -> None:
        outgoing = self._outgoing
        data = self._pending + (outgoing.read() if outgoing is not None else b"")
        if not data:
            return
        ledger = self._server.ledger
        ledger.send += 1
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        ledger.bytes_copied += sent
        self._pending = data[sent:]
        if self._pending and not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._on_writable)
        elif not self._pending and self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _on_writable(self) -> None:
        self._send_pending()
        if self._pending or self.closed:
            return
        if self._lingering:
            self._shutdown_write()
        elif self._done and self._obj is not None:
            self._established(self._obj)

    # -- plain HTTP on a TLS port -----------------------------------------------------------------

    def _not_tls(self, data: bytes) -> None:
        first = data[:1]
        if not first.isalpha() or not first.isupper():
            logger.debug("%s: not a TLS handshake on a TLS port", self._peer)
            self._server.ledger.tls_handshake_failures += 1
            self.close()
            return
        logger.info("%s: plain HTTP request on a TLS port", self._peer)
        server = self._server
        server.ledger.tls_handshake_failures += 1
        head = serialize_head(400, server.dates.common_headers(0),
                              [(b"content-type", b"text/plain; charset=utf-8")],
                              len(_PLAIN_HTTP_BODY), b"connection: close\r\n")
        self._pending = head + _PLAIN_HTTP_BODY
        self._send_pending()
        if self.closed:
            return
        self._lingering = True  # read and drop the rest for a while, so the answer is not reset away
        if not self._pending:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        self._server.ledger.shutdown += 1
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self._deadline.cancel()
        self._deadline = self._loop.call_later(self._server.config.limits.lingering_timeout, self.close)

    # -- ending -----------------------------------------------------------------------------------

    def _timed_out(self) -> None:
        if not self._lingering:
            logger.debug("%s: TLS handshake not finished in time", self._peer)
            self._server.ledger.tls_handshake_failures += 1
        self.close()

    def _detach(self, keep_reader: bool = False) -> None:
        """Stop watching the socket (but for reading, when a Connection takes it over)."""
        self._deadline.cancel()
        if not keep_reader:
            self._loop.remove_reader(self._fd)
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def drain(self) -> None:
        """Server shutdown (or a reload): a handshake in progress goes on (within tls_handshake_timeout),
        since its client connected before the drain; the connection it becomes is drained then."""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._detach()
        self._obj = self._incoming = self._outgoing = None
        self._server.ledger.close += 1
        self._sock.close()
        self._server.connection_closed(self)


def _describe(obj: ssl.SSLObject, server_name: str | None, tls: ServerTLS) -> TLSInfo:
    """The facts applications see (ASGI's TLS extension, WSGI's HTTPS variables)."""
    cipher = obj.cipher()
    name = cipher[0] if cipher else ""
    version = obj.version() or ""
    client_cert = obj.getpeercert(binary_form=True)
    subject = _rfc4514(obj.getpeercert() or {}) if client_cert else None
    return TLSInfo(version=version, version_code=_VERSIONS.get(version, 0), cipher=name,
                   cipher_id=tls.cipher_ids.get(name, 0), alpn=obj.selected_alpn_protocol(),
                   server_name=server_name, server_cert=tls.certificate_pem(obj.context),
                   client_cert=ssl.DER_cert_to_PEM_cert(client_cert) if client_cert else None,
                   client_cert_name=subject,
                   resumed=obj.session_reused)


def _rfc4514(cert: dict[str, Any]) -> str | None:
    """A certificate's subject as RFC 4514 writes it: the most specific name first."""
    fields: tuple[tuple[tuple[str, str], ...], ...] = cert.get("subject", ())
    return ",".join("+".join(f"{_RDN_KEYS.get(key, key)}={_escape_dn(value)}" for key, value in rdn)
                    for rdn in reversed(fields)) or None


def _escape_dn(value: str) -> str:
    """An attribute value escaped as RFC 4514 2.4 asks, so a comma in it cannot pose as a separator."""
    escaped = "".join("\\" + char if char in ',+"\\<>;' else char for char in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped.replace("\0", "\\00")


_RDN_KEYS = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
             "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L", "domainComponent": "DC",
             "streetAddress": "STREET", "userId": "UID"}
