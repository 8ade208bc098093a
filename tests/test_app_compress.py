"""Compression of application answers (CompressingHandler) and decoding of compressed request bodies
(RequestEncodingRule), over real sockets: Starlette and WSGI applications run in an in-process ring3 and
are read with httpx (over HTTP/1.1 and HTTP/2) and raw sockets; each compressed body is decoded here and
compared with what the application sent."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import random
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import brotli
import pytest
import zstandard
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from conftest import InProcessServer, ResponseReader, exchange, http_client, recv_until_closed
from ring3.body import RequestBody
from ring3.config import AppSection
from ring3.handlers.asgi import ASGIHandler, Receive, Scope, Send
from ring3.handlers.compressing import CompressingHandler
from ring3.handlers.request_encoding import DecodingBody, RequestEncodingRule, decoder_makers
from ring3.handlers.wsgi import WSGIHandler

Start = Callable[..., InProcessServer]
ENCODINGS = ["gzip", "br", "zstd"]
HTML = ("<p>" + "ring3 compresses what an application sends, as it sends it. " * 4000 + "</p>").encode()
ITEMS = [{"id": n, "name": f"item {n}", "tags": ["a", "b"]} for n in range(200)]
FIRST = b"first piece: " + b"x" * 300 + b"\n"
REST = [b"piece %d: " % n + b"y" * 2000 + b"\n" for n in range(5)]
MiB = 1024 * 1024


def encode(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "br":
        return bytes(brotli.compress(data))
    return bytes(zstandard.ZstdCompressor().compress(data))


def incremental_decoder(encoding: str) -> Callable[[bytes], bytes]:
    """A function that decodes the next bytes of a stream in `encoding`, returning what they complete."""
    if encoding == "gzip":
        return zlib.decompressobj(31).decompress
    if encoding == "br":
        decoder: Any = brotli.Decompressor()
        return lambda data: bytes(decoder.process(data))
    return zstandard.ZstdDecompressor().decompressobj().decompress


def decode(encoding: str | None, data: bytes) -> bytes:
    return data if encoding is None else incremental_decoder(encoding)(data)


# -- the application --------------------------------------------------------------------------------


class Gate:
    """What a test lets the streaming endpoints go on with, and what the application saw."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.waited: list[bool] = []  # one per wait: True when the test opened the gate
        self.received: list[int] = []  # request body bytes each /count request got
        self.disconnected: list[bool] = []

    async def wait(self) -> None:
        self.waited.append(await asyncio.to_thread(self.released.wait, 15))


def make_app(gate: Gate, text_file: Path) -> Callable[[Scope, Receive, Send], Any]:
    async def streamed() -> Any:
        yield FIRST
        await gate.wait()
        for piece in REST:
            yield piece

    async def events() -> Any:
        yield b"data: one\n\n"
        await gate.wait()
        yield b"data: two\n\n"

    async def echo(request: StarletteRequest) -> Response:
        body = await request.body()
        seen = {key: request.headers.get(key) for key in ("content-encoding", "content-length")}
        return JSONResponse({"length": len(body), "sha": hashlib.sha256(body).hexdigest(), "seen": seen})

    html_type = "text/html; charset=utf-8"
    routes = [
        Route("/json", lambda r: JSONResponse(ITEMS)),
        Route("/small", lambda r: JSONResponse({"ok": True})),
        Route("/html", lambda r: HTMLResponse(HTML)),
        Route("/etag", lambda r: HTMLResponse(HTML, headers={"etag": '"v1"'})),
        Route("/vary", lambda r: HTMLResponse(HTML, headers={"vary": "Origin"})),
        Route("/stream", lambda r: StreamingResponse(streamed(), media_type="text/plain")),
        Route("/sse", lambda r: StreamingResponse(events(), media_type="text/event-stream")),
        Route("/encoded", lambda r: Response(gzip.compress(HTML, mtime=0), media_type=html_type,
                                             headers={"content-encoding": "gzip"})),
        Route("/no-transform", lambda r: HTMLResponse(
            HTML, headers={"Cache-Control": "public, No-Transform"})),
        Route("/partial", lambda r: Response(HTML[:1000], status_code=206, media_type=html_type,
                                             headers={"content-range": f"bytes 0-999/{len(HTML)}"})),
        Route("/image", lambda r: Response(b"\x89PNG" + bytes(5000), media_type="image/png")),
        Route("/file", lambda r: FileResponse(text_file)),
        Route("/echo", echo, methods=["POST"]),
    ]
    starlette = Starlette(routes=routes)

    async def declared(scope: Scope, receive: Receive, send: Send) -> None:
        """Announces a Content-Length of 4000, then sends it in two pieces (at /short, only the first)."""
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"4000")]})
        await send({"type": "http.response.body", "body": b"z" * 2000, "more_body": True})
        last = b"" if scope["path"] == "/short" else b"z" * 2000
        await send({"type": "http.response.body", "body": last, "more_body": False})

    async def count(scope: Scope, receive: Receive, send: Send) -> None:
        """Counts the request body's bytes without keeping them."""
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gate.disconnected.append(True)
                break
            received += len(message["body"])
            if not message.get("more_body"):
                gate.disconnected.append(False)
                break
        gate.received.append(received)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"%d" % received})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if path in ("/declared", "/short"):
            await declared(scope, receive, send)
        elif path == "/count":
            await count(scope, receive, send)
        else:
            await starlette(scope, receive, send)

    return app


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def app(gate: Gate, tmp_path: Path) -> Callable[[Scope, Receive, Send], Any]:
    text_file = tmp_path / "notes.txt"
    text_file.write_bytes(HTML)
    return make_app(gate, text_file)


@pytest.fixture
def compressed(in_process: Start, app: Any) -> InProcessServer:
    return in_process(CompressingHandler(ASGIHandler(app, AppSection())))


def get(server: InProcessServer, path: str, accept: str | None, method: bytes = b"GET"
        ) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request on a raw HTTP/1.1 connection (for Content-Length framed answers)."""
    field = b"" if accept is None else b"accept-encoding: %s\r\n" % accept.encode()
    with server.connect() as sock:
        return exchange(sock, b"%s %s HTTP/1.1\r\nhost: t\r\n%s\r\n" % (method, path.encode(), field))


def head_fields(headers: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {name: value for name, value in headers.items() if name != b"date"}


# -- answers compressed -----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_whole_answer_is_compressed_with_its_exact_length(compressed: InProcessServer, protocol: str,
                                                            encoding: str) -> None:
    with http_client(compressed.url, protocol) as client, client.stream(
            "GET", "/json", headers={"accept-encoding": encoding}) as answer:
        raw = b"".join(answer.iter_raw())
        headers = answer.headers
    assert headers["content-encoding"] == encoding
    assert headers["vary"] == "accept-encoding"
    assert int(headers["content-length"]) == len(raw) < len(json.dumps(ITEMS))
    assert json.loads(decode(encoding, raw)) == ITEMS


@pytest.mark.parametrize(("accept", "expected"), [
    ("gzip", "gzip"), ("br", "br"), ("zstd", "zstd"), ("x-gzip", "gzip"), ("*", "br"),
    ("gzip, deflate, br, zstd", "br"), ("gzip;q=0.5, zstd;q=0.8", "zstd"), ("br;q=0, *", "zstd"),
    ("identity", None), ("gzip;q=0", None), ("deflate", None), (None, None),
])
def test_accept_encoding_chooses_the_coding(compressed: InProcessServer, accept: str | None,
                                            expected: str | None) -> None:
    status, headers, body = get(compressed, "/html", accept)
    assert status == 200
    assert headers.get(b"content-encoding") == (expected.encode() if expected else None)
    assert headers[b"vary"] == b"accept-encoding"  # eligible: another Accept-Encoding changes it
    assert decode(expected, body) == HTML


def test_a_strong_etag_turns_weak_and_vary_is_extended(compressed: InProcessServer) -> None:
    _, headers, _ = get(compressed, "/etag", "gzip")
    assert headers[b"etag"] == b'W/"v1"'
    _, headers, _ = get(compressed, "/etag", "identity")
    assert headers[b"etag"] == b'"v1"' and headers[b"vary"] == b"accept-encoding"
    _, headers, body = get(compressed, "/vary", "br")
    assert headers[b"vary"] == b"Origin, accept-encoding" and decode("br", body) == HTML


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_streamed_answer_streams_compressed(compressed: InProcessServer, gate: Gate, protocol: str,
                                              encoding: str) -> None:
    decoder = incremental_decoder(encoding)
    decoded = b""
    with http_client(compressed.url, protocol) as client, client.stream(
            "GET", "/stream", headers={"accept-encoding": encoding}) as answer:
        assert answer.headers["content-encoding"] == encoding
        assert "content-length" not in answer.headers
        if protocol == "HTTP/1.1":
            assert answer.headers["transfer-encoding"] == "chunked"
        for chunk in answer.iter_raw():
            decoded += decoder(chunk)
            if not gate.released.is_set():
                assert decoded == FIRST[:len(decoded)]
                if decoded == FIRST:  # all the application has sent so far, decodable: let it go on
                    gate.released.set()
    assert gate.waited == [True]  # the test opened the gate: the first piece came before the rest
    assert decoded == FIRST + b"".join(REST)


def test_event_streams_compress_only_when_asked(in_process: Start, app: Any, gate: Gate) -> None:
    gate.released.set()
    plain = in_process(CompressingHandler(ASGIHandler(app, AppSection())))
    with http_client(plain.url) as client:
        answer = client.get("/sse", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in answer.headers and "vary" not in answer.headers
    assert answer.text == "data: one\n\ndata: two\n\n"

    gate.released.clear()
    events = in_process(CompressingHandler(ASGIHandler(app, AppSection()), event_stream=True))
    decoder = incremental_decoder("gzip")
    decoded = b""
    with http_client(events.url) as client, client.stream("GET", "/sse",
                                                          headers={"accept-encoding": "gzip"}) as answer:
        assert answer.headers["content-encoding"] == "gzip"
        for chunk in answer.iter_raw():
            decoded += decoder(chunk)
            if decoded == b"data: one\n\n":
                gate.released.set()
    assert gate.waited[-1] is True and decoded == b"data: one\n\ndata: two\n\n"


@pytest.mark.parametrize("path", ["/html", "/json", "/stream", "/declared"])
def test_head_and_get_heads_agree(compressed: InProcessServer, gate: Gate, path: str) -> None:
    gate.released.set()

    def request(method: bytes, extra: bytes = b"") -> bytes:
        return b"%s %s HTTP/1.1\r\nhost: t\r\naccept-encoding: br\r\n%s\r\n" % (method, path.encode(), extra)

    with compressed.connect() as sock:
        sock.sendall(request(b"HEAD"))
        _, head_headers, _ = ResponseReader(sock).read(head_only=True)
        sock.sendall(request(b"GET", b"connection: close\r\n"))
        answer = recv_until_closed(sock)
    get_head, _, _ = answer.partition(b"\r\n\r\n")
    get_headers = {name.strip().lower(): value.strip() for name, _, value in
                   (line.partition(b":") for line in get_head.split(b"\r\n")[1:])}
    get_headers.pop(b"connection", None)
    assert head_fields(head_headers) == head_fields(get_headers)
    assert head_headers[b"content-encoding"] == b"br" and head_headers[b"vary"] == b"accept-encoding"
    if path in ("/stream", "/declared"):
        assert b"content-length" not in head_headers


def test_a_declared_length_is_dropped_and_still_held(compressed: InProcessServer) -> None:
    with compressed.connect() as sock:
        sock.sendall(b"GET /declared HTTP/1.1\r\nhost: t\r\naccept-encoding: gzip\r\n"
                     b"connection: close\r\n\r\n")
        answer = recv_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-length" not in head.lower() and b"transfer-encoding: chunked" in head.lower()
    assert body.endswith(b"0\r\n\r\n")
    with compressed.connect() as sock:  # 2000 of the 4000 bytes announced: cut short, not ended
        sock.sendall(b"GET /short HTTP/1.1\r\nhost: t\r\naccept-encoding: gzip\r\n\r\n")
        answer = recv_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200") and not answer.endswith(b"0\r\n\r\n")


@pytest.mark.parametrize("path", ["/encoded", "/no-transform", "/partial", "/image", "/small", "/file"])
def test_ineligible_answers_are_untouched(in_process: Start, app: Any, compressed: InProcessServer,
                                          path: str) -> None:
    plain = in_process(ASGIHandler(app, AppSection()))
    status, headers, body = get(compressed, path, "gzip, br, zstd")
    plain_status, plain_headers, plain_body = get(plain, path, "gzip, br, zstd")
    assert (status, head_fields(headers), body) == (plain_status, head_fields(plain_headers), plain_body)
    assert b"vary" not in headers


# -- WSGI -------------------------------------------------------------------------------------------


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/upload":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())]
    if environ["PATH_INFO"] == "/pieces":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([FIRST, *REST])
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(HTML)))])
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [HTML]


@pytest.fixture
def wsgi(in_process: Start) -> Iterator[Callable[[Callable[[Any], Any]], InProcessServer]]:
    running: list[tuple[WSGIHandler, InProcessServer]] = []

    def start(wrap: Callable[[Any], Any]) -> InProcessServer:
        handler = WSGIHandler(wsgi_app, AppSection())
        server = in_process(wrap(handler))
        running.append((handler, server))
        return server

    yield start
    for handler, server in running:
        asyncio.run_coroutine_threadsafe(handler.shutdown(), server.loop).result(10)


def test_wsgi_answers_are_compressed(wsgi: Callable[[Callable[[Any], Any]], InProcessServer],
                                     protocol: str) -> None:
    server = wsgi(CompressingHandler)
    with http_client(server.url, protocol) as client:
        for encoding in ENCODINGS:
            whole = client.get("/page", headers={"accept-encoding": encoding})
            assert whole.headers["content-encoding"] == encoding and whole.content == HTML
            with client.stream("GET", "/pieces", headers={"accept-encoding": encoding}) as answer:
                raw = b"".join(answer.iter_raw())
            assert decode(encoding, raw) == FIRST + b"".join(REST)
            assert "content-length" not in answer.headers
            head = client.head("/page", headers={"accept-encoding": encoding})  # no body: length unknown
            assert head.headers["content-encoding"] == encoding and "content-length" not in head.headers
            assert head.headers["vary"] == "accept-encoding"


# -- compressed request bodies ----------------------------------------------------------------------


def decoding(in_process: Start, app: Any, allowed: tuple[str, ...] = ("gzip", "br", "zstd"),
             max_body_size: int = MiB) -> InProcessServer:
    return in_process(RequestEncodingRule(ASGIHandler(app, AppSection()), allowed=allowed,
                                          max_body_size=max_body_size))


@pytest.mark.parametrize("codings", ["gzip", "br", "zstd", "gzip, br", "zstd, gzip", "identity"])
def test_a_compressed_upload_is_decoded_for_the_app(in_process: Start, app: Any, protocol: str,
                                                    codings: str) -> None:
    server = decoding(in_process, app)
    data = json.dumps(ITEMS * 3).encode()
    body = data
    for coding in codings.split(", "):
        if coding != "identity":
            body = encode(coding, body)
    with http_client(server.url, protocol) as client:
        answer = client.post("/echo", content=body, headers={"content-encoding": codings,
                                                              "content-type": "application/json"})
    assert answer.status_code == 200
    assert answer.json()["sha"] == hashlib.sha256(data).hexdigest()
    if codings != "identity":
        assert answer.json()["seen"] == {"content-encoding": None, "content-length": None}


@pytest.mark.parametrize(("allowed", "sent", "accept"), [
    (("gzip",), "br", b"gzip"), ((), "gzip", b"identity"), (("gzip", "zstd"), "gzip, br", b"gzip, zstd"),
    (("gzip",), "compress", b"gzip"), (("gzip",), "gzip, gzip, gzip", b"gzip"),
])
def test_an_unaccepted_coding_gets_415(in_process: Start, app: Any, allowed: tuple[str, ...], sent: str,
                                       accept: bytes) -> None:
    server = decoding(in_process, app, allowed)
    with server.connect() as sock:
        status, headers, _ = exchange(sock, b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-encoding: %s\r\n"
                                      b"content-length: 4\r\n\r\nabcd" % sent.encode())
        assert status == 415 and headers[b"accept-encoding"] == accept
        status, _, _ = exchange(sock, b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}")
        assert status == 200  # the same connection goes on


@pytest.mark.parametrize("body", [b"not gzip at all", gzip.compress(HTML)[:-20],
                                  gzip.compress(HTML) + b"trailing junk"])
def test_a_body_not_in_its_coding_gets_400(in_process: Start, app: Any, body: bytes) -> None:
    server = decoding(in_process, app)
    with http_client(server.url) as client:
        answer = client.post("/count", content=body, headers={"content-encoding": "gzip"})
        assert answer.status_code == 400
        assert client.get("/small").status_code == 200


def bomb(encoding: str, size: int = 100 * MiB) -> bytes:
    """`size` zeros in `encoding`, made a MiB at a time."""
    zeros = bytes(MiB)
    if encoding == "gzip":
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        return b"".join(compressor.compress(zeros) for _ in range(size // MiB)) + compressor.flush()
    if encoding == "br":
        brotli_compressor: Any = brotli.Compressor(quality=5)
        return b"".join(bytes(brotli_compressor.process(zeros)) for _ in range(size // MiB)) + bytes(
            brotli_compressor.finish())
    writer = zstandard.ZstdCompressor(level=3).compressobj()
    return b"".join(writer.compress(zeros) for _ in range(size // MiB)) + writer.flush()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_compression_bomb_is_cut_at_max_body_size(in_process: Start, app: Any, gate: Gate,
                                                    encoding: str) -> None:
    payload = bomb(encoding)
    assert len(payload) < 200 * 1024  # 100 MiB of zeros in at most ~100 KiB
    server = decoding(in_process, app, max_body_size=MiB)
    tracemalloc.start()
    try:
        with http_client(server.url) as client:
            answer = client.post("/count", content=payload, headers={"content-encoding": encoding})
            _, peak = tracemalloc.get_traced_memory()
            assert answer.status_code == 413
            assert client.get("/small").json() == {"ok": True}  # still serving
    finally:
        tracemalloc.stop()
    assert gate.received[0] <= MiB and gate.disconnected == [True]
    assert peak < 16 * MiB  # every process allocation while it ran: far below the 100 MiB it encodes


def test_a_wsgi_application_reads_a_decoded_upload(
        wsgi: Callable[[Callable[[Any], Any]], InProcessServer]) -> None:
    server = wsgi(lambda handler: RequestEncodingRule(handler, allowed=("gzip",), max_body_size=MiB))
    with http_client(server.url) as client:
        answer = client.post("/upload", content=gzip.compress(HTML), headers={"content-encoding": "gzip"})
    assert answer.content == b"%d %s" % (len(HTML), hashlib.sha256(HTML).hexdigest().encode())


@pytest.mark.parametrize("codings", [["gzip"], ["br"], ["zstd"], ["gzip", "zstd"], ["br", "gzip"]])
def test_decoding_keeps_every_byte_across_piece_boundaries(codings: list[str]) -> None:
    rng = random.Random(7)
    data = b"".join(rng.randbytes(rng.randint(0, 20000)) + bytes(rng.randint(0, 300000))
                    + b"text %d " % n * rng.randint(0, 5000) for n in range(12))
    encoded = data
    for coding in codings:
        encoded = encode(coding, encoded)
    if codings == ["gzip"]:
        encoded += gzip.compress(b"a second member")  # a gzip body may be a series of members
        data += b"a second member"

    async def run() -> bytes:
        loop = asyncio.get_running_loop()
        source = RequestBody(loop, None, lambda: None)
        makers = decoder_makers()
        body = DecodingBody(source, [makers[coding]() for coding in reversed(codings)], 64 * MiB)

        async def feed() -> None:
            position = 0
            while position < len(encoded):
                size = rng.choice([1, 7, 100, 5000, 70000])
                source.feed(encoded[position:position + size])
                position += size
                await asyncio.sleep(0)
            source.end()

        feeding = asyncio.create_task(feed())
        pieces = []
        while piece := await body.read():
            assert len(piece) <= 64 * 1024 * 2
            pieces.append(piece)
        await feeding
        assert body.ended
        return b"".join(pieces)

    assert asyncio.run(run()) == data


def test_finished_answers_free_their_encoders_at_once(compressed: InProcessServer) -> None:
    """Responses sit in reference cycles until the garbage collector runs, which the encoders' native
    memory (a megabyte or more each for zstd and brotli) does not prompt: with the collector held off,
    memory must still follow the answers in flight, not the answers sent."""
    import gc

    gc.collect()
    gc.disable()
    try:
        for _ in range(30):
            status, headers, _ = get(compressed, "/declared", "zstd")
            assert status == 200 and headers[b"content-encoding"] == b"zstd"
        alive = sum(1 for o in gc.get_objects() if type(o).__name__ == "_ZstdEncoder")
    finally:
        gc.enable()
    assert alive <= 2, alive  # at most the one of an answer still finishing
