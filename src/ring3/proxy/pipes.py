"""The pipes that splice(2) moves proxied bodies through, pooled as HAProxy pools them: a pipe costs a
pipe2 and a fcntl to make and two closes to drop, so each one carries many bodies. A pipe goes back to
the pool only empty; one left holding bytes (a client gone mid-body) is closed.
"""

from __future__ import annotations

import fcntl
import os

from ring3.observe.ledger import LEDGER

PIPE_SIZE = 1024 * 1024  # asked for with F_SETPIPE_SZ; fewer round trips per body than the 64 KiB default
MAX_IDLE_PIPES = 64
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class PipePool:
    __slots__ = ("idle", "size")

    def __init__(self) -> None:
        self.idle: list[tuple[int, int]] = []
        self.size = PIPE_SIZE

    def take(self) -> tuple[int, int]:
        if self.idle:
            return self.idle.pop()
        LEDGER.pipe += 1
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self.size = fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # above /proc/sys/fs/pipe-max-size, or the user's pipe quota: the default size
            self.size = 64 * 1024
        return read_end, write_end

    def give_back(self, pipe: tuple[int, int], clean: bool) -> None:
        if clean and len(self.idle) < MAX_IDLE_PIPES:
            self.idle.append(pipe)
            return
        LEDGER.close += 2
        os.close(pipe[0])
        os.close(pipe[1])


PIPES = PipePool()
