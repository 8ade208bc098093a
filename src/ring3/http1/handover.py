"""Where an HTTP/1.1 connection gives itself over: to an H2Connection when its first bytes are the
HTTP/2 connection preface (h2c with prior knowledge), or to the protocol a 101 switches to (WebSocket).
The connection's friend, as http1/writers.py is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ring3.http1.writers import UpgradeChannel

if TYPE_CHECKING:
    from ring3.events import Upgrade
    from ring3.http1.connection import Connection

_PREFACE_LINE = b"PRI * HTTP/2.0\r\n"  # the start of HTTP/2's connection preface


def take_h2c(old: Connection, data: bytes) -> bool:
    """The HTTP/2 connection preface opens a cleartext connection (h2c with prior knowledge): an
    H2Connection takes the socket, its reader registration and the output path over."""
    server = old._server
    if (old.tls is not None or old._upgrade is not None or not server.config.http2.cleartext
            or not (data.startswith(_PREFACE_LINE) or _PREFACE_LINE.startswith(data))):
        return False  # "PRI /x HTTP/1.1" stays an HTTP/1.1 request; a broken preface is HTTP/2's error
    from ring3.http2.connection import H2Connection

    old._closed = True  # the HTTP/1.1 connection is done; the socket lives on in the new one
    old._timer.close()
    new = H2Connection(server, old._sock, old._peer, old._info, output=old._output, handler=old._handler)
    server.connection_replaced(old, new)
    new.receive(data)
    return True


def switch_protocols(connection: Connection, upgrade: Upgrade) -> None:
    """The 101 head has left: from now on the bytes belong to `upgrade`."""
    connection._response_sent = True
    connection._account()
    connection._upgrade = upgrade
    connection._request = None
    connection._body = None
    connection._events.clear()
    upgrade.start(UpgradeChannel(connection), connection._parser.upgrade_data)
    if not connection._closed and not connection._eof and not connection._reading:
        connection._reading = True
        connection._loop.add_reader(connection._fd, connection._on_readable)
