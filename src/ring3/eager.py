"""Tasks that start eagerly, on ring3's event loops (ring3.loops).

An application's coroutine usually finishes its work for a request without ever waiting (a hello-world
ASGI app, a cached page). Run as an ordinary Task, it would start on the next turn of the loop, and the
response would go out one turn later still: two more epoll_wait calls and two more callbacks per
request. `start_task` creates a real asyncio Task (so `current_task()`, cancellation, anyio cancel
scopes and `asyncio.timeout` all behave) but runs its first step at once, as Python 3.12's
`eager_start` does. If the coroutine finishes in that step, the caller has its result before
`start_task` returns.

It works because a Task schedules its first step through `loop.call_soon`, looked up on the loop
object: while `start_task` creates the Task, the loop object carries a `call_soon` of its own that runs
that one callback at once and removes itself. Every other call_soon is the loop's class's own, with no
layer in between. This module is compiled in the compiled build (ring3.compiled).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ring3.loops import EagerLoop

T = TypeVar("T")

# The running task of each loop: what asyncio.current_task() reads, without its Python wrapper.
_current_tasks: dict[Any, Any] = getattr(asyncio.tasks, "_current_tasks", {})
_HOOK = "call_soon"


class _Ran:
    """Stands for the handle of a callback that has already run."""

    def cancel(self) -> None:
        return None


_RAN: Any = _Ran()
_starting: Any = None  # the loop whose Task is being created by start_task, while it is


def start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A Task for `coro` whose first step has already run, on ring3's loops (unless a task is running
    now: a task cannot start inside another, so then it starts on the next turn as usual); a plain
    Task on any other loop."""
    global _starting
    if not isinstance(loop, EagerLoop) or _current_tasks.get(loop) is not None:
        return loop.create_task(coro)
    _starting = loop
    setattr(loop, _HOOK, _run_now)  # the instance's attribute hides the class's method
    try:
        return asyncio.Task(coro, loop=loop)  # what create_task does, minus its checks
    finally:
        if _starting is not None:  # the Task never asked (it failed before its first step)
            _starting = None
            delattr(loop, _HOOK)


def _run_now(callback: Callable[..., object], *args: Any,
             context: contextvars.Context | None = None) -> Any:
    """The Task's first step, run now instead of queued; what that step schedules is queued as usual."""
    global _starting
    loop = _starting
    _starting = None
    delattr(loop, _HOOK)
    if context is None:
        callback(*args)
    else:
        context.run(callback, *args)  # a Task's step handles its coroutine's exceptions
    return _RAN  # the Task drops the handle
