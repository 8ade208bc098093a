"""The event loops ring3 runs on: the standard library's selector loop, with its epoll calls and its
self-pipe counted in the ledger, or uvloop's. On either, ring3.eager starts tasks eagerly.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ring3.observe.ledger import LEDGER

if TYPE_CHECKING:  # the marker is checked as the loop it ends up in
    _LoopBase = asyncio.AbstractEventLoop
else:
    _LoopBase = object


class EagerLoop(_LoopBase):
    """Marks ring3's loop classes: ring3.eager starts tasks eagerly on them. It has no slots, so its
    instances have a __dict__, where start_task puts its call_soon for a moment."""


class CountingSelector(selectors.EpollSelector):
    """epoll, counting its waits and registration changes in the ledger (Linux)."""

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        LEDGER.epoll_wait += 1
        return super().select(timeout)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        LEDGER.epoll_ctl += 1
        return super().register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        LEDGER.epoll_ctl += 1
        return super().unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if events != self.get_key(fileobj).events:  # a new callback for the same events is no syscall
            LEDGER.epoll_ctl += 1
        return super().modify(fileobj, events, data)


class SelectorLoop(EagerLoop, asyncio.SelectorEventLoop):
    """The standard library's loop on a selector that counts its epoll calls, with its self-pipe counted
    too: a thread that wakes the loop (call_soon_threadsafe: a WSGI pool thread, anyio's to_thread)
    costs a send there, and a recv here until the pipe is empty (so usually two)."""

    def __init__(self) -> None:
        super().__init__(CountingSelector())

    # The self-pipe is asyncio's private machinery (_write_to_self, _ssock, _process_self_data, unchanged
    # since 3.4), which typeshed does not declare: hence the three type: ignore below.
    # test_ledger's WSGI test under strace fails if it changes.

    def _write_to_self(self) -> None:
        # From any thread. The increment cannot be split by another thread: CPython 3.11 only switches
        # threads at calls and jumps, and there are none between its load and store.
        if getattr(self, "_csock", None) is not None:
            LEDGER.send += 1
        super()._write_to_self()  # type: ignore[misc]

    def _read_from_self(self) -> None:
        """What asyncio's own does (read the wake-up bytes until none are left), counting each recv."""
        receiver: socket.socket = self._ssock  # type: ignore[attr-defined]
        process: Callable[[bytes], None] = self._process_self_data  # type: ignore[attr-defined]
        while True:
            LEDGER.recv += 1
            try:
                data = receiver.recv(4096)
            except InterruptedError:
                continue
            except BlockingIOError:
                return
            if not data:
                return
            process(data)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop to run on: the standard library's (with counted epoll calls) or uvloop's.

    Raises ImportError when uvloop is asked for but not installed.
    """
    if name == "uvloop":
        import uvloop

        # uvloop's own stubs disagree with AbstractEventLoop's on a few methods ring3 never calls.
        class UVLoop(EagerLoop, uvloop.Loop):  # type: ignore[misc]
            pass

        return UVLoop
    return SelectorLoop
