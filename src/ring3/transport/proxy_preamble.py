"""A connection on a proxy_protocol listener until its PROXY header is read; then it becomes what the
listener serves (a Connection, or a TLSHandshake on a tls listener) with the header's addresses.

Reads exactly the header, so no byte of the client's is taken from the socket: a peek (recv with
MSG_PEEK, PEEK_SIZE bytes) shows it whole in the common case, and one recv of its length takes it. A
header that comes in pieces is taken piece by piece (every byte before its end is the header's), so a
slow sender never leaves the socket readable with nothing to do. Costs two recv calls per connection
when the header arrives in one segment; the next stage reads the client's bytes with its own recv, at
once if the peek saw them already there.

Missing, malformed or late (limits.proxy_protocol_timeout) headers close the connection with one
info line.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from ring3.events import ConnectionInfo
from ring3.transport.proxy_protocol import Malformed, parse

if TYPE_CHECKING:
    from ring3.server import Client, Server

logger = logging.getLogger("ring3.error")

# Larger than any v1 line (107 bytes) and v2 header without TLVs (232), with room for the TLVs HAProxy
# usually adds; a longer header is read in pieces.
PEEK_SIZE = 512


class ProxyPreamble:
    """Reads one connection's PROXY header, then hands the socket to the listener's next stage."""

    __slots__ = ("_deadline", "_fd", "_header", "_info", "_listener", "_loop", "_peer", "_server", "_sock",
                 "closed")

    def __init__(self, server: Server, sock: socket.socket, peer: str, info: ConnectionInfo,
                 listener: socket.socket) -> None:
        loop = server.loop
        self._server = server
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._peer = peer
        self._info = info
        self._listener = listener
        self._header = b""  # the header's bytes taken so far, when it came in pieces
        self.closed = False
        loop.add_reader(self._fd, self._on_readable)
        self._deadline = loop.call_later(server.config.limits.proxy_protocol_timeout, self._timed_out)

    def _on_readable(self) -> None:
        ledger = self._server.ledger
        sock = self._sock
        ledger.recv += 1
        try:
            peeked = sock.recv(PEEK_SIZE, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not peeked:
            self._refuse("closed before its PROXY header" if self._header else "closed without a byte")
            return
        data = self._header + peeked
        result = parse(data)
        if isinstance(result, Malformed):
            self._refuse(result.reason)
            return
        wanted = len(peeked) if result is None else result.length - len(self._header)
        ledger.recv += 1
        try:
            taken = sock.recv(wanted)  # the peeked bytes are there: this takes them all
        except OSError:
            self.close()
            return
        ledger.bytes_received += len(taken)
        self._header += taken
        if result is None or len(taken) < wanted:
            if len(self._header) > 0xFFFF + 16:  # cannot happen with a valid length; a safety net
                self._refuse("PROXY header too long")
            return
        self._deadline.cancel()
        info, peer = self._info, self._peer
        if result.source is not None:
            peer = result.source[0]
            info = ConnectionInfo(result.source, result.destination)
        server = self._server
        # The reader stays registered: the next stage's add_reader only swaps the callback (no epoll_ctl).
        client: Client = server.open_connection(self._listener, sock, peer, info)
        server.connection_replaced(self, client)
        if len(peeked) > wanted:  # the client's first bytes are waiting already
            client.read_now()

    def _refuse(self, reason: str) -> None:
        logger.info("%s: connection closed: %s", self._peer, reason)
        self.close()

    def _timed_out(self) -> None:
        self._refuse("PROXY header not received in time")

    def drain(self) -> None:
        """Server shutdown: a connection that has not said whom it is from is not worth waiting for."""
        self.close()

    def read_now(self) -> None:
        self._on_readable()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._deadline.cancel()
        self._loop.remove_reader(self._fd)
        self._server.ledger.close += 1
        self._sock.close()
        self._server.connection_closed(self)
