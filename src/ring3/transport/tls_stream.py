"""One TLS connection's bytes: OpenSSL over memory buffers, with ring3 making every system call.

Measured on this machine (2026-12-01, `python3 bench/tls_transport.py`): a non-blocking `ssl.SSLSocket`,
where OpenSSL reads the socket itself, costs the same CPU per 1 KiB request as an `ssl.SSLObject` over two
`MemoryBIO`s (27.6-29.1 against 26.0-30.2 us; 31.9-40.3 against 30.1-39.5 in a slower state at 20:57
UTC: noise either way), but OpenSSL reads a record in two calls
(its 5-byte header, then the rest) where one `recv` of ours takes whole records: 2 reads per request
against 1 under strace. Over memory buffers ring3 also knows each call it makes, so the ledger counts
them exactly, and it can encrypt several responses (or a head and the start of a file) into one `send`.

So this output path encrypts plaintext only when it is about to be sent: queued items stay plaintext
(and files stay descriptors) until the socket can take them, and ciphertext that the socket did not take
waits at the head of the queue as a sealed item. Records must leave in the order they were made, so
nothing is encrypted while sealed bytes wait, and control records (alerts, close_notify) go right behind
the sealed bytes, ahead of any plaintext that is still unencrypted.

Without kernel TLS, files cannot go out with sendfile: they are read in FILE_CHUNK pieces into one reused
buffer and encrypted from there, a chunk at a time as the socket drains (backpressure).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable

from ring3.events import FileRange
from ring3.observe.ledger import Ledger
from ring3.output import _NOTHING_QUEUED, OutputPath, SealedBytes, SendFailed, _FileItem

# The most plaintext one TLS record holds: what each read of OpenSSL's asks for. (Python allocates the
# size asked for, then shrinks it: asking for more costs a mmap, mremap and munmap per read.)
RECORD_SIZE = 16 * 1024
# Plaintext encrypted per send at most: a head and the start of a file, or pieces of a large file.
FILE_CHUNK = 256 * 1024
_CHUNK = bytearray(FILE_CHUNK)  # every file read lands here, then is encrypted at once (one thread)
_CHUNK_VIEW = memoryview(_CHUNK)


class TLSOutputPath(OutputPath):
    """The output path of a TLS connection; it also decrypts what the connection reads (`recv`)."""

    __slots__ = ("_broken", "_draining", "_early", "_incoming", "_obj", "_outgoing", "_raw", "_shut",
                 "closing")

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, ledger: Ledger,
                 sendfile_min: int, on_error: Callable[[BaseException], None], obj: ssl.SSLObject,
                 incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        super().__init__(sock, loop, ledger, sendfile_min, on_error)
        self._obj = obj
        self._incoming = incoming
        self._outgoing = outgoing
        self._raw = sock.send
        self._early = b""  # plaintext decrypted before the connection existed (it came with Finished)
        self._broken = False  # a send failed: no close_notify can follow
        self._shut = False  # close_notify made: no more records of ours
        self._draining = False  # the connection lingers: what arrives is dropped undecrypted
        # The connection closes after the whole response now handed over (bytes, files: never a
        # stream, whose queue empties between pieces): its close_notify leaves in the same send as
        # the response's last bytes, as soon as the queue is empty.
        self.closing = False

    # -- reading ----------------------------------------------------------------------------------

    def recv(self, size: int) -> bytes:
        """Like socket.recv: plaintext, b"" at the end (close_notify or EOF); BlockingIOError when a
        read brought no whole record yet. One counted recv per call."""
        early = self._early
        if early:
            self._early = b""
            return early
        ledger = self._ledger
        ledger.recv += 1
        data = self._sock.recv(size)
        ledger.bytes_received += len(data)
        if not data or self._draining:
            return data
        self._incoming.write(data)
        return self.decrypt()

    def decrypt(self, flush: bool = True) -> bytes:
        """The plaintext of the whole records received so far (BlockingIOError if there is none).
        Records OpenSSL makes while reading (a KeyUpdate's answer, alerts) are sent, unless `flush`
        is False: then they wait for the next send."""
        obj = self._obj
        try:
            data = obj.read(RECORD_SIZE)
        except ssl.SSLWantReadError:
            if flush:
                self.send_control()
            raise BlockingIOError from None
        except ssl.SSLZeroReturnError:  # the client's close_notify
            return b""
        if self._incoming.pending:
            pieces = [data]
            while self._incoming.pending:
                try:
                    pieces.append(obj.read(RECORD_SIZE))
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
            data = b"".join(pieces)
        if flush and self._outgoing.pending:
            self.send_control()
        return data

    def hold_early(self, data: bytes) -> None:
        """Plaintext that arrived with the handshake's end: the connection's first read returns it."""
        self._early = data

    # -- closing ----------------------------------------------------------------------------------

    def close_notify(self) -> None:
        """Tell the client no more data follows (once; best effort, never waits): what it gets before
        the connection closes, so it can tell a whole response from a cut one."""
        self._draining = True
        if self._shut or self._broken:
            return
        self._seal_end()
        if self._queue or self.blocked:
            return  # unsent data is being dropped: the close_notify could not follow it anyway
        cipher = self._outgoing.read()
        if cipher:
            self._ledger.send += 1
            try:
                self._raw(cipher)
            except OSError:
                pass

    # -- sending ----------------------------------------------------------------------------------

    def _seal_end(self) -> None:
        """Make the close_notify now, after the last plaintext (once)."""
        if not self._shut:
            self._shut = True
            try:
                self._obj.unwrap()
            except ssl.SSLError:
                pass  # it waits for the client's close_notify, which nobody waits for here

    def _send_now(self, data: bytes) -> bool:
        self._obj.write(data)
        self._ledger.bytes_encrypted += len(data)
        if self.closing:
            self._seal_end()
        try:
            if self._push(self._outgoing.read()):
                return True
        except SendFailed as exc:
            self._on_error(exc)
            return False
        self._wait_writable()
        return False

    def _send_file_now(self, head: bytes, part: FileRange) -> bool:
        self._enqueue(memoryview(head))
        self._enqueue(_FileItem(part.fd, part.offset, part.count))
        if self._send_queued():
            self._queue = _NOTHING_QUEUED
            return True
        return False

    def send_control(self) -> None:
        """Send the records OpenSSL made on its own (alerts, handshake messages) ahead of plaintext
        still queued; they never wait behind it."""
        cipher = self._outgoing.read()
        if not cipher:
            return
        queue = self._queue
        if not queue and not self.blocked:
            try:
                if not self._push(cipher):
                    self._wait_writable()
            except SendFailed as exc:
                self._on_error(exc)
            return
        first = queue[0] if queue else None
        if type(first) is SealedBytes:
            first.view = memoryview(bytes(first.view) + cipher)
        else:
            self._enqueue_front(SealedBytes(memoryview(cipher)))

    def _enqueue_front(self, item: SealedBytes) -> None:
        self._enqueue(item)  # makes sure the queue is this path's own deque
        self._queue.rotate(1)

    def _push(self, cipher: bytes | memoryview) -> bool:
        """One send of ciphertext nothing waits before; what the socket does not take waits, sealed,
        at the head of the queue. True when all of it left."""
        ledger = self._ledger
        ledger.send += 1
        try:
            sent = self._raw(cipher)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._broken = True
            raise SendFailed(os.strerror(exc.errno or 0)) from None
        ledger.bytes_copied += sent
        if sent == len(cipher):
            return True
        self._enqueue_front(SealedBytes(memoryview(cipher)[sent:]))
        return False

    def _send_queued(self) -> bool:
        """Encrypt and send what is queued, about FILE_CHUNK of plaintext per send; True when the
        queue is empty. Stops at the first short send: the socket is full."""
        queue = self._queue
        ledger = self._ledger
        obj = self._obj
        outgoing = self._outgoing
        while queue:
            first = queue[0]
            if type(first) is SealedBytes:
                queue.popleft()
                if not self._push(first.view):
                    return False
                continue
            while queue and outgoing.pending < FILE_CHUNK:
                item = queue[0]
                if isinstance(item, _FileItem):
                    self._encrypt_file(item)
                    if item.count == 0:
                        queue.popleft()
                    continue
                assert isinstance(item, memoryview)
                if len(item) > FILE_CHUNK:
                    queue[0] = item[FILE_CHUNK:]
                    item = item[:FILE_CHUNK]
                else:
                    queue.popleft()
                obj.write(item)
                ledger.bytes_encrypted += len(item)
            if not queue and self.closing:
                self._seal_end()
            if not self._push(outgoing.read()):
                return False
        return True

    def _encrypt_file(self, item: _FileItem) -> None:
        """Read the next piece of a file into the shared buffer and encrypt it from there."""
        view = _CHUNK_VIEW[:min(item.count, FILE_CHUNK)]
        self._ledger.pread += 1
        try:
            got = os.preadv(item.fd, [view], item.offset)
        except OSError as exc:
            raise SendFailed(f"cannot read the file: {exc.strerror}") from None
        if got == 0:
            raise SendFailed("file shrank while being sent")
        self._obj.write(view[:got])
        self._ledger.bytes_encrypted += got
        item.offset += got
        item.count -= got
