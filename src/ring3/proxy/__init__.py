"""The reverse proxy: a location's `proxy`, to a pool of HTTP/1.1 upstreams (TCP or Unix sockets).

handler.py (the location's handler) and attempt.py (one try on one upstream) use upstreams.py (the pool's
members and their health), balance.py (which one), pool.py (keep-alive connections), upstream_conn.py
(one connection), headers.py (the heads written each way), response.py (the upstream's response, read
strictly), relay.py and pipes.py (the body, copied or spliced) and tunnel.py (after a 101).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ring3.proxy.handler import ProxyHandler

# The proxies of this worker between their start() and close(), for /metrics: ring3.observe.metrics
# reads it only when this package is in sys.modules, so a server without a proxy never imports it.
RUNNING: list[ProxyHandler] = []
