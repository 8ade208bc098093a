"""Server-side CPU per request of an HTTP/2 protocol core, without sockets: the measurement behind ring3's
choice of its own core over the `h2` library (issue "HTTP/2").

    python3 bench/h2_core.py [--rounds N]

One client connection's bytes are made first (h2 as the client): reads of HEADERS for ten streams each,
the way h2load -m10 sends them (after the first read every request is a fully indexed HPACK block); then
again with 1,000 different paths, as a site's assets are asked for (a Huffman-coded literal path in every
block, so no block repeats). Then
each core, in turn and interleaved, takes every read and answers each stream with HEADERS (:status 200,
date, server, content-type, content-length, etag, last-modified) and one 1 KiB DATA frame with
END_STREAM; the bytes it would send are collected and dropped. CPU time is process time (both cores run
in this one process, pinned to one CPU if taskset allows), reported as microseconds per request.

`h2` runs with header validation and normalisation off (its fastest configuration) and with its
logger silenced; ring3's core runs as the server runs it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.settings

from ring3.http2 import protocol as p
from ring3.http2.response import response_block

STREAMS_PER_READ = 10
BODY = b"x" * 1024
REQUEST = [(":method", "GET"), (":scheme", "https"), (":path", "/1k.bin"), (":authority", "127.0.0.1:8443"),
           ("user-agent", "h2load nghttp2/1.52.0")]
RESPONSE = [(b"content-type", b"application/octet-stream"), (b"etag", b'"18ed4308213e091b-400"'),
            (b"last-modified", b"Tue, 01 Dec 2026 22:52:08 GMT")]
COMMON = b"date: Tue, 01 Dec 2026 22:52:08 GMT\r\nserver: ring3\r\n"


def client_reads(reads: int, paths: int) -> list[bytes]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    # Credit enough for every answer: flow control is not what this measures.
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1})
    client.increment_flow_control_window((1 << 31) - 1 - 65535)
    out = [client.data_to_send()]
    stream_id = 1
    for _ in range(reads):
        for _ in range(STREAMS_PER_READ):
            path = "/1k.bin" if paths == 1 else f"/assets/file{stream_id % paths}.css"
            client.send_headers(stream_id, [*REQUEST[:2], (":path", path), *REQUEST[3:]], end_stream=True)
            stream_id += 2
        out.append(client.data_to_send())
    out[1] = out[0] + out[1]
    return out[1:]


def run_h2(reads: list[bytes]) -> int:
    config = h2.config.H2Configuration(client_side=False, validate_inbound_headers=False,
                                       validate_outbound_headers=False, normalize_inbound_headers=False,
                                       normalize_outbound_headers=False)
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    conn.max_inbound_frame_size = 16384
    conn.local_settings.max_concurrent_streams = 10_000_000
    conn.local_settings.acknowledge()
    conn.data_to_send()
    headers = [(":status", "200"), ("date", "Tue, 01 Dec 2026 22:52:08 GMT"), ("server", "ring3"),
               *[(k.decode(), v.decode()) for k, v in RESPONSE], ("content-length", "1024")]
    answered = 0
    for data in reads:
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                conn.send_headers(event.stream_id, headers)
                conn.send_data(event.stream_id, BODY, end_stream=True)
                answered += 1
        conn.data_to_send()
    return answered


def run_ring3(reads: list[bytes]) -> int:
    core = p.H2Protocol(p.H2Settings(max_concurrent_streams=10_000_000), time.monotonic)
    core.start()
    answered = 0
    for data in reads:
        parts: list[bytes] = []
        for kind, stream_id, _, _ in core.receive(data):
            if kind == p.REQUEST:
                block = response_block(200, COMMON, [], b"".join(b"%s: %s\r\n" % pair for pair in RESPONSE),
                                       len(BODY))
                core.send_headers(stream_id, block, False)
                parts.append(core.data_header(stream_id, len(BODY), True))
                parts.append(BODY)
                answered += 1
        b"".join([core.data_to_send(), *parts])
    return answered


def measure(run: Callable[[list[bytes]], int], reads: list[bytes]) -> float:
    start = time.process_time()
    answered = run(reads)
    return (time.process_time() - start) * 1e6 / answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=500, help="reads of ten requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1 if (os.cpu_count() or 1) > 1 else 0})
    import logging

    logging.getLogger("h2").setLevel(logging.CRITICAL)
    for paths, what in ((1, "one path (h2load -m10: every block after the first is indexed)"),
                        (1000, "1,000 paths (a site's assets: a literal path in every block)")):
        reads = client_reads(args.reads, paths)
        results: dict[str, list[float]] = {"h2 library": [], "ring3 core": []}
        for _ in range(args.rounds):
            results["h2 library"].append(measure(run_h2, reads))
            results["ring3 core"].append(measure(run_ring3, reads))
        print(what)
        for name, values in results.items():
            print(f"  {name:12s} {statistics.median(values):7.1f} us/request  "
                  f"(min {min(values):.1f}, max {max(values):.1f}, {args.rounds} rounds of "
                  f"{args.reads * STREAMS_PER_READ} requests)")
        ratio = statistics.median(results["h2 library"]) / statistics.median(results["ring3 core"])
        print(f"  h2 library / ring3 core: {ratio:.1f}x")


if __name__ == "__main__":
    main()
