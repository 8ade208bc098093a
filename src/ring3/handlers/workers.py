"""A thread pool for WSGI that wakes its threads once per batch of jobs, not once per job.

Under the GIL, a thread pool's cost is the hand-offs: every job that wakes a thread makes that thread
wait for the GIL, which the loop's thread gives up at each socket call it makes, so the two trade the
GIL back and forth for every request. Here the loop's thread only queues jobs while it works through a
turn of the event loop, and wakes one thread when the turn is over (a call_soon, once per batch). That
thread runs the jobs it finds one after another, while the loop waits in epoll.

One thread per batch is right for applications that answer quickly. For those that block (a database
query, a sleep), a watch on the loop's side wakes one more thread whenever the oldest queued job has
waited longer than STALL seconds, up to `max_workers`: a blocked thread delays the others by at most
that long.

The interface is the part of concurrent.futures.ThreadPoolExecutor that ring3 uses: submit() returning a
concurrent Future (cancellable until it starts), and shutdown(), which waits for queued and running jobs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

STALL = 0.002  # seconds the oldest job may wait before another thread is woken


class BatchingPool:
    """`max_workers` threads started on demand, woken per batch (see the module's doc)."""

    def __init__(self, max_workers: int, loop: asyncio.AbstractEventLoop,
                 thread_name_prefix: str = "ring3-worker") -> None:
        self._max = max_workers
        self._loop = loop
        self._loop_thread = threading.get_ident()  # made by the loop's thread
        self._prefix = thread_name_prefix
        self._jobs: deque[tuple[float, Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for work
        self._woken = 0  # wake-ups sent that no thread has taken yet
        self._kick_pending = False
        self._watch: asyncio.TimerHandle | None = None
        self._closing = False

    def submit(self, function: Callable[..., T], *args: Any) -> Future[T]:
        """Queue a job; from the loop's thread the wake-up waits for the end of the loop's turn."""
        if self._closing:
            raise RuntimeError("cannot schedule new jobs after shutdown")
        future: Future[T] = Future()
        self._jobs.append((time.monotonic(), future, function, args))
        if threading.get_ident() == self._loop_thread:
            if not self._kick_pending:
                self._kick_pending = True
                self._loop.call_soon(self._kick)
        else:
            self._wake_one()
        return future

    def _kick(self) -> None:
        self._kick_pending = False
        if self._jobs:
            self._wake_one()
            self._arm_watch()

    def _wake_one(self) -> None:
        with self._cond:
            if self._idle > self._woken:
                self._woken += 1
                self._cond.notify()
            elif len(self._threads) < self._max and self._woken == 0:
                self._start_thread()

    def _arm_watch(self) -> None:
        if self._watch is None and self._jobs and not self._closing:
            self._watch = self._loop.call_later(STALL, self._on_watch)

    def _on_watch(self) -> None:
        """The loop's side: if the oldest job still waits, the threads at work are slow or blocked."""
        self._watch = None
        jobs = self._jobs
        if not jobs:
            return
        if time.monotonic() - jobs[0][0] >= STALL:
            with self._cond:
                if self._idle > self._woken:
                    self._woken += 1
                    self._cond.notify()
                elif len(self._threads) < self._max:
                    self._start_thread()
        self._arm_watch()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work, name=f"{self._prefix}_{len(self._threads)}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        cond = self._cond
        jobs = self._jobs
        while True:
            with cond:
                while not jobs:
                    if self._closing:
                        return
                    self._idle += 1
                    cond.wait()
                    self._idle -= 1
                    if self._woken:
                        self._woken -= 1
                _, future, function, args = jobs.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, function, args

    def shutdown(self, wait: bool = True) -> None:
        """Refuse new jobs; the threads finish the queued ones and stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if wait:
            for thread in list(self._threads):
                thread.join()
