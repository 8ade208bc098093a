"""The ASGI lifespan protocol: startup before the first connection is accepted, shutdown after the last
one is closed, and the state the application fills at startup copied into every request's scope."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ring3.handlers.asgi import ASGI_VERSION, ASGIApp, Message

logger = logging.getLogger("ring3.error")


class LifespanFailed(Exception):
    """The application refused to start (lifespan.startup.failed, or an error with lifespan 'on')."""


class Lifespan:
    """Runs one application's lifespan task. `mode` is 'on', 'off' or 'auto' (an application that fails
    before answering the startup event is taken not to support the protocol)."""

    def __init__(self, app: ASGIApp, mode: str) -> None:
        self._app = app
        self._mode = mode
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._answered: asyncio.Future[Message] | None = None
        self._task: asyncio.Task[None] | None = None
        self._supported = False
        self.state: dict[str, Any] = {}

    async def startup(self) -> dict[str, Any] | None:
        """Run the startup phase; return the state for request scopes (None without lifespan)."""
        if self._mode == "off":
            return None
        loop = asyncio.get_running_loop()
        self._answered = loop.create_future()
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        self._task = loop.create_task(self._run(scope))
        await self._events.put({"type": "lifespan.startup"})
        answer = await self._answered
        kind = answer["type"]
        if kind == "lifespan.startup.complete":
            self._supported = True
            return self.state
        if kind in ("lifespan.startup.failed", "lifespan.error"):
            raise LifespanFailed(answer.get("message", "") or "the application's startup failed")
        return None  # unsupported (auto mode)

    async def shutdown(self, timeout: float) -> None:
        """Run the shutdown phase, waiting at most `timeout` seconds for the application."""
        if not self._supported or self._task is None or self._task.done():
            return
        self._answered = asyncio.get_running_loop().create_future()
        await self._events.put({"type": "lifespan.shutdown"})
        try:
            answer = await asyncio.wait_for(asyncio.shield(self._answered), timeout)
        except TimeoutError:
            logger.warning("the application did not finish its lifespan shutdown in %.1fs", timeout)
            self._task.cancel()
            return
        if answer["type"] in ("lifespan.shutdown.failed", "lifespan.error"):
            logger.error("the application's lifespan shutdown failed: %s", answer.get("message", ""))

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self._app(scope, self._receive, self._send)
        except Exception as exc:
            if self._supported or self._mode == "on":
                logger.error("the application's lifespan failed", exc_info=exc)
                self._answer({"type": "lifespan.error", "message": repr(exc)})
            else:
                logger.info("the application does not support the ASGI lifespan protocol (%r)", exc)
                self._answer({"type": "lifespan.unsupported"})
        else:
            if not self._supported and self._mode == "on":
                self._answer({"type": "lifespan.startup.failed",
                              "message": "the application returned from its lifespan at startup"})
            else:
                self._answer({"type": "lifespan.unsupported"})

    async def _receive(self) -> Message:
        return await self._events.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind not in ("lifespan.startup.complete", "lifespan.startup.failed",
                        "lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            raise RuntimeError(f"unexpected lifespan message {kind!r}")
        if kind == "lifespan.startup.complete":
            self._supported = True
        self._answer(dict(message))

    def _answer(self, message: Message) -> None:
        answered = self._answered
        if answered is not None and not answered.done():
            answered.set_result(message)
