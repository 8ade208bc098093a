"""The WSGI (PEP 3333) handler: a synchronous application served from a thread pool. Here: the environ,
the pool and the hand-over to the loop; how the answer becomes a Response is wsgi_response.py, and
wsgi.input, wsgi.errors and wsgi.file_wrapper are wsgi_streams.py.

Threads. Application code never runs on the event loop thread (unless `app.wsgi_threads` is 0: then
inline, after the whole body has arrived). Each request is one job for a BatchingPool (workers.py) of
`app.wsgi_threads` threads, woken once per turn of the loop rather than once per job; a request that
finds them all busy waits in the pool's queue. The handler answers with a plain asyncio Future that the
job's done-callback settles on the loop thread (through a mailbox that wakes the loop once per batch),
so no Task is made per request. `wsgi.input` fetches the body from the loop thread as the
application reads it, one piece per hop; a request without a body reads b"" without crossing threads.

One send for one-chunk responses. The worker runs the application and pulls its first non-empty chunk.
When that is the whole body (a one-item list, or as many bytes as the application's Content-Length),
the answer is a Response with a bytes body: the head and the body leave in one send, and the iterable is
closed in the worker. Only a longer body becomes a stream, each further chunk fetched by one pool job.

sendfile for file_wrapper. An application that returns `wsgi.file_wrapper(file)` over a regular file is
answered with a FileRange from the file's current position, which the output path sends zero-copy; any
other file-like is read in blocks.

close(). The iterable's close() runs exactly once, in a pool thread: in the worker when the iteration
ends or fails, else from Response.cleanup once the connection has sent or abandoned the stream (after
the chunk being fetched, if any, so that close() never races next()).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import io
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from ring3.body import EmptyBody, RequestBody
from ring3.config import AppSection
from ring3.errors import ClientDisconnected
from ring3.events import Request, Response
from ring3.handlers import BodyReader
from ring3.handlers.status import status_response
from ring3.handlers.tls_facts import wsgi_tls_environ
from ring3.handlers.workers import BatchingPool
from ring3.handlers.wsgi_response import Reply, close_iterable, response_for
from ring3.handlers.wsgi_streams import ERRORS, NO_INPUT, FileWrapper, InputStream

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

logger = logging.getLogger("ring3.error")

Job = concurrent.futures.Future[Response]

_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
_DEFAULT_PORTS = {"https": "443"}
_ENVIRON_KEYS: dict[bytes, str] = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
_ENVIRON_KEYS.update((name, "HTTP_" + name.decode().upper().replace("-", "_")) for name in (
    b"host", b"user-agent", b"accept", b"accept-encoding", b"accept-language", b"cookie", b"connection",
    b"referer", b"origin", b"authorization", b"cache-control", b"pragma", b"if-none-match",
    b"if-modified-since", b"x-forwarded-for", b"x-forwarded-proto", b"x-requested-with", b"upgrade",
    b"transfer-encoding", b"expect", b"range", b"dnt", b"sec-fetch-mode", b"sec-fetch-site"))


class WSGIHandler:
    """Serves one WSGI application (a ring3 Handler)."""

    __slots__ = ("_app", "_base", "_inline", "_loop", "_mail", "_pool", "_prefix", "_threads")

    def __init__(self, app: WSGIApplication, settings: AppSection,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._app = app
        self._threads = settings.wsgi_threads
        self._inline = settings.wsgi_threads == 0  # run on the loop's thread: one request at a time
        self._loop = loop
        self._pool: BatchingPool | None = None
        self._mail: _Mailbox | None = None
        self._prefix = settings.mount.rstrip("/").encode("ascii")  # b"" when mounted at '/'
        script_name = unquote_to_bytes(settings.root_path.encode("ascii") + self._prefix).decode("latin-1")
        self._base: dict[str, Any] = {
            "SCRIPT_NAME": script_name,
            "wsgi.version": (1, 0),
            "wsgi.errors": ERRORS,
            "wsgi.multithread": not self._inline,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }

    async def startup(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if not self._inline:
            self.executor()

    async def shutdown(self) -> None:
        """Stop the pool once the requests it runs or holds have finished (the loop keeps serving
        their body reads meanwhile)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown)

    def _mailbox(self, loop: asyncio.AbstractEventLoop) -> _Mailbox:
        mailbox = self._mail
        if mailbox is None:
            mailbox = self._mail = _Mailbox(loop)
        return mailbox

    def executor(self) -> BatchingPool:
        """The thread pool, made on first use (on the loop's thread)."""
        pool = self._pool
        if pool is None:
            loop = self._loop or asyncio.get_running_loop()
            pool = self._pool = BatchingPool(self._threads, loop, thread_name_prefix="ring3-wsgi")
        return pool

    def __call__(self, request: Request, body: BodyReader) -> Response | Awaitable[Response]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._inline:
            if isinstance(body, EmptyBody):
                context = contextvars.Context()
                return context.run(self._answer, request, body, loop, None, context, NO_INPUT)
            return self._read_then_answer(request, body, loop)
        answer: asyncio.Future[Response] = loop.create_future()
        pool = self.executor()
        # One context per request, entered by every job of the request (they never overlap): a response
        # streamed from several pool threads keeps its context variables (Flask's stream_with_context),
        # and no request sees what another left in a thread's context.
        context = contextvars.Context()
        job = pool.submit(context.run, self._answer, request, body, loop, pool, context)
        job.add_done_callback(partial(_hand_over, self._mailbox(loop), answer))
        answer.add_done_callback(partial(_cancel_job, job))
        return answer

    async def _read_then_answer(self, request: Request, body: RequestBody,
                                loop: asyncio.AbstractEventLoop) -> Response:
        """Inline: the whole body first (within max_body_size), so the application never blocks the loop
        on a read."""
        data = await body.read_all()
        context = contextvars.Context()
        return context.run(self._answer, request, body, loop, None, context, io.BytesIO(data))

    # -- in a pool thread (or inline, on the loop's) --------------------------------------------------

    def _answer(self, request: Request, body: BodyReader, loop: asyncio.AbstractEventLoop,
                pool: BatchingPool | None, context: contextvars.Context,
                wsgi_input: Any = None) -> Response:
        """Run the application and work out the Response (500 if it fails before its headers are out)."""
        reply = Reply()
        result: Iterable[bytes] | None = None
        try:
            environ = self._environ(request, body, loop)
            if wsgi_input is not None:
                environ["wsgi.input"] = wsgi_input
            result = self._app(environ, reply.start_response)
            response, finished = response_for(request, result, reply, loop, pool, context)
        except ClientDisconnected:
            logger.info("client gone while the WSGI application read %r", request.target)
            close_iterable(result)
            return status_response(500)
        except Exception:
            logger.exception("WSGI application failed for %r", request.target)
            close_iterable(result)
            return status_response(500)
        reply.sealed = True
        if finished:
            close_iterable(result)
        return response

    def _environ(self, request: Request, body: BodyReader,
                 loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        environ = self._base.copy()
        path = request.path
        prefix = self._prefix
        if prefix and path.startswith(prefix) and path[len(prefix):len(prefix) + 1] in (b"", b"/"):
            path = path[len(prefix):]
        if path.find(b"%") >= 0:  # find, not `in`: see http1/parser
            path = unquote_to_bytes(path)
        conn = request.conn
        environ["REQUEST_METHOD"] = request.method.decode("latin-1")
        environ["PATH_INFO"] = path.decode("latin-1")
        environ["QUERY_STRING"] = request.query.decode("latin-1")
        environ["RAW_URI"] = request.target.decode("latin-1")
        environ["SERVER_PROTOCOL"] = _PROTOCOLS.get(request.http_version) or "HTTP/" + request.http_version
        environ["SERVER_NAME"], environ["SERVER_PORT"] = _server_address(request)
        if conn.client is not None:
            environ["REMOTE_ADDR"] = conn.client[0]
            environ["REMOTE_PORT"] = str(conn.client[1])
        environ["wsgi.url_scheme"] = conn.scheme
        if conn.tls is not None:
            environ.update(wsgi_tls_environ(conn.tls))
        environ["wsgi.input"] = NO_INPUT if isinstance(body, EmptyBody) else InputStream(body, loop)
        _add_headers(environ, request.headers)
        return environ


def _server_address(request: Request) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT: the listener's address, or on a Unix socket the Host header's."""
    server = request.conn.server
    if server is not None and server[1] is not None:
        return server[0], str(server[1])
    host = request.host.decode("latin-1")
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and not name.endswith(":"):
        return name, port
    return host or "localhost", _DEFAULT_PORTS.get(request.conn.scheme, "80")


def _add_headers(environ: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    """HTTP_* (and CONTENT_*) entries; repeated fields are joined. A name with '_' is dropped: it
    would pass for the '-' spelling (as gunicorn and uvicorn do)."""
    for name, value in headers:
        key = _ENVIRON_KEYS.get(name)
        if key is None:
            if name.find(b"_") >= 0:
                continue
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        previous = environ.get(key)
        if previous is None:
            environ[key] = text
        else:
            environ[key] = previous + ("; " if key == "HTTP_COOKIE" else ", ") + text


# -- handing the answer to the loop thread ------------------------------------------------------------


class _Mailbox:
    """Calls from pool threads to the loop's thread, delivered in batches: the loop is woken (a byte on
    its self-pipe, and the thread switch that follows) once per batch, not once per request."""

    __slots__ = ("_calls", "_loop", "_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._pending = False  # a delivery is scheduled and has not started draining

    def post(self, function: Callable[..., None], *args: Any) -> None:
        """From any thread: run `function(*args)` on the loop's thread soon."""
        self._calls.append((function, args))
        if not self._pending:
            self._pending = True
            try:
                self._loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:
                self._pending = False
                raise

    def _deliver(self) -> None:
        self._pending = False  # calls posted from now on schedule another delivery, or join this one
        calls = self._calls
        while calls:
            function, args = calls.popleft()
            function(*args)


def _hand_over(mailbox: _Mailbox, answer: asyncio.Future[Response], job: Job) -> None:
    """The job's done-callback (in its thread): settle the answer on the loop thread."""
    try:
        mailbox.post(_settle, answer, job)
    except RuntimeError:  # the loop is closed: nobody will send this response
        if not job.cancelled() and job.exception() is None:
            _release(job.result())


def _settle(answer: asyncio.Future[Response], job: Job) -> None:
    if job.cancelled():
        answer.cancel()
        return
    error = job.exception()
    if answer.done():  # the connection gave up while the application ran
        if error is None:
            _release(job.result())
    elif error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(job.result())


def _cancel_job(job: Job, answer: asyncio.Future[Response]) -> None:
    """The connection gave up on the request: it does not start if it still waits for a thread."""
    if answer.cancelled():
        job.cancel()


def _release(response: Response) -> None:
    """Let go of a Response nobody will send."""
    if response.cleanup is not None:
        response.cleanup()


__all__ = ["FileWrapper", "WSGIHandler"]
