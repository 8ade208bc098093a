"""The master's view of one worker process: how it is started, what it said, and how it ended."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ring3.observe.snapshot import Snapshot
from ring3.supervisor.link import ENV, MAX_MESSAGE, encode, pair

logger = logging.getLogger("ring3.error")

SNAPSHOT_TIMEOUT = 1.0  # a worker that does not answer a scrape in this long is left out of it


class Worker:
    """One worker process: its slot name ("1".."N"), its generation (one per reload), its control socket."""

    def __init__(self, name: str, generation: int, argv: Sequence[str], listeners: Sequence[socket.socket],
                 loop: asyncio.AbstractEventLoop, on_message: Callable[[Worker, dict[str, Any]], None],
                 ticket_keys: bytes) -> None:
        self.name = name
        self.generation = generation
        self.ready = False
        self.retiring = False
        self.final: Snapshot | None = None  # the counters it sent as it ended
        self.started = loop.time()
        self.became_ready: asyncio.Future[bool] = loop.create_future()
        self._loop = loop
        self._on_message = on_message
        self._asked: dict[int, asyncio.Future[Snapshot]] = {}
        self._next_id = 0
        control, theirs = pair()
        spec = {"name": name, "control": theirs.fileno(), "listeners": [sock.fileno() for sock in listeners]}
        env = dict(os.environ)
        env[ENV] = json.dumps(spec)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ring3", *argv], env=env, close_fds=True,
                pass_fds=[theirs.fileno(), *(sock.fileno() for sock in listeners)])
        except OSError:
            control.close()
            raise
        finally:
            theirs.close()
        self.pid = self.process.pid
        self._control: socket.socket | None = control
        with contextlib.suppress(OSError):  # if it is gone already, its exit says why
            control.send(encode({"op": "hello", "ticket_keys": ticket_keys.hex()}))
        loop.add_reader(control.fileno(), self._on_readable)

    def __repr__(self) -> str:
        return f"worker {self.name} (pid {self.pid})"

    def _on_readable(self) -> None:
        self._read_one()

    def _read_one(self) -> bool:
        """Take one message; False when none is waiting or the worker's end is closed."""
        if self._control is None:
            return False
        try:
            data = self._control.recv(MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self._hang_up()
            return False
        try:
            message = json.loads(data)
        except ValueError:
            logger.error("%r sent an unreadable message: %r", self, data[:80])
            return True
        op = message.get("op")
        if op == "snapshot":
            asked = self._asked.pop(message.get("id", -1), None)
            if asked is not None and not asked.done():
                asked.set_result(message["data"])
        elif op == "final":
            self.final = message.get("data")
        elif op == "ready" and not self.ready:
            self.ready = True
            if not self.became_ready.done():
                self.became_ready.set_result(True)
        self._on_message(self, message)
        return True

    def _hang_up(self) -> None:
        """The worker's end is closed: it exited (or is exiting)."""
        if self._control is not None:
            self._loop.remove_reader(self._control.fileno())
            self._control.close()
            self._control = None
        for asked in self._asked.values():
            if not asked.done():
                asked.cancel()
        self._asked.clear()

    async def snapshot(self) -> Snapshot | None:
        """The worker's counters now, or None if it does not answer in time."""
        if self._control is None:
            return None
        self._next_id += 1
        number = self._next_id  # its own: another scrape may ask before this answer comes
        asked: asyncio.Future[Snapshot] = self._loop.create_future()
        self._asked[number] = asked
        try:
            self._control.send(encode({"op": "snapshot", "id": number}))
            return await asyncio.wait_for(asked, SNAPSHOT_TIMEOUT)
        except (OSError, TimeoutError, asyncio.CancelledError):
            return None
        finally:
            self._asked.pop(number, None)

    def signal(self, signum: int) -> None:
        if self.process.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def retire(self) -> None:
        """Drain: finish in-flight responses within shutdown_grace, then exit."""
        self.retiring = True
        self.signal(signal.SIGTERM)

    def exited(self) -> int | None:
        """The exit status (negative: the signal) once the process has ended; reaps it."""
        status = self.process.poll()
        if status is not None:
            while self._read_one():  # what it said last (its final counters) is still to be read
                pass
            self._hang_up()
            if not self.became_ready.done():
                self.became_ready.set_result(False)
        return status


def describe_exit(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"
