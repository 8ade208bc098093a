"""The output path: the one place that decides how response bytes leave.

Handlers describe a body (bytes, FileRange, a sequence of them, or a stream); this module alone picks
send, sendmsg (writev) or sendfile, joins the head with a small body so both leave in one call, marks the
head MSG_MORE when sendfile follows, and counts every call in the ledger.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence

from ring3.events import FileRange, FixedBody, PipeRange, Segment
from ring3.observe.ledger import Ledger

# Joining the head and a body by copying is cheaper than a second iovec below this size.
JOIN_LIMIT = 64 * 1024
# While corked (a batch of pipelined requests is being answered), responses held in memory up to this
# many bytes are sent together by one call when the batch ends.
CORK_LIMIT = 256 * 1024
_IOV_MAX = 64
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
_SENDFILE_CHUNK = 1 << 30
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


def join_small(head: bytes, body: FixedBody) -> tuple[bytes, FixedBody | None]:
    """A head and body as send() would put them on the wire: a small bytes body joined to its head
    (one send), anything else left to follow it. For callers that keep whole messages prebuilt."""
    if type(body) is bytes and len(body) <= JOIN_LIMIT:
        return head + body, None
    return head, body


class _FileItem:
    __slots__ = ("count", "fd", "offset")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count


class _PipeItem:
    __slots__ = ("count", "fd")

    def __init__(self, fd: int, count: int) -> None:
        self.fd = fd
        self.count = count


class SealedBytes:
    """Bytes a transport has already made ready for the wire (TLS ciphertext) that the socket did not
    take yet; only a transport's own flush (ring3.transport.tls_stream) queues and sends them."""

    __slots__ = ("view",)

    def __init__(self, view: memoryview) -> None:
        self.view = view


Item = memoryview | _FileItem | _PipeItem | SealedBytes
# Every OutputPath's `_queue` while nothing waits to be sent: shared, never appended to (see _enqueue), so
# an idle connection holds no deque of its own (760 bytes).
_NOTHING_QUEUED: deque[Item] = deque()


class SendFailed(Exception):
    """The peer is gone (reset, broken pipe): the connection must be aborted."""


class OutputPath:
    """One connection's outgoing bytes: a queue of memory and file items, flushed without blocking."""

    __slots__ = (
        "_corked",
        "_drain_waiter",
        "_fd",
        "_held",
        "_held_size",
        "_ledger",
        "_loop",
        "_on_done",
        "_on_error",
        "_queue",
        "_sendfile_min",
        "_sock",
        "blocked",
        "progress_at",
    )

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, ledger: Ledger,
                 sendfile_min: int, on_error: Callable[[BaseException], None]) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._ledger = ledger
        self._sendfile_min = sendfile_min
        self._on_error = on_error
        self._queue = _NOTHING_QUEUED
        self._held: list[bytes] = []  # whole responses held back while corked
        self._held_size = 0
        self._corked = False
        self._on_done: Callable[[], None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        # The socket is full: bytes wait for it to become writable (watched with add_writer). Bytes
        # held back by cork() are not blocked: they leave at uncork().
        self.blocked = False
        self.progress_at = 0.0

    def rebind(self, on_error: Callable[[BaseException], None]) -> None:
        """Report send errors to another owner (a connection that took the socket over: HTTP/2 after
        the preface came on an HTTP/1.1 connection)."""
        self._on_error = on_error

    def cork(self) -> None:
        """Hold back whole in-memory responses until uncork(), so a batch leaves in one call."""
        self._corked = True

    def uncork(self) -> None:
        """Send what cork() held back: straight from the held bytes when nothing else is queued."""
        self._corked = False
        held = self._held
        if not held:
            return
        data = held[0] if len(held) == 1 else b"".join(held)
        self._held = []
        self._held_size = 0
        if self._queue or self.blocked:
            self._queue_bytes(data)
            return  # the writer callback sends it after what is queued
        self._send_now(data)

    def _send_now(self, data: bytes) -> bool:
        """One send of `data`, which nothing waits before; True when all of it left. What the socket
        does not take is queued, and waits for writability (a short write means the buffer is full)."""
        self._ledger.send += 1
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._on_error(SendFailed(os.strerror(exc.errno or 0)))
            return False
        self._ledger.bytes_copied += sent
        if sent == len(data):
            return True
        self._enqueue(memoryview(data)[sent:])
        self._wait_writable()
        return False

    def send(self, head: bytes, body: FixedBody | None, on_done: Callable[[], None],
             *, may_cork: bool = False) -> None:
        """Queue a response head and its (non-stream) body; `on_done` runs once all has left.

        With `may_cork` and the output corked, a response that lies wholly in memory counts as done
        once held: it leaves with the rest of the batch at uncork().
        """
        if body is None or (type(body) is bytes and len(body) <= JOIN_LIMIT):
            data = head + body if body else head
            if may_cork and self._corked and self._held_size < CORK_LIMIT:
                self._held.append(data)
                self._held_size += len(data)
                on_done()
                return
            self._release_held()
            if not self._queue and not self.blocked:
                if self._send_now(data):
                    on_done()
                elif self.blocked:
                    self._on_done = on_done  # runs once the rest has left
                return
            self._queue_bytes(data)
        else:
            self._release_held()
            if (type(body) is FileRange and not self._queue and not self.blocked
                    and body.count >= self._sendfile_min and body.count):
                if self._send_file_now(head, body):
                    on_done()
                    return
                self._on_done = on_done  # the socket is full: what is left waits for writability
                self._wait_writable()
                return
            self._queue_body(head, body)
        self._on_done = on_done
        self._flush()

    def _send_file_now(self, head: bytes, part: FileRange) -> bool:
        """The head (MSG_MORE: the file follows in the same segments) then the file by sendfile,
        straight from the caller, when nothing is queued; what the socket does not take is queued.
        True when all has left."""
        ledger = self._ledger
        ledger.send += 1
        try:
            sent = self._sock.send(head, _MSG_MORE)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            raise SendFailed(os.strerror(exc.errno or 0)) from None
        ledger.bytes_copied += sent
        if sent < len(head):
            self._enqueue(memoryview(head)[sent:])
            self._enqueue(_FileItem(part.fd, part.offset, part.count))
            return False
        try:
            sent = self._sendfile(part.fd, part.offset, min(part.count, _SENDFILE_CHUNK))
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            raise SendFailed(os.strerror(exc.errno or 0)) from None
        if sent == part.count:
            return True
        self._enqueue(_FileItem(part.fd, part.offset + sent, part.count - sent))
        return False

    def _release_held(self) -> None:
        """Queue held bytes ahead of what comes next, so the order on the wire is kept."""
        if self._held:
            self._queue_bytes(b"".join(self._held))
            self._held = []
            self._held_size = 0

    def _queue_body(self, head: bytes, body: FixedBody) -> None:
        if isinstance(body, bytes):
            self._queue_bytes(head)
            self._queue_bytes(body)
        elif isinstance(body, FileRange):
            self._queue_file(head, body)
        else:
            pending = head
            for segment in body:
                if isinstance(segment, bytes):
                    pending += segment
                else:
                    self._queue_file(pending, segment)
                    pending = b""
            if pending:
                self._queue_bytes(pending)

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything queued has left (now, if nothing is queued)."""
        self._release_held()
        if not self._queue:
            callback()
        else:
            self._on_done = callback

    def write(self, data: bytes) -> None:
        """Send bytes outside a whole response (100 Continue, WebSocket frames): straight to the socket
        when nothing waits before them, else queued behind what does."""
        if not self._queue and not self._held and not self.blocked:
            self._send_now(data)
            return
        self._release_held()
        self._queue_bytes(data)
        self._flush()

    def write_segments(self, segments: Sequence[Segment | PipeRange | bytearray]) -> None:
        """Queue pieces of a stream body as they are (bytes by writev, file ranges by sendfile or
        pread) and flush."""
        self._release_held()
        try:
            for segment in segments:
                if isinstance(segment, FileRange):
                    self._queue_file(b"", segment)
                elif isinstance(segment, PipeRange):
                    if segment.count:
                        self._enqueue(_PipeItem(segment.fd, segment.count))
                else:  # bytes, or a bytearray a caller read into (HTTP/2's DATA frames of a file)
                    self._queue_bytes(segment)
        except (SendFailed, OSError) as exc:
            self._on_error(exc)
            return
        self._flush()

    async def drain(self) -> None:
        """Wait until the queue is empty (backpressure for stream bodies)."""
        if not self._queue:
            return
        waiter = self._drain_waiter = self._loop.create_future()
        await waiter

    def close(self) -> None:
        """Drop whatever is queued and stop watching the socket for writability. The connection's
        error callback is let go, so that the connection is freed by reference counting."""
        self._on_error = _ignore_error
        self._queue = _NOTHING_QUEUED
        self._held = []
        self._held_size = 0
        self._on_done = None
        if self.blocked:
            self.blocked = False
            self._loop.remove_writer(self._fd)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(SendFailed("connection closed"))
        self._drain_waiter = None

    # -- queueing ---------------------------------------------------------------------------------

    def _enqueue(self, item: Item) -> None:
        queue = self._queue
        if queue is _NOTHING_QUEUED:
            queue = self._queue = deque()
        queue.append(item)

    def _queue_bytes(self, data: bytes | bytearray) -> None:
        if data:
            self._enqueue(memoryview(data))

    def _queue_file(self, before: bytes, part: FileRange) -> None:
        if part.count < self._sendfile_min:
            # Small: one pread, joined to what precedes it so both leave in one send.
            self._ledger.pread += 1
            data = os.pread(part.fd, part.count, part.offset)
            if len(data) != part.count:
                raise SendFailed("file shrank while being sent")
            self._queue_bytes(before + data)
            return
        self._queue_bytes(before)
        if part.count:
            self._enqueue(_FileItem(part.fd, part.offset, part.count))

    # -- flushing ---------------------------------------------------------------------------------

    def _flush(self) -> None:
        try:
            done = self._send_queued()
        except SendFailed as exc:
            self._on_error(exc)
            return
        if done:
            if self.blocked:
                self.blocked = False
                self._loop.remove_writer(self._fd)
            self._finish()
        elif not self.blocked:
            self._wait_writable()

    def _wait_writable(self) -> None:
        self.blocked = True
        self.progress_at = self._loop.time()
        self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        self.progress_at = self._loop.time()
        self._flush()

    def _finish(self) -> None:
        self._queue = _NOTHING_QUEUED  # empty: the connection's own deque can go
        on_done = self._on_done
        if on_done is not None:
            self._on_done = None
            on_done()
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _send_queued(self) -> bool:
        """Send as much as the socket takes; True when the queue is empty.

        A short write means the socket buffer is full: wait for writability rather than pay for a
        call that would only return EAGAIN.
        """
        queue = self._queue
        ledger = self._ledger
        try:
            while queue:
                item = queue[0]
                if isinstance(item, _FileItem):
                    wanted = min(item.count, _SENDFILE_CHUNK)
                    sent = self._sendfile(item.fd, item.offset, wanted)
                    item.offset += sent
                    item.count -= sent
                    if item.count == 0:
                        queue.popleft()
                    elif sent < wanted:
                        return False
                    continue
                if isinstance(item, _PipeItem):
                    ledger.splice += 1
                    sent = os.splice(item.fd, self._fd, item.count, flags=_SPLICE_FLAGS)
                    ledger.bytes_zero_copy += sent
                    item.count -= sent
                    if item.count == 0:
                        queue.popleft()
                    else:
                        return False
                    continue
                wanted, sent = self._send_memory(queue)
                ledger.bytes_copied += sent
                _consume(queue, sent)
                if sent < wanted:
                    return False
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            raise SendFailed(os.strerror(exc.errno or 0)) from None
        return True

    def _sendfile(self, fd: int, offset: int, count: int) -> int:
        """One counted sendfile of `count` bytes at most; 0 bytes sent means the file shrank."""
        self._ledger.sendfile += 1
        sent = os.sendfile(self._fd, fd, offset, count)
        if sent == 0:
            raise SendFailed("file shrank while being sent")
        self._ledger.bytes_zero_copy += sent
        return sent

    def _send_memory(self, queue: deque[Item]) -> tuple[int, int]:
        """One send or sendmsg of the memory items at the head of the queue: (wanted, sent)."""
        first = queue[0]
        assert isinstance(first, memoryview)
        if len(queue) == 1:
            self._ledger.send += 1
            return len(first), self._sock.send(first)
        if isinstance(queue[1], _FileItem | _PipeItem):
            self._ledger.send += 1  # the head, corked: sendfile (or splice) follows
            return len(first), self._sock.send(first, _MSG_MORE)
        buffers: list[memoryview] = []
        for entry in queue:
            if not isinstance(entry, memoryview) or len(buffers) == _IOV_MAX:
                break
            buffers.append(entry)
        self._ledger.sendmsg += 1
        return sum(len(b) for b in buffers), self._sock.sendmsg(buffers)


def _ignore_error(exc: BaseException) -> None:
    pass


def _consume(queue: deque[Item], sent: int) -> None:
    """Drop `sent` bytes from the memory items at the head of the queue."""
    while sent:
        head = queue[0]
        assert isinstance(head, memoryview)
        if sent >= len(head):
            sent -= len(head)
            queue.popleft()
        else:
            queue[0] = head[sent:]
            return
