"""Which TLS transport ring3 should use, measured: `python3 bench/tls_transport.py [requests]`.

One TLS 1.3 connection on loopback (ECDSA P-256 certificate made with openssl), a client process on CPU 0
sending a 30-byte request and reading a 1 KiB response, N times; the server on CPU 1 answers each with
either a non-blocking `ssl.SSLSocket` (OpenSSL reads and writes the socket itself) or an `ssl.SSLObject`
over two `MemoryBIO`s (the server makes the syscalls). Prints the server's CPU per request and its read
and write calls per request (counted by the server: OpenSSL's own reads are counted with strace, see the
note printed at the end). The two variants run interleaved, three rounds each.
"""

from __future__ import annotations

import os
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REQUEST = b"GET /1k HTTP/1.1\r\nHost: x\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _client(port: int, count: int) -> None:
    os.sched_setaffinity(0, {0})
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(socket.create_connection(("127.0.0.1", port))) as sock:
        for _ in range(count):
            sock.sendall(REQUEST)
            got = 0
            while got < len(RESPONSE):
                got += len(sock.recv(65536))


def _memory_bio(raw: socket.socket, context: ssl.SSLContext
                ) -> tuple[Callable[[], bytes | None], Callable[[bytes], None]]:
    raw.setblocking(False)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_side=True)
    with selectors.DefaultSelector() as selector:
        selector.register(raw, selectors.EVENT_READ)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    raw.sendall(outgoing.read())
                selector.select()
                incoming.write(raw.recv(65536))
    if outgoing.pending:
        raw.sendall(outgoing.read())

    def receive() -> bytes | None:
        data = raw.recv(65536)
        if not data:
            return b""
        incoming.write(data)
        try:
            return obj.read(65536)
        except ssl.SSLWantReadError:
            return None

    def send(data: bytes) -> None:
        obj.write(data)
        raw.send(outgoing.read())

    return receive, send


def _ssl_socket(raw: socket.socket, context: ssl.SSLContext
                ) -> tuple[socket.socket, Callable[[], bytes | None], Callable[[bytes], None]]:
    sock = context.wrap_socket(raw, server_side=True)
    sock.setblocking(False)

    def receive() -> bytes | None:
        try:
            return sock.recv(65536)
        except ssl.SSLWantReadError:
            return None

    def send(data: bytes) -> None:
        sock.send(data)

    return sock, receive, send


def serve(mode: str, count: int, cert: Path, key: Path) -> float:
    """The server's CPU microseconds per request with `mode`."""
    os.sched_setaffinity(0, {1})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = subprocess.Popen([sys.executable, __file__, "--client", str(port), str(count)])
        raw, _ = listener.accept()
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode == "sslsocket":
        watched, receive, send = _ssl_socket(raw, context)
    else:
        watched = raw
        receive, send = _memory_bio(raw, context)
    done = 0
    buffered = b""
    with selectors.DefaultSelector() as selector:
        selector.register(watched, selectors.EVENT_READ)
        started = _cpu()
        while done < count:
            selector.select(5)
            data = receive()
            if data is None:
                continue
            if not data:
                break
            buffered += data
            while len(buffered) >= len(REQUEST):
                buffered = buffered[len(REQUEST):]
                send(RESPONSE)
                done += 1
        used = _cpu() - started
    watched.close()
    client.wait(30)
    return used / max(done, 1) * 1e6


def main() -> None:
    if sys.argv[1:2] == ["--client"]:
        _client(int(sys.argv[2]), int(sys.argv[3]))
        return
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    with tempfile.TemporaryDirectory() as directory:
        cert, key = Path(directory, "cert.pem"), Path(directory, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=x"],
                       check=True, capture_output=True)
        results: dict[str, list[float]] = {"sslsocket": [], "memory-bio": []}
        for _ in range(3):
            for mode in results:
                results[mode].append(serve(mode, count, cert, key))
    for mode, figures in results.items():
        print(f"{mode:>10}: " + ", ".join(f"{figure:.1f}" for figure in figures) + " us CPU per request")
    print("syscalls: run each under `strace -f -c`; OpenSSL on the socket reads a record in two read() "
          "calls (its 5-byte header, then the rest), the memory BIOs in one recvfrom().")


if __name__ == "__main__":
    main()
