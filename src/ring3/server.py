"""The server: listeners, the accept loop, the connection limit, and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from ring3 import systemd
from ring3.config import Config, ListenAddress, parse_listen
from ring3.config.loader import worker_count
from ring3.dates import DateCache
from ring3.events import ConnectionInfo
from ring3.handlers import Handler
from ring3.http1.connection import Connection
from ring3.http1.parser import H1Limits
from ring3.listeners import bind, describe, nodelay_inherited, raw_accept
from ring3.loops import loop_factory
from ring3.observe.access_log import AccessLog, reopen_all
from ring3.observe.admin import AdminHandler
from ring3.observe.ledger import LEDGER
from ring3.observe.snapshot import Snapshot, take
from ring3.replay import ReplayCache
from ring3.rlimits import raise_open_files_limit

if TYPE_CHECKING:
    from ring3.http2.connection import H2Connection
    from ring3.http2.protocol import H2Settings
    from ring3.supervisor.link import WorkerLink
    from ring3.transport.addresses import AddressSet
    from ring3.transport.proxy_preamble import ProxyPreamble
    from ring3.transport.tls_context import ServerTLS
    from ring3.transport.tls_handshake import TLSHandshake

    Client: TypeAlias = Connection | TLSHandshake | H2Connection | ProxyPreamble

logger = logging.getLogger("ring3.error")

ACCEPT_BATCH = 64  # connections accepted per readiness callback
ACCEPT_BACKOFF = 0.5  # seconds without accepting after EMFILE/ENFILE
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Server:
    """Serves one handler on the configured listeners, in this process's event loop."""

    def __init__(self, config: Config, handler: Handler,
                 loop: asyncio.AbstractEventLoop | None = None, tls: ServerTLS | None = None,
                 inherited: dict[int, socket.socket] | None = None) -> None:
        """`tls` holds the certificates of the listeners marked tls (loaded at start if not given).
        `inherited` holds listening sockets made by another process (the master, systemd), by their
        index in `server.listen`: they are used instead of binding, and not unlinked at the end."""
        self.config = config
        self.tls = tls
        self.handler = handler
        self.loop = loop or asyncio.get_running_loop()
        limits = config.limits
        self.h1_limits = H1Limits(
            max_request_line=limits.max_request_line,
            max_header_bytes=limits.max_header_bytes,
            max_header_count=limits.max_header_count,
            max_body_size=limits.max_body_size,
        )
        self.dates = DateCache(config.server.server_header)
        self.h2_settings: H2Settings | None = None  # made with the first HTTP/2 connection
        settings = config.server
        self.replays: ReplayCache | None = (
            ReplayCache(settings.replay_cache_entries, settings.replay_max_request)
            if settings.replay_cache_entries else None)
        self._replays_by_cert: dict[str | None, ReplayCache] = {}
        self.ledger = LEDGER  # one per worker process
        self.access_log: AccessLog | None = None
        self.draining = False
        self.connections: set[Client] = set()
        self.listeners: list[socket.socket] = []
        self._inherited = inherited or {}
        # Beside other workers on shared sockets, one connection per wake-up (as nginx's multi_accept
        # off): the workers that woke with this one take the rest, instead of this one taking them all.
        self.accept_batch = 1 if worker_count(config.server.workers) > 1 else ACCEPT_BATCH
        self._addresses: dict[socket.socket, tuple[str, int | None]] = {}
        self._tls_listeners: set[socket.socket] = set()
        self._nodelay_inherited: set[socket.socket] = set()  # TCP_NODELAY set once, for every accepted
        self._accepters: dict[socket.socket, tuple[Callable[[], tuple[int, Any]], int]] = {}
        self._handlers: dict[socket.socket, Handler] = {}  # listeners with a handler of their own
        self._handshake: type[TLSHandshake] | None = None
        # With PROXY protocol listeners: those listeners, the preamble stage and the sources it accepts.
        self._proxy_listeners: set[socket.socket] = set()
        self._preamble: type[ProxyPreamble] | None = None
        self._proxy_sources: AddressSet | None = None
        # With trusted_proxies: those networks, and each listener's handler wrapped to believe them.
        self._trusted: AddressSet | None = None
        self._forwarding: dict[socket.socket, Handler] = {}
        self._accepting = False
        self._backoff: asyncio.TimerHandle | None = None
        self._idle: asyncio.Event = asyncio.Event()
        # With max_connections_per_address: open connections by client address, and each one's address.
        self._per_address: dict[str, int] = {}
        self._address_of: dict[Client, str] = {}

    # -- starting ---------------------------------------------------------------------------------

    def start(self) -> list[str]:
        """Bind every listener and start accepting; return the URLs they answer on."""
        addresses = [parse_listen(text) for text in self.config.server.listen]
        if any(address.tls for address in addresses) and self.tls is None:
            from ring3.config.loader import tls_settings
            from ring3.transport.tls_context import load_server_tls

            self.tls = load_server_tls(tls_settings(self.config), self.config.http2.enabled)
        try:
            for index, address in enumerate(addresses):
                self.listeners.append(self._inherited.get(index) or bind(address))
        except OSError:
            for sock in self.listeners:
                if sock not in self._inherited.values():
                    sock.close()
            self.listeners.clear()
            raise
        for sock, address in zip(self.listeners, addresses, strict=True):
            name = sock.getsockname()
            self._addresses[sock] = (name, None) if sock.family == socket.AF_UNIX else name[:2]
            if address.tls:
                self._tls_listeners.add(sock)
            if address.proxy_protocol or self.config.server.proxy_protocol:
                self._proxy_listeners.add(sock)
            if nodelay_inherited(sock):
                self._nodelay_inherited.add(sock)
            self._accepters[sock] = raw_accept(sock)
        self._set_redirects(addresses)
        if self._tls_listeners:
            from ring3.transport.tls_handshake import TLSHandshake

            self._handshake = TLSHandshake
        if self._proxy_listeners or self.config.server.trusted_proxies:
            self._set_proxies()
        self.access_log = AccessLog.open(self.config.server.access_log, self.loop,
                                         self.config.server.access_log_format)
        self._resume_accepting()
        return [describe(sock, sock in self._tls_listeners) for sock in self.listeners]

    def _set_redirects(self, addresses: list[ListenAddress]) -> None:
        """Give each redirect-https listener its handler, aimed at the first tls listener's port."""
        if not any(address.redirect_https for address in addresses):
            return
        from ring3.handlers.redirect import HTTPSRedirect

        port = next((self._addresses[sock][1] for sock in self.listeners if sock in self._tls_listeners
                     and sock.family != socket.AF_UNIX), None)
        redirect = HTTPSRedirect(port or 443)
        for sock, address in zip(self.listeners, addresses, strict=True):
            if address.redirect_https:
                self._handlers[sock] = redirect

    def _set_proxies(self) -> None:
        """Load the PROXY protocol stage and the trusted proxies' wrappers, for the listeners needing them."""
        from ring3.transport.addresses import AddressSet

        settings = self.config.server
        if self._proxy_listeners:
            from ring3.transport.proxy_preamble import ProxyPreamble

            self._preamble = ProxyPreamble
            self._proxy_sources = AddressSet(settings.proxy_protocol_from)
        if settings.trusted_proxies:
            from ring3.handlers.forwarded import Forwarding

            self._trusted = trusted = AddressSet(settings.trusted_proxies)
            for sock in self.listeners:
                self._forwarding[sock] = Forwarding(self, trusted, self._handlers.get(sock) or self.handler)

    # -- accepting --------------------------------------------------------------------------------

    def _resume_accepting(self) -> None:
        if self._accepting or self.draining:
            return
        self._accepting = True
        for sock in self.listeners:
            self.loop.add_reader(sock.fileno(), self._on_acceptable, sock)

    def _pause_accepting(self) -> None:
        if not self._accepting:
            return
        self._accepting = False
        for sock in self.listeners:
            self.loop.remove_reader(sock.fileno())

    def _on_acceptable(self, listener: socket.socket) -> None:
        limit = self.config.limits.max_connections
        for _ in range(self.accept_batch):
            if len(self.connections) >= limit:
                logger.warning("connection limit (%d) reached; accepting paused", limit)
                self._pause_accepting()
                return
            ledger = self.ledger
            ledger.accept += 1
            accept, family = self._accepters[listener]
            try:
                fd, address = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    logger.error("accept failed: %s; pausing %.1fs", exc.strerror, ACCEPT_BACKOFF)
                    self._pause_accepting()
                    self._backoff = self.loop.call_later(ACCEPT_BACKOFF, self._end_backoff)
                    return
                continue  # ECONNABORTED and the like: that client is gone
            sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            ledger.connections_accepted += 1
            ledger.getsockname += 1
            ledger.ioctl += 1
            sock.setblocking(False)
            if family != socket.AF_UNIX:
                if listener not in self._nodelay_inherited:
                    ledger.setsockopt += 1
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peer = address[0]
                info = ConnectionInfo((peer, address[1]), self._addresses.get(listener))
            else:
                peer = "unix"
                info = ConnectionInfo(None, self._addresses.get(listener))
            per_address = self.config.limits.max_connections_per_address
            if per_address and self._per_address.get(peer, 0) >= per_address:
                ledger.close += 1
                sock.close()  # over its address's share: refused before a byte is read
                continue
            self._idle.clear()
            client: Client
            if self._proxy_listeners and listener in self._proxy_listeners:
                assert self._preamble is not None and self._proxy_sources is not None
                if peer != "unix" and peer not in self._proxy_sources:
                    logger.info("%s: connection closed: not an allowed PROXY protocol source", peer)
                    ledger.close += 1
                    sock.close()
                    continue
                client = self._preamble(self, sock, peer, info, listener)
            else:
                client = self.open_connection(listener, sock, peer, info, at_accept=True)
            self.connections.add(client)
            if per_address:
                self._per_address[peer] = self._per_address.get(peer, 0) + 1
                self._address_of[client] = peer
            if type(client) is Connection:
                client.begin()

    def open_connection(self, listener: socket.socket, sock: socket.socket, peer: str,
                        info: ConnectionInfo, at_accept: bool = False) -> Connection | TLSHandshake:
        """The first stage of an accepted connection (after its PROXY header, if the listener wants one).
        From a trusted proxy, its requests' forwarded fields are believed (decided here, once). A
        Connection made `at_accept` waits for its `begin` (its first read, at once)."""
        handler = self._handlers.get(listener)
        if self._trusted is not None and peer in self._trusted:
            handler = self._forwarding[listener]
        if listener in self._tls_listeners:
            assert self.tls is not None and self._handshake is not None
            return self._handshake(self, sock, peer, info, self.tls, handler)
        return Connection(self, sock, peer, info, handler=handler, watch=not at_accept)

    def _end_backoff(self) -> None:
        self._backoff = None
        if len(self.connections) < self.config.limits.max_connections:
            self._resume_accepting()

    def replays_for(self, info: ConnectionInfo) -> ReplayCache | None:
        """The replay cache of a connection. With several certificates, each has its own: a request's
        bytes then decide its answer on every connection that uses it (a site may answer 421 to a name
        another certificate's connection does not cover)."""
        tls = info.tls
        if tls is None or self.replays is None or self.tls is None or len(self.tls.certificates) < 2:
            return self.replays
        found = self._replays_by_cert.get(tls.server_cert)
        if found is None:
            settings = self.config.server
            found = self._replays_by_cert[tls.server_cert] = ReplayCache(
                settings.replay_cache_entries, settings.replay_max_request)
        return found

    def connection_replaced(self, old: Client, new: Client) -> None:
        """A TLS handshake is over, or an HTTP/1.1 connection saw the HTTP/2 preface: the connection
        that carries on takes its place."""
        self.connections.discard(old)
        self.connections.add(new)
        peer = self._address_of.pop(old, None)
        if peer is not None:
            self._address_of[new] = peer
        if self.draining:
            new.drain()

    def connection_closed(self, connection: Client) -> None:
        self.connections.discard(connection)
        if self._address_of:
            peer = self._address_of.pop(connection, None)
            if peer is not None:
                left = self._per_address[peer] - 1
                if left:
                    self._per_address[peer] = left
                else:
                    del self._per_address[peer]
        if not self.connections:
            self._idle.set()
        if (not self._accepting and not self.draining and self._backoff is None
                and len(self.connections) < self.config.limits.max_connections):
            self._resume_accepting()

    # -- stopping ---------------------------------------------------------------------------------

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight responses finish for up to `grace` seconds, then close all."""
        if grace is None:
            grace = self.config.server.shutdown_grace
        self.draining = True
        self._pause_accepting()
        if self._backoff is not None:
            self._backoff.cancel()
        inherited = list(self._inherited.values())
        for sock in self.listeners:
            if sock.family == socket.AF_UNIX and sock not in inherited:
                _unlink_quietly(sock.getsockname())  # another process's socket stays: it serves on
            sock.close()
        self.listeners.clear()
        for connection in list(self.connections):
            connection.drain()
        if self.connections:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except TimeoutError:
                logger.warning("grace period over; closing %d connections", len(self.connections))
        for connection in list(self.connections):
            connection.close()
        if self.access_log is not None:
            self.access_log.close()


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


Startup = Callable[[], Awaitable[None]]
Shutdown = Callable[[float], Awaitable[None]]


class Readiness:
    """What /readyz says of this process: "starting" until the listeners accept, then "ready", then
    "draining" from the signal to stop."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = "starting"

    def __call__(self) -> str:
        return self.state


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


async def serve(config: Config, handler: Handler, *, announce: bool = True,
                startup: Startup | None = None, shutdown: Shutdown | None = None,
                tls: ServerTLS | None = None, worker: WorkerLink | None = None) -> None:
    """Run a Server (and the admin listener, if configured) until SIGTERM, SIGINT or SIGQUIT, then shut
    down gracefully. `startup` runs before the listeners open (the ASGI lifespan); `shutdown` after the
    last connection closed, with the grace period as its time limit.

    Alone, the process takes its listeners from systemd's socket activation if it was given any, binds
    the rest, and serves the admin listener itself. As a master's `worker`, it takes the master's
    listening sockets, leaves the admin listener and reloading to the master, and stops when the master
    is gone."""
    loop = asyncio.get_running_loop()
    raise_open_files_limit(config.limits.max_connections, config.static.open_files_max)
    inherited = worker.listeners if worker is not None else _activated(config)
    server = Server(config, handler, loop, tls, inherited)
    readiness = Readiness()
    started = time.time()
    name = worker.name if worker is not None else "1"

    def snapshot() -> Snapshot:
        return take(name, started, ready=readiness.state == "ready", draining=server.draining,
                    connections_open=len(server.connections))

    stop = asyncio.Event()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, reopen_all)  # logrotate's postrotate, as for nginx
    loop.add_signal_handler(signal.SIGHUP, _no_reload if worker is None else _ignore)
    admin: Server | None = None
    admin_handler: AdminHandler | None = None
    try:
        if worker is not None:
            worker.attach(loop, snapshot, stop.set)
        elif config.server.admin:  # before the startup, so that /readyz can say "starting"
            admin, admin_handler = _admin_server(config, loop, snapshot, readiness)
        if startup is not None:
            await startup()
        try:
            urls = server.start()
        except OSError:
            if shutdown is not None:
                await shutdown(config.server.shutdown_grace)
            raise
        readiness.state = "ready"
        if worker is not None:
            worker.ready()
        else:
            systemd.notify("READY=1", f"MAINPID={os.getpid()}")
        if announce:
            for url in urls:
                print(f"ring3 listening on {url}", flush=True)
            if admin is not None:
                print(f"ring3 admin on {describe(admin.listeners[0])}/metrics", flush=True)
        await stop.wait()
        readiness.state = "draining"
        if worker is None:
            systemd.notify("STOPPING=1")
        logger.info("stopping: finishing in-flight responses")
        await server.shutdown()
        if shutdown is not None:
            await shutdown(config.server.shutdown_grace)
    finally:
        if admin_handler is not None:
            admin_handler.close()
        if admin is not None:
            await admin.shutdown(0)
        if worker is not None:
            worker.final(snapshot())
            worker.close()
        # A second signal while exiting must not turn a clean exit into death by signal:
        # shutdown_grace already bounds how long the exit takes. Removing the loop's handler puts the
        # default (death) back for a moment, so the signals wait, blocked, until they are ignored.
        stopping = {*STOP_SIGNALS, signal.SIGUSR1, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
        try:
            for signum in stopping:
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_IGN)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)


def admin_config(config: Config) -> Config:
    """The config of the admin listener: the admin address alone, no access log, no PROXY header and no
    forwarded fields believed."""
    return dataclasses.replace(config, server=dataclasses.replace(
        config.server, listen=(config.server.admin,), access_log="off", proxy_protocol=False,
        trusted_proxies=()))


def _admin_server(config: Config, loop: asyncio.AbstractEventLoop, snapshot: Callable[[], Snapshot],
                  readiness: Readiness) -> tuple[Server, AdminHandler]:
    """The admin listener of a process that serves alone, and its handler."""
    def gather() -> list[Snapshot]:
        return [snapshot()]

    handler = AdminHandler(gather, readiness)
    admin = Server(admin_config(config), handler, loop)
    admin.start()
    return admin, handler


def _activated(config: Config) -> dict[int, socket.socket]:
    """systemd's sockets, if it passed any (socket activation)."""
    return systemd.activated_listeners(config.server.listen) if "LISTEN_FDS" in os.environ else {}


def _no_reload() -> None:
    logger.warning("SIGHUP: reloading needs the master process (--master, or --workers 2 and up); "
                   "this one serves on unchanged")


def _ignore() -> None:
    """A worker leaves reloading to its master."""


def run(config: Config, handler: Handler, *, startup: Startup | None = None,
        shutdown: Shutdown | None = None, tls: ServerTLS | None = None,
        worker: WorkerLink | None = None) -> None:
    """Run `serve` on the configured event loop until it is stopped."""
    with asyncio.Runner(loop_factory=loop_factory(config.server.loop)) as runner:
        runner.run(serve(config, handler, startup=startup, shutdown=shutdown, tls=tls, worker=worker,
                         announce=worker is None))
