"""The master process: it binds the listeners, starts the workers and keeps them running, reloads on
SIGHUP, upgrades on SIGUSR2, and serves the admin listener. It never runs a handler.

The listening sockets are the master's and stay open for its whole life: a worker inherits them (the
kernel queues connections on one socket for every worker, so a worker that dies or drains leaves no
connection behind in a queue of its own, as a SO_REUSEPORT socket would). A worker is a new
interpreter (`python -m ring3` with the master's arguments), so a reload imports the application anew
and re-reads the certificates; it says it is ready over its control socket (link.py).

Signals, as nginx's master takes them: TERM, INT and QUIT stop gracefully (the workers finish their
responses within shutdown_grace); HUP reloads (the config is read and checked first, new workers start,
and only once every one of them is ready do the old ones drain; if anything fails the old ones serve
on); USR1 reopens the log files (it is passed to the workers); USR2 starts a new master from the
program on disk, handing it the listening sockets; once its workers are ready this master stops.
"""

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
import time
from collections.abc import Callable, Sequence
from typing import Any

from ring3 import systemd
from ring3.config import Config, ConfigError, parse_listen
from ring3.config.loader import worker_count
from ring3.listeners import bind, describe
from ring3.observe.admin import AdminHandler
from ring3.observe.ledger import Ledger
from ring3.observe.snapshot import Snapshot, of_ledger, summed, take
from ring3.server import Server, admin_config
from ring3.supervisor.workers import Worker, describe_exit

logger = logging.getLogger("ring3.error")

QUICK_DEATH = 5.0  # a worker that dies sooner than this after its start is restarted with a backoff
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 30.0  # doubling from the first to the most, for each quick death
KILL_AFTER = 5.0  # past shutdown_grace, how long a stopping worker has before SIGKILL
INHERIT_ENV = "RING3_INHERIT"  # an upgrade's listening sockets: {"listen text": fd, "@admin": fd}
UPGRADE_ENV = "RING3_UPGRADE_FD"  # where the new master writes b"ready"
ADMIN = "@admin"
TICKET_KEYS_LENGTH = 80  # transport.ticket_keys.KEYS_LENGTH (not imported: a master without TLS loads no TLS)

Load = Callable[[], Config]


class Master:
    def __init__(self, argv: Sequence[str], config: Config, load: Load,
                 loop: asyncio.AbstractEventLoop) -> None:
        """`argv` is the command line the workers are started with; `load` reads and checks the
        config anew (raising ConfigError) for a reload."""
        self.argv = list(argv)
        self.config = config
        self.load = load
        self.loop = loop
        self.listeners: dict[str, socket.socket] = {}
        self.workers: list[Worker] = []
        self.generation = 0
        self.stopping = False
        self.done = asyncio.Event()
        self.started = time.time()
        self.restarts = 0
        self.reloads = {"done": 0, "refused": 0, "failed": 0}
        self.retired = Ledger()  # the counters of workers that have ended
        self.ticket_keys = os.urandom(TICKET_KEYS_LENGTH)  # one set for every worker, for the master's life
        self.exit_status = 0
        self.admin: Server | None = None
        self._admin_handler: AdminHandler | None = None
        self._reloading = False
        self._reload_again = False
        self._quick_deaths: dict[str, int] = {}
        self._handed_over = False
        self._upgrade: subprocess.Popen[bytes] | None = None
        self._owned: set[socket.socket] = set()  # bound here: a unix socket's path is unlinked at the end
        self._inherited = self._inherited_sockets()

    # -- starting ---------------------------------------------------------------------------------

    def _inherited_sockets(self) -> dict[str, socket.socket]:
        """Sockets handed over by the master before an upgrade, by listen text; and systemd's."""
        found: dict[str, socket.socket] = {}
        text = os.environ.pop(INHERIT_ENV, None)
        if text is not None:
            for key, fd in json.loads(text).items():
                sock = socket.socket(fileno=int(fd))
                sock.setblocking(False)
                found[key] = sock
        listen = self.config.server.listen
        if "LISTEN_FDS" in os.environ:
            for index, sock in systemd.activated_listeners(listen).items():
                found[listen[index]] = sock
        return found

    def _listeners_for(self, config: Config) -> list[socket.socket]:
        """The listening socket of each address of `config` (kept, inherited or bound now)."""
        made: list[socket.socket] = []
        try:
            for text in config.server.listen:
                sock = self.listeners.get(text) or self._inherited.pop(text, None)
                if sock is None:
                    sock = bind(parse_listen(text))
                    self._owned.add(sock)
                made.append(sock)
        except OSError:
            for sock in made:
                if sock in self._owned and sock not in self.listeners.values():
                    sock.close()
            raise
        return made

    async def run(self) -> int:
        loop = self.loop
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_logs)
        loop.add_signal_handler(signal.SIGUSR2, self.upgrade)
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        try:
            if self.config.server.admin:
                self._start_admin()
            if not await self._start_generation(self.config):
                asked_to_stop = self.stopping  # TERM while the workers started: a clean stop
                self.stop()
                await self.done.wait()
                return self.exit_status if asked_to_stop else self.exit_status or 1
            for text, sock in self.listeners.items():
                print(f"ring3 listening on {describe(sock, parse_listen(text).tls)}", flush=True)
            if self.admin is not None:
                print(f"ring3 admin on {describe(self.admin.listeners[0])}/metrics", flush=True)
            print(f"ring3 master (pid {os.getpid()}) serves with {len(self.workers)} workers", flush=True)
            systemd.notify("READY=1", f"MAINPID={os.getpid()}")
            self._tell_old_master()
            await self.done.wait()
            return self.exit_status
        finally:
            await self._close()

    def _start_admin(self) -> None:
        handler = AdminHandler(self.gather, self.readiness, self.extra_lines, self.facts)
        self._admin_handler = handler
        inherited = self._inherited.pop(ADMIN, None)
        self.admin = Server(admin_config(self.config), handler, self.loop,
                            inherited={0: inherited} if inherited else None)
        self.admin.start()

    async def _start_generation(self, config: Config) -> bool:
        """Start config's workers, all of them to readiness; then the older workers drain. False (and
        the new workers stopped) if one fails or is late."""
        listeners = self._listeners_for(config)
        generation = self.generation + 1
        started = [self._spawn(str(slot), generation, listeners)
                   for slot in range(1, worker_count(config.server.workers) + 1)]
        deadline = self.loop.time() + config.server.worker_start_timeout
        waiting = {worker.became_ready for worker in started}
        while waiting and not self.stopping:
            done, waiting = await asyncio.wait(waiting, timeout=max(0.0, deadline - self.loop.time()),
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done or not all(future.result() for future in done):
                break
        if self.stopping:  # a stop asked for meanwhile: the new workers go, and that is no failure
            for worker in started:
                worker.retire()
            return False
        failed = [worker for worker in started if not worker.ready or worker.process.returncode is not None]
        if failed:
            for worker in started:
                worker.retire()
            for worker in failed:
                status = worker.process.returncode
                if status is None:
                    logger.error("%r was not ready within worker_start_timeout (%gs)", worker,
                                 config.server.worker_start_timeout)
                else:
                    logger.error("%r %s before it was ready", worker, describe_exit(status))
                    self.exit_status = self.exit_status or (status if status > 0 else 1)
            return False
        for worker in self.workers:
            if worker.generation < generation:
                worker.retire()
        self.generation, self.config = generation, config
        kept = {text: sock for text, sock in zip(config.server.listen, listeners, strict=True)}
        for sock in self.listeners.values():
            if sock not in kept.values():
                self._close_listener(sock)
        self.listeners = kept
        return True

    def _spawn(self, name: str, generation: int, listeners: Sequence[socket.socket]) -> Worker:
        worker = Worker(name, generation, self.argv, listeners, self.loop, self._on_message,
                        self.ticket_keys)
        self.workers.append(worker)
        logger.info("%r started (generation %d)", worker, generation)
        return worker

    def _on_message(self, worker: Worker, message: dict[str, Any]) -> None:
        if message.get("op") == "ready":
            logger.info("%r is ready", worker)

    # -- supervising ------------------------------------------------------------------------------

    def _reap(self) -> None:
        if self._upgrade is not None and self._upgrade.poll() is not None:
            self._upgrade = None
        for worker in list(self.workers):
            status = worker.exited()
            if status is None:
                continue
            self.workers.remove(worker)
            if worker.final is not None:
                self.retired = summed([of_ledger(self.retired, ""), worker.final])
            if worker.retiring or self.stopping or worker.generation != self.generation:
                log = logger.info if status == 0 else logger.warning
                log("%r %s", worker, describe_exit(status))
                continue
            lived = self.loop.time() - worker.started
            deaths = self._quick_deaths[worker.name] = (
                self._quick_deaths.get(worker.name, 0) + 1 if lived < QUICK_DEATH else 0)
            delay = min(BACKOFF_FIRST * 2 ** (deaths - 1), BACKOFF_MAX) if deaths else 0.0
            logger.error("%r %s after %.1fs; another starts in %.1fs", worker, describe_exit(status), lived,
                         delay)
            self.restarts += 1
            self.loop.call_later(delay, self._replace, worker.name, worker.generation)
        if self.stopping and not self.workers:
            self.done.set()

    def _replace(self, name: str, generation: int) -> None:
        if self.stopping or generation != self.generation:
            return
        try:
            self._spawn(name, generation, list(self.listeners.values()))
        except OSError as exc:
            logger.error("worker %s could not be started: %s; trying again in %.0fs", name, exc, BACKOFF_MAX)
            self.loop.call_later(BACKOFF_MAX, self._replace, name, generation)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        if not self._handed_over:
            systemd.notify("STOPPING=1")
        logger.info("stopping: the workers finish their responses")
        for worker in self.workers:
            worker.retire()
        for sock in self.listeners.values():  # nobody will accept: let connections be refused, not queued
            self._close_listener(sock)
        self.listeners.clear()
        self.loop.call_later(self.config.server.shutdown_grace + KILL_AFTER, self._kill_stragglers)
        if not self.workers:
            self.done.set()

    def _kill_stragglers(self) -> None:
        for worker in self.workers:
            logger.error("%r did not stop in time; killed", worker)
            worker.signal(signal.SIGKILL)

    def _reopen_logs(self) -> None:
        for worker in self.workers:
            worker.signal(signal.SIGUSR1)

    # -- reloading --------------------------------------------------------------------------------

    def request_reload(self) -> None:
        if self.stopping:
            return
        if self._reloading:
            self._reload_again = True  # one more once this one is over: it may predate the last edit
            return
        self._reloading = True
        self.loop.create_task(self._reload())

    async def _reload(self) -> None:
        systemd.reloading()
        try:
            try:
                config = self.load()
            except ConfigError as exc:
                self.reloads["refused"] += 1
                logger.error("reload refused: config error: %s; the workers serve on unchanged", exc)
                return
            logger.info("reloading: new workers start; the old ones drain once they are ready")
            if config.server.admin != self.config.server.admin:
                logger.warning("server.admin changed: the admin listener stays on %s until a restart",
                               self.config.server.admin or "none")
            try:
                ok = await self._start_generation(config)
            except OSError as exc:
                self.reloads["refused"] += 1
                logger.error("reload refused: cannot listen: %s; the workers serve on unchanged",
                             exc.strerror or exc)
                return
            if ok:
                self.reloads["done"] += 1
                logger.info("reloaded: generation %d serves", self.generation)
            elif self.stopping:
                logger.info("reload abandoned: the master is stopping")
            else:
                self.reloads["failed"] += 1
                self.exit_status = 0  # the old workers serve on: a later stop is still clean
                logger.error("reload failed; the old workers serve on")
        finally:
            self._reloading = False
            if not self.stopping:
                systemd.notify("READY=1")
            if self._reload_again and not self.stopping:
                self._reload_again = False
                self.request_reload()

    # -- upgrading --------------------------------------------------------------------------------

    def upgrade(self) -> None:
        """Start the program on disk as a new master with this one's listening sockets."""
        if self._upgrade is not None or self.stopping:
            logger.warning("SIGUSR2: an upgrade is under way already, or the master is stopping")
            return
        handed = {text: sock.fileno() for text, sock in self.listeners.items()}
        if self.admin is not None and self.admin.listeners:
            handed[ADMIN] = self.admin.listeners[0].fileno()
        ready_read, ready_write = os.pipe()
        env = dict(os.environ, **{INHERIT_ENV: json.dumps(handed), UPGRADE_ENV: str(ready_write)})
        try:
            self._upgrade = subprocess.Popen([sys.executable, "-m", "ring3", *self.argv], env=env,
                                             pass_fds=[*handed.values(), ready_write])
        except OSError as exc:
            os.close(ready_read)
            logger.error("upgrade failed: %s", exc)
            return
        finally:
            os.close(ready_write)
        logger.info("upgrading: a new master (pid %d) starts", self._upgrade.pid)
        self.loop.add_reader(ready_read, self._on_upgrade_word, ready_read)

    def _on_upgrade_word(self, fd: int) -> None:
        try:
            word = os.read(fd, 16)
        except BlockingIOError:
            return
        self.loop.remove_reader(fd)
        os.close(fd)
        if word == b"ready":
            logger.info("upgraded: the new master serves; this one stops")
            self._handed_over = True
            self.stop()
        else:
            logger.error("upgrade failed: the new master ended before its workers were ready; this one "
                         "serves on")

    def _tell_old_master(self) -> None:
        fd = os.environ.pop(UPGRADE_ENV, None)
        if fd is not None and fd.isdigit():
            with contextlib.suppress(OSError):
                os.write(int(fd), b"ready")
                os.close(int(fd))

    # -- the admin listener -----------------------------------------------------------------------

    async def gather(self) -> list[Snapshot]:
        answers = await asyncio.gather(*(worker.snapshot() for worker in self.workers))
        snapshots = [answer for answer in answers if answer is not None]
        snapshots.append(take("master", self.started, ready=True, draining=self.stopping,
                              connections_open=0))
        if any(self.retired.syscalls().values()):
            snapshots.append(of_ledger(self.retired, "ended"))
        return snapshots

    def readiness(self) -> str:
        if self.stopping:
            return "draining"
        if any(w.ready and w.generation == self.generation for w in self.workers):
            return "ready"
        return "starting" if self.generation == 0 else "no worker ready"

    def extra_lines(self) -> list[str]:
        states = {"ready": 0, "starting": 0, "draining": 0}
        for worker in self.workers:
            states["draining" if worker.retiring else "ready" if worker.ready else "starting"] += 1
        lines = ["# HELP ring3_workers Worker processes, by state.", "# TYPE ring3_workers gauge"]
        lines += [f'ring3_workers{{state="{state}"}} {count}' for state, count in states.items()]
        lines += ["# HELP ring3_worker_restarts_total Workers that died and were replaced.",
                  "# TYPE ring3_worker_restarts_total counter",
                  f"ring3_worker_restarts_total {self.restarts}",
                  "# HELP ring3_reloads_total Reloads (SIGHUP), by result: done, refused (a bad config) or "
                  "failed (a new worker did not get ready).", "# TYPE ring3_reloads_total counter"]
        lines += [f'ring3_reloads_total{{result="{result}"}} {count}'
                  for result, count in self.reloads.items()]
        lines += ["# HELP ring3_generation The reload generation serving (1 at the start).",
                  "# TYPE ring3_generation gauge", f"ring3_generation {self.generation}"]
        return lines

    def facts(self) -> dict[str, Any]:
        """The master's own state, as data, for the status page."""
        processes: list[dict[str, Any]] = [
            {"name": worker.name, "pid": worker.pid, "generation": worker.generation,
             "state": "draining" if worker.retiring else "ready" if worker.ready else "starting"}
            for worker in self.workers]
        states = {"ready": 0, "starting": 0, "draining": 0}
        for process in processes:
            states[process["state"]] += 1
        return {"pid": os.getpid(), "started": self.started, "generation": self.generation,
                "restarts": self.restarts, "reloads": dict(self.reloads), "workers": states,
                "processes": processes, "stopping": self.stopping}

    # -- the end ----------------------------------------------------------------------------------

    def _close_listener(self, sock: socket.socket) -> None:
        if sock in self._owned and sock.family == socket.AF_UNIX and not self._handed_over:
            with contextlib.suppress(OSError):
                os.unlink(sock.getsockname())
        self._owned.discard(sock)
        sock.close()

    async def _close(self) -> None:
        if self._admin_handler is not None:
            self._admin_handler.close()
        if self.admin is not None:
            await self.admin.shutdown(0)
        for sock in self.listeners.values():
            self._close_listener(sock)
        for sock in self._inherited.values():
            sock.close()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
                       signal.SIGUSR2, signal.SIGCHLD):
            self.loop.remove_signal_handler(signum)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)


def run_master(argv: Sequence[str], config: Config, load: Load) -> int:
    """Run a master until it is stopped; its exit status."""
    from ring3.loops import loop_factory

    with asyncio.Runner(loop_factory=loop_factory("asyncio")) as runner:
        return runner.run(_main(argv, config, load))


async def _main(argv: Sequence[str], config: Config, load: Load) -> int:
    return await Master(argv, config, load, asyncio.get_running_loop()).run()
