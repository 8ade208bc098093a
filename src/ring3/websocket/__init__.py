"""WebSockets (RFC 6455, permessage-deflate of RFC 7692) for ASGI applications, framed by wsproto.

Three layers, each small enough to read in one sitting:
- handshake.py: plain functions that check an opening handshake and build the 101 that accepts it;
- session.py: WebSocketSession, the protocol that takes a connection over after the 101 (events.Upgrade):
  wsproto's sans-IO framing wired to the connection's Channel, with backpressure and the ping timer;
- asgi.py: WebSocketEndpoint, the ASGI 3 bridge that ASGIHandler calls for a WebSocket request.

Importing this package needs wsproto; apps.py answers WebSocket requests as plain HTTP without it.
"""

from ring3.websocket.asgi import WebSocketEndpoint
from ring3.websocket.session import Closed, WebSocketSession

__all__ = ["Closed", "WebSocketEndpoint", "WebSocketSession"]
