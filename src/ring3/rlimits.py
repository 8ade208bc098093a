"""The process's limit on open descriptors, raised to what the connection limit needs."""

from __future__ import annotations

import logging
import resource

logger = logging.getLogger("ring3.error")


# Descriptors a worker needs beside its connections and cached open files: listeners, the event loop's
# epoll and self-pipe, log files, files being opened.
FD_HEADROOM = 64


def raise_open_files_limit(connections: int, open_files: int) -> None:
    """Raise the soft limit on open descriptors (RLIMIT_NOFILE) towards the hard one, as nginx's
    worker_rlimit_nofile does, so that `connections` can be reached: the 1024 many systems start with
    cannot hold 10,000 connections. Warn when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + open_files + FD_HEADROOM
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError) as exc:
            logger.warning("could not raise the open files limit from %d to %d: %s", soft, wanted, exc)
            return
        soft = wanted
    if soft < needed:
        logger.warning("max_connections %d and open_files_max %d need about %d descriptors; the hard "
                       "limit is %d (raise it with ulimit -Hn or LimitNOFILE=)", connections, open_files,
                       needed, soft)
