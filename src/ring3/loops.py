"""The event loops ring3 runs on, with one addition: tasks that start eagerly.

An application's coroutine usually finishes its work for a request without ever waiting (a hello-world
ASGI app, a cached page). Run as an ordinary Task, it would start on the next turn of the loop, and the
response would go out one turn later still: two more epoll_wait calls and two more callbacks per
request. `start_task` creates a real asyncio Task (so `current_task()`, cancellation, anyio cancel
scopes and `asyncio.timeout` all behave) but runs its first step at once, as Python 3.12's
`eager_start` does. If the coroutine finishes in that step, the caller has its result before
`start_task` returns.

It works because a Task schedules its first step through `loop.call_soon`: while `start_task` runs,
the loop runs that one callback immediately instead of queueing it.
"""

from __future__ import annotations

import asyncio
import contextvars
import selectors
import socket
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple, Unpack, cast

from ring3.observe.ledger import LEDGER

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# The running task of each loop: what asyncio.current_task() reads, without its Python wrapper.
_current_tasks: dict[Any, Any] = getattr(asyncio.tasks, "_current_tasks", {})


class _Ran:
    """Stands for the handle of a callback that has already run."""

    def cancel(self) -> None:
        return None


_RAN = cast(asyncio.Handle, _Ran())


if TYPE_CHECKING:  # the mixin is checked as the loop it ends up in
    _LoopBase = asyncio.AbstractEventLoop
else:
    _LoopBase = object


class _EagerStart(_LoopBase):
    """Mixin for an event loop class: `start_task` and the call_soon hook it relies on."""

    _eager_step = False

    def start_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A Task for `coro` whose first step has already run (unless a task is running now: a task
        cannot start inside another, so then it starts on the next turn as usual)."""
        loop: Any = self
        if _current_tasks.get(loop) is not None:
            task: asyncio.Task[T] = loop.create_task(coro)
            return task
        self._eager_step = True
        try:
            task = asyncio.Task(coro, loop=loop)  # what create_task does, minus its checks
        finally:
            self._eager_step = False
        return task

    def call_soon(self, callback: Callable[[Unpack[Ts]], object], *args: *Ts,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        if self._eager_step:
            self._eager_step = False  # only the Task's first step; what it schedules is queued
            if context is None:
                callback(*args)
            else:
                context.run(callback, *args)  # a Task's step handles its coroutine's exceptions
            return _RAN  # the Task drops the handle

        return super().call_soon(callback, *args, context=context)


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


class SelectorLoop(_EagerStart, asyncio.SelectorEventLoop):
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


def start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Start `coro` eagerly on ring3's loops, as a plain Task on any other loop."""
    if isinstance(loop, _EagerStart):
        return loop.start_task(coro)
    return loop.create_task(coro)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop to run on: the standard library's (with counted epoll calls) or uvloop's.

    Raises ImportError when uvloop is asked for but not installed.
    """
    if name == "uvloop":
        import uvloop

        # uvloop's own stubs disagree with AbstractEventLoop's on a few methods ring3 never calls.
        class UVLoop(_EagerStart, uvloop.Loop):  # type: ignore[misc]
            pass

        return UVLoop
    return SelectorLoop
