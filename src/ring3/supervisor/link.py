"""The control socket between the master and one worker, and the worker's end of it.

A SOCK_SEQPACKET pair: each message is one JSON object, and a closed end reads as b"" at the other. The
worker says {"op": "ready"} once its listeners accept; the master asks {"op": "snapshot", "id": N} and
the worker answers {"op": "snapshot", "id": N, "data": {...}}. The master's first message, sent as the
worker starts, is {"op": "hello", "ticket_keys": HEX}: the TLS session ticket keys all workers share.
When the master is gone, even by SIGKILL, the worker reads end-of-file and stops gracefully: no orphan
keeps serving on the port.

The master hands a worker its listening sockets and its end of the pair as inherited descriptors, named
in the RING3_WORKER variable: {"name": "1", "control": FD, "listeners": [FD, ...]} (a descriptor per
`server.listen` address, in order).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from ring3.observe.ledger import LEDGER
from ring3.observe.snapshot import Snapshot

ENV = "RING3_WORKER"
MAX_MESSAGE = 1 << 20  # a snapshot with many upstreams stays far below
HELLO_TIMEOUT = 10.0

logger = logging.getLogger("ring3.error")


def pair() -> tuple[socket.socket, socket.socket]:
    """A (master's end, worker's end) control pair; the worker's end is made inheritable by the caller."""
    master, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    master.setblocking(False)
    return master, worker


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


class WorkerLink:
    """A worker's end: its name, its inherited listeners, and the control socket to its master."""

    def __init__(self, name: str, control: socket.socket, listeners: dict[int, socket.socket],
                 ticket_keys: bytes = b"") -> None:
        self.name = name
        self.listeners = listeners
        self.ticket_keys = ticket_keys
        self._control = control
        self._loop: asyncio.AbstractEventLoop | None = None
        self._snapshot: Callable[[], Snapshot] | None = None
        self._master_gone: Callable[[], None] | None = None

    @classmethod
    def from_environment(cls) -> WorkerLink | None:
        """The link a master described in RING3_WORKER; None in a process started any other way."""
        text = os.environ.pop(ENV, None)
        if text is None:
            return None
        spec = json.loads(text)
        control = socket.socket(fileno=int(spec["control"]))
        control.settimeout(HELLO_TIMEOUT)  # the master's first word: the TLS ticket keys
        try:
            hello = json.loads(control.recv(MAX_MESSAGE) or b"{}")
        except (OSError, ValueError):
            hello = {}
        control.setblocking(False)
        listeners = {}
        for index, fd in enumerate(spec["listeners"]):
            sock = socket.socket(fileno=int(fd))
            sock.setblocking(False)
            listeners[index] = sock
        return cls(str(spec["name"]), control, listeners, bytes.fromhex(hello.get("ticket_keys", "")))

    def attach(self, loop: asyncio.AbstractEventLoop, snapshot: Callable[[], Snapshot],
               master_gone: Callable[[], None]) -> None:
        self._loop, self._snapshot, self._master_gone = loop, snapshot, master_gone
        loop.add_reader(self._control.fileno(), self._on_readable)

    def ready(self) -> None:
        self._send({"op": "ready"})

    def final(self, snapshot: Snapshot) -> None:
        """The counters as the worker ends, for the master to keep in its sums."""
        self._send({"op": "final", "data": snapshot})

    def _on_readable(self) -> None:
        LEDGER.recv += 1
        try:
            data = self._control.recv(MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._detach()
            logger.warning("the master is gone; stopping")
            if self._master_gone is not None:
                self._master_gone()
            return
        try:
            message = json.loads(data)
        except ValueError:
            logger.error("unreadable message from the master: %r", data[:80])
            return
        if message.get("op") == "snapshot" and self._snapshot is not None:
            self._send({"op": "snapshot", "id": message.get("id"), "data": self._snapshot()})

    def _send(self, message: dict[str, Any]) -> None:
        LEDGER.send += 1
        try:
            self._control.send(encode(message))
        except OSError as exc:  # the master is gone (its end reads as closed soon) or overwhelmed
            logger.debug("control message not sent: %s", exc)

    def _detach(self) -> None:
        if self._loop is not None and self._control.fileno() >= 0:
            self._loop.remove_reader(self._control.fileno())
            self._loop = None

    def close(self) -> None:
        self._detach()
        self._control.close()
