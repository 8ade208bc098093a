"""One connection to an upstream: connected without blocking, read by a callback that stays registered
for the connection's whole life (an idle pooled connection that the upstream closes, or that says
anything at all, is noticed and dropped at once; a request costs no epoll_ctl), written without copies
where the socket takes it all.

Whoever uses the connection sets `sink`, which receives every read (b"" at the end of stream). The
connection is reused only at a clean message boundary: its user says so with `release()`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from ring3.observe.ledger import LEDGER

if TYPE_CHECKING:
    from ring3.proxy.upstreams import Address, Upstream

RECV_SIZE = 64 * 1024
# A response head is looked at in place (MSG_PEEK) up to this size when its body may be spliced, so that
# exactly the head is read into Python and the body stays in the kernel.
PEEK_SIZE = 8 * 1024


class UpstreamGone(Exception):
    """The upstream connection failed or closed; `sent` says whether any request byte had left."""


class ConnectFailed(Exception):
    """No connection could be made (refused, unreachable, timed out)."""


class UpstreamConnection:
    """A socket to one upstream, with its reader always registered while open."""

    __slots__ = ("_drain", "_loop", "_pending", "_reading", "_writing", "closed", "fd", "idle_since",
                 "on_idle_close", "on_readable_raw", "peek", "served", "sink", "sock", "upstream")

    def __init__(self, sock: socket.socket, upstream: Upstream, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.upstream = upstream
        self._loop = loop
        self.sink: Callable[[bytes], None] | None = None
        self.on_idle_close: Callable[[UpstreamConnection], None] | None = None
        # Set while a body is spliced: readability is handed over as is (no recv into Python).
        self.on_readable_raw: Callable[[], None] | None = None
        # Set while a head is awaited whose body may be spliced: given the bytes waiting (peeked, not
        # read), it returns how many to read now (the head's size), or 0 to read as usual.
        self.peek: Callable[[bytes], int] | None = None
        self.served = 0
        self.idle_since = 0.0
        self.closed = False
        self._pending: memoryview | None = None
        self._drain: asyncio.Future[None] | None = None
        self._writing = False
        self._reading = True
        loop.add_reader(self.fd, self._on_readable)

    # -- reading ----------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        raw = self.on_readable_raw
        if raw is not None:
            raw()
            return
        size = RECV_SIZE
        peek = self.peek
        if peek is not None and self.sink is not None:
            LEDGER.recv += 1
            try:
                waiting = self.sock.recv(PEEK_SIZE, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                waiting = b""
            if waiting:
                size = peek(waiting) or RECV_SIZE
        LEDGER.recv += 1
        try:
            data = self.sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        sink = self.sink
        if sink is None:  # idle in the pool: the upstream closed it, or broke the protocol
            self.close()
            if self.on_idle_close is not None:
                self.on_idle_close(self)
            return
        LEDGER.bytes_received += len(data)
        if not data:
            self._stop_reading()
        sink(data)

    def pause_reading(self) -> None:
        self._stop_reading()

    def resume_reading(self) -> None:
        if not self._reading and not self.closed:
            self._reading = True
            self._loop.add_reader(self.fd, self._on_readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self.fd)

    # -- writing ----------------------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Send now what the socket takes; the rest waits for writability. False when some waits (await
        drain()). Raises UpstreamGone if the connection is broken."""
        if self.closed:
            raise UpstreamGone("the upstream connection is closed")
        if self._pending is not None:
            self._pending = memoryview(bytes(self._pending) + data)
            return False
        LEDGER.send += 1
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            raise UpstreamGone(os.strerror(exc.errno or errno.EPIPE)) from None
        LEDGER.bytes_copied += sent
        if sent == len(data):
            return True
        self._pending = memoryview(data)[sent:]
        self._writing = True
        self._loop.add_writer(self.fd, self._on_writable)
        return False

    def _on_writable(self) -> None:
        pending = self._pending
        assert pending is not None
        LEDGER.send += 1
        try:
            sent = self.sock.send(pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish_writing(UpstreamGone(os.strerror(exc.errno or errno.EPIPE)))
            return
        LEDGER.bytes_copied += sent
        if sent < len(pending):
            self._pending = pending[sent:]
            return
        self._finish_writing(None)

    def _finish_writing(self, error: Exception | None) -> None:
        self._pending = None
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self.fd)
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    async def drain(self) -> None:
        """Wait until everything sent has left."""
        if self._pending is None:
            return
        waiter = self._drain = self._loop.create_future()
        await waiter

    # -- the end ----------------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sink = None
        self.on_readable_raw = None
        self.peek = None
        self._stop_reading()
        self._finish_writing(UpstreamGone("the upstream connection is closed"))
        LEDGER.close += 1
        self.sock.close()


async def connect(address: Address, upstream: Upstream, loop: asyncio.AbstractEventLoop,
                  timeout: float) -> UpstreamConnection:
    """A new connection to `address` within `timeout` seconds; raises ConnectFailed."""
    LEDGER.socket += 1
    sock = socket.socket(address.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if address.family != socket.AF_UNIX:
            LEDGER.setsockopt += 1
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        LEDGER.connect += 1
        code = sock.connect_ex(address.sockaddr)
        if code in (errno.EINPROGRESS, errno.EAGAIN):
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(sock.fileno(), _wake, writable)
            try:
                await asyncio.wait_for(writable, timeout)
            except TimeoutError:
                raise ConnectFailed(f"connect timed out after {timeout:g}s") from None
            finally:
                loop.remove_writer(sock.fileno())
            LEDGER.getsockopt += 1
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise ConnectFailed(os.strerror(code))
    except BaseException:
        LEDGER.close += 1
        sock.close()
        raise
    return UpstreamConnection(sock, upstream, loop)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
