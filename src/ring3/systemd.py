"""systemd's two protocols, with no library: readiness notification (sd_notify: a datagram to
$NOTIFY_SOCKET) and socket activation (the listening sockets systemd passes as descriptors 3 and up, with
$LISTEN_FDS and $LISTEN_PID).

Both are no-ops outside systemd: without $NOTIFY_SOCKET nothing is sent, without $LISTEN_FDS (or with a
$LISTEN_PID of another process) nothing is inherited.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence

from ring3.config import parse_listen
from ring3.listeners import bound_to, describe

logger = logging.getLogger("ring3.error")

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START: the first descriptor systemd passes


def notify(*states: str) -> bool:
    """Send state lines ("READY=1", "RELOADING=1", "STOPPING=1", "STATUS=...", "MAINPID=N") to the
    service manager; False when there is none or the datagram could not be sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not states:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(states).encode(), address)
    except OSError as exc:
        logger.warning("systemd notification %s failed: %s", states[0], exc)
        return False
    return True


def reloading() -> bool:
    """RELOADING=1, with the monotonic time systemd 253 and later wants beside it."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def activated_sockets() -> list[socket.socket]:
    """The listening sockets systemd passed to this process (none unless $LISTEN_PID is ours). The
    variables are removed so that no child process takes them for its own."""
    count, pid = os.environ.get("LISTEN_FDS", ""), os.environ.get("LISTEN_PID", "")
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if not count.isdigit() or not pid.isdigit() or int(pid) != os.getpid():
        return []
    found = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            logger.warning("systemd passed descriptor %d, not a stream socket; ignored", fd)
            sock.detach()
            continue
        sock.setblocking(False)
        found.append(sock)
    return found


def activated_listeners(listen: Sequence[str]) -> dict[int, socket.socket]:
    """The sockets systemd passed, by the index of the `server.listen` address each one is bound to; a
    passed socket that no address names is closed, with a warning."""
    found: dict[int, socket.socket] = {}
    sockets = activated_sockets()
    for index, text in enumerate(listen):
        match = next((sock for sock in sockets if bound_to(sock, parse_listen(text))), None)
        if match is not None:
            found[index] = match
            sockets.remove(match)
    for sock in sockets:
        logger.warning("systemd passed a socket on %s, which server.listen does not name; closed",
                       describe(sock))
        sock.close()
    return found
