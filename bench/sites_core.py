"""In-process microbenchmark of site routing: the router of a 100-site x 20-location config against the
static handler alone, both cycling through the same 1,800 files (one per prefix location), warm caches.

    python3 bench/sites_core.py

No sockets: this is what routing costs in Python per request (host lookup, path lookup, the location's
handler), without the protocol around it. bench/run.py's sites-spread-1k scenario measures the same over
real connections.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from ring3.apps import build_site
from ring3.body import EMPTY_BODY
from ring3.config import build_config, load_toml
from ring3.events import Request
from ring3.handlers.static import StaticHandler

SITES, LOCATIONS, ROUNDS = 100, 20, 50


def make_tree(root: Path) -> Path:
    lines = ["[server]", "access_log = 'off'"]
    for site in range(SITES):
        directory = root / f"s{site}"
        lines += ["[[site]]", f'hosts = ["s{site}.test", "www.s{site}.test"]', f'root = "{directory}"']
        for number in range(LOCATIONS):
            location = directory / f"loc{number}"
            location.mkdir(parents=True)
            (location / "f.txt").write_bytes(b"x" * 1024)
            if number % 10 == 9:
                regex = f'path = "~ ^/re{number}/.*\\\\.txt$"'
                lines += ["[[site.location]]", regex, f'root = "{directory}"']
            else:
                lines += ["[[site.location]]", f'path = "/loc{number}/"', f'alias = "{location}/"']
    config = root / "sites.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def request(host: bytes, path: bytes) -> Request:
    return Request(b"GET", path, path, b"", "1.1", [(b"host", host)], host, True)


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        config = build_config(load_toml(str(make_tree(root))), "sites.toml")
        router = build_site(config, work).handler
        pairs = [(b"s%d.test" % s, b"/loc%d/f.txt" % n) for s in range(SITES) for n in range(LOCATIONS)
                 if n % 10 != 9]
        random.Random(1).shuffle(pairs)
        routed = [request(host, path) for host, path in pairs]
        static = StaticHandler(config.static, work)
        direct = [request(b"x", b"/" + host.split(b".")[0] + path) for host, path in pairs]
        results: dict[str, list[float]] = {"static handler alone": [], "site router": []}
        for _ in range(2):  # interleaved
            for name, handler, requests in (("static handler alone", static, direct),
                                            ("site router", router, routed)):
                for item in requests:  # warm: the file cache admits on the second request
                    handler(item, EMPTY_BODY)
                    handler(item, EMPTY_BODY)
                started = time.perf_counter()
                for _ in range(ROUNDS):
                    for item in requests:
                        handler(item, EMPTY_BODY)
                results[name].append((time.perf_counter() - started) / (ROUNDS * len(requests)) * 1e6)
        alone, routed_us = min(results["static handler alone"]), min(results["site router"])
        print(f"static handler alone: {alone:.3f} us/request")
        print(f"site router:          {routed_us:.3f} us/request")
        print(f"routing adds:         {routed_us - alone:+.3f} us/request")


if __name__ == "__main__":
    main()
