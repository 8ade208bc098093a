"""The status page of the admin listener: /status.json's numbers against the traffic sent, alone and under
a master (reloaded by SIGHUP), the page's headers, the page in headless Chromium (the screenshot goes to
docs/images when RING3_SCREENSHOTS is set), and a server nobody watches that never imports it."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from conftest import RunningServer
from test_browser import CHROMIUM_FLAGS, chromium
from test_ledger import admin_url

Start = Callable[..., RunningServer]


def status(admin: str, query: str = "") -> dict[str, Any]:
    response = httpx.get(f"{admin}/status.json{query}", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    found: dict[str, Any] = response.json()
    return found


def settled(admin: str, started: float) -> tuple[dict[str, Any], bool]:
    """/status.json a little over a second after `started` (just before the first request for the page),
    and whether its rates surely cover all since then: they do when it was read before the sampler's
    first reading of its own, HISTORY_INTERVAL (2 s) after that first request."""
    time.sleep(max(0.0, started + 1.2 - time.monotonic()))
    found = status(admin)
    return found, time.monotonic() - started < 1.9


def wait_for(admin: str, check: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = status(admin)
        if check(found):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


def test_status_json_alone_counts_requests_and_the_toll(ring3_process: Start, site: Path) -> None:
    (site / "big.bin").write_bytes(os.urandom(100_000))
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--admin", "127.0.0.1:0")
    admin = admin_url(server)
    started = time.monotonic()
    first = status(admin)
    assert first["mode"] == "single" and first["admin_counted"] is True and first["master"] is None
    assert first["rates"] is None  # one reading: no rate yet
    assert first["history"]["points"] == []
    assert [w["pid"] for w in first["workers"]] == [server.process.pid]
    with httpx.Client() as client:  # one connection: its repeats come from the replay cache
        for _ in range(20):
            assert client.get(f"{server.url}/hello.txt").status_code == 200
        assert client.get(f"{server.url}/big.bin").status_code == 200
        assert client.get(f"{server.url}/missing").status_code == 404
    found, whole = settled(admin, started)
    totals, rates = found["totals"], found["rates"]
    # The first /status.json itself is counted too: one process has one ledger, its admin's included.
    assert totals["requests"] - first["totals"]["requests"] >= 22
    assert totals["statuses"]["4xx"] >= 1
    assert rates is not None and rates["window"] >= 1.0
    assert rates["requests"] >= (22 if whole else 1) and rates["requests_per_s"] > 0
    assert rates["syscalls_per_request"] > 0
    assert rates["syscalls_per_request_by_kind"]["recv"] > 0
    if whole:
        assert rates["syscalls_per_request_by_kind"]["sendfile"] > 0  # big.bin went by sendfile
        assert rates["replay_hit_rate"] > 0.5  # 19 of the 20 repeats, of about 23
        assert 0 < rates["zero_copy_share"] < 1
    assert totals["responses_replayed"] >= 15
    assert totals["bytes"]["zero_copy"] >= 100_000
    assert rates["bytes_copied_per_request"] > 0
    assert totals["syscalls_total"] == sum(totals["syscalls"].values())
    worker = found["workers"][0]
    assert worker["name"] == "1" and worker["ready"] and not worker["draining"]
    assert worker["requests"] == totals["requests"] and worker["requests_per_s"] > 0
    assert 0 < worker["uptime"] < 60


def test_status_page_headers_methods_and_policy(ring3_process: Start, site: Path) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--admin", "127.0.0.1:0")
    admin = admin_url(server)
    page = httpx.get(admin + "/status", timeout=5)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-store"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "unsafe" not in policy
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        inline = page.text.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in policy  # the page's own code, and only it, may run
    # Self-contained: no address but the SVG namespace and the empty icon.
    assert re.findall(r"https?://[^\s\"']+", page.text) == ["http://www.w3.org/2000/svg"]
    assert re.findall(r"(?:src|href)=\"([^\"]*)\"", page.text) == ["data:,"]
    head = httpx.head(admin + "/status", timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == page.headers["content-length"]
    assert httpx.head(admin + "/status.json", timeout=5).status_code == 200
    for path in ("/status", "/status.json"):
        refused = httpx.post(admin + path, timeout=5)
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    assert httpx.get(admin + "/status.html", timeout=5).status_code == 404


def test_status_json_under_a_master_and_a_reload(ring3_process: Start, site: Path) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--admin", "127.0.0.1:0", "--workers", "2")
    admin = admin_url(server)
    started = time.monotonic()
    first = status(admin)
    assert first["mode"] == "master" and first["admin_counted"] is False
    assert len(first["workers"]) == 2 and {w["name"] for w in first["workers"]} == {"1", "2"}
    master = first["master"]
    assert master["pid"] == server.process.pid
    assert master["generation"] == 1 and master["restarts"] == 0
    assert master["workers"] == {"ready": 2, "starting": 0, "draining": 0}
    assert master["reloads"] == {"done": 0, "refused": 0, "failed": 0}
    assert {w["generation"] for w in first["workers"]} == {1}
    before = first["totals"]["requests"]
    for _ in range(30):  # new connections, spread over the two workers by the kernel
        assert httpx.get(f"{server.url}/hello.txt", timeout=5).status_code == 200
    found, whole = settled(admin, started)
    # The master's own snapshot (its admin listener) is left out: only the workers' traffic counts.
    assert found["totals"]["requests"] - before == 30
    assert found["rates"]["requests"] == 30 if whole else 0 < found["rates"]["requests"] <= 30
    assert found["rates"]["syscalls_per_request"] > 0
    assert sum(w["requests"] for w in found["workers"]) == found["totals"]["requests"]
    assert sum(w["requests_per_s"] for w in found["workers"]) > 0
    counted = found["totals"]["requests"]
    server.process.send_signal(signal.SIGHUP)
    reloaded = wait_for(admin, lambda d: d["master"]["generation"] == 2 and len(d["workers"]) == 2
                        and all(w["generation"] == 2 for w in d["workers"]))
    assert reloaded["master"]["reloads"]["done"] == 1
    assert reloaded["master"]["workers"]["ready"] == 2
    assert reloaded["totals"]["requests"] >= counted  # the old workers' counts are kept ("ended")
    pids = {w["pid"] for w in first["workers"]}
    assert not pids & {w["pid"] for w in reloaded["workers"]}
    # The sampler has been running since the first request: a point every 2 s.
    history = wait_for(admin, lambda d: len(d["history"]["points"]) >= 2)["history"]
    assert history["fields"][:3] == ["time", "requests_per_s", "syscalls_per_request"]
    newest = history["points"][-1][0]
    assert all(p[0] > newest for p in status(admin, f"?since={newest}")["history"]["points"])
    assert server.stop() == 0


def snapshot(worker: str, pid: int, **counts: Any) -> dict[str, Any]:
    from ring3.observe.ledger import Ledger
    from ring3.observe.snapshot import of_ledger

    found = of_ledger(Ledger(**counts), worker)
    found.update(pid=pid, started=100.0, ready=True, connections_open=1)
    return found


def test_rates_come_from_the_difference_between_readings() -> None:
    from ring3.observe.status_page import MAX_GAP, StatusPage, rates, read

    before = read([snapshot("1", 7, recv=10, sendfile=2, bytes_zero_copy=1000, bytes_copied=100,
                            statuses={200: 10}),
                   snapshot("master", 6, recv=500, statuses={200: 50})], 0.0, 0.0)
    after = read([snapshot("1", 7, recv=30, sendfile=12, bytes_zero_copy=9000, bytes_copied=100,
                           responses_replayed=5, statuses={200: 25, 404: 5}),
                  snapshot("master", 6, recv=900, statuses={200: 90})], 2.0, 2.0)
    found = rates(before, after)  # the master's own counters are none of the traffic's
    assert found["requests"] == 20 and found["requests_per_s"] == 10.0
    assert found["syscalls_per_request"] == 30 / 20
    assert found["syscalls_per_request_by_kind"] == {"recv": 1.0, "sendfile": 0.5}
    assert found["zero_copy_share"] == 1.0 and found["bytes_copied_per_request"] == 0.0
    assert found["replay_hit_rate"] == 0.25 and found["cache_hit_rate"] == 0.0
    assert found["statuses_per_s"]["2xx"] == 7.5 and found["statuses_per_s"]["4xx"] == 2.5
    # A worker killed outright takes its counts: nothing goes below zero, and no request makes no ratio.
    gone = read([snapshot("2", 8)], 3.0, 3.0)
    dropped = rates(after, gone)
    assert dropped["requests"] == 0 and dropped["syscalls_per_s"] == 0
    assert dropped["syscalls_per_request"] is None and dropped["zero_copy_share"] is None
    page = StatusPage(list, str, None)
    page.add(before)
    page.add(after)
    page.add(read([snapshot("1", 7, statuses={200: 40})], 2.0 + MAX_GAP + 1, 10.0))  # the sampler slept
    assert [p[0] for p in page._points] == [2.0]


UNWATCHED = """
import asyncio, io, os, re, signal, sys, urllib.request
from ring3.apps import build_site
from ring3.config import build_config
from ring3.server import serve

def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status

async def main():
    config = build_config(None, "<t>", {("server", "listen"): ["127.0.0.1:0"],
                                        ("server", "admin"): "127.0.0.1:0",
                                        ("static", "root"): sys.argv[1], ("server", "access_log"): "off"})
    out, sys.stdout = sys.stdout, io.StringIO()
    task = asyncio.create_task(serve(config, build_site(config, sys.argv[1]).handler))
    while not (found := re.search(r"ring3 admin on (\\S+)/metrics", sys.stdout.getvalue())):
        await asyncio.sleep(0.02)
    sys.stdout, admin = out, found.group(1)
    for path in ("/metrics", "/healthz", "/readyz"):
        assert await asyncio.to_thread(get, admin + path) == 200
    print("before", "ring3.observe.status_page" in sys.modules)
    assert await asyncio.to_thread(get, admin + "/status.json") == 200
    print("after", "ring3.observe.status_page" in sys.modules)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 10)
    await asyncio.sleep(0)
    print("left", len(asyncio.all_tasks()) - 1)

asyncio.run(main())
"""


def test_a_server_nobody_watches_never_imports_the_status_page(site: Path) -> None:
    """And the one watched stops its sampler with the admin listener: no task is left behind."""
    result = subprocess.run([sys.executable, "-W", "error", "-c", UNWATCHED, str(site)],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.split("\n")[:3] == ["before False", "after True", "left 0"], result


# -- in a browser -----------------------------------------------------------------------------------------


def png_facts(data: bytes) -> tuple[int, int, float]:
    """A PNG's width, height, and the share of its (filtered) pixel bytes that are not zero: a blank
    page filters to nearly all zeros."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        if data[at + 4:at + 8] == b"IDAT":
            chunks.append(data[at + 8:at + 8 + length])
        at += 12 + length
    pixels = zlib.decompress(b"".join(chunks))
    return width, height, 1 - pixels.count(0) / len(pixels)


def test_status_page_in_a_browser(ring3_process: Start, site: Path, tmp_path: Path) -> None:
    (site / "big.bin").write_bytes(os.urandom(300_000))
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--admin", "127.0.0.1:0", "--workers", "2")
    admin = admin_url(server)
    status(admin)  # the sampler starts: the chart has points by the time the browser looks
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=5) as client:
            sent = 0
            while not stop.is_set():
                client.get(f"{server.url}/hello.txt")
                client.get(f"{server.url}/")
                sent += 1
                if sent % 10 == 0:
                    client.get(f"{server.url}/big.bin")
                if sent % 8 == 0:
                    httpx.get(f"{server.url}/missing", timeout=5)  # a new connection, and a 404
                time.sleep(0.004)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        wanted = 20 if os.environ.get("RING3_SCREENSHOTS") else 3  # the README's chart: 40 s of history
        wait_for(admin, lambda d: len(d["history"]["points"]) >= wanted, timeout=20 + 3 * wanted)
        profile = tmp_path / "profile"
        browse = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1100,700",
                  "--virtual-time-budget=4000"]
        dom = subprocess.run([*browse, "--dump-dom", admin + "/status"], capture_output=True, text=True,
                             timeout=90).stdout
        shot = tmp_path / "status-page.png"
        result = subprocess.run([*browse, f"--screenshot={shot}", admin + "/status"], capture_output=True,
                                text=True, timeout=90)
    finally:
        stop.set()
        loader.join(10)
    assert 'data-state="live"' in dom, dom[:2000]
    rps = re.search(r'id="rps">([^<]*)<', dom)
    assert rps is not None and rps.group(1) not in ("—", "") and float(rps.group(1).replace(",", "")) > 0
    spr = re.search(r'id="spr">([^<]*)<', dom)
    assert spr is not None and float(spr.group(1)) > 0, spr
    assert re.search(r'id="zc">\d+\.\d %<', dom)
    for chart in ("chart-rps", "chart-spr"):
        drawn = re.search(rf'id="{chart}"[^>]*data-points="(\d+)"', dom)
        assert drawn is not None and int(drawn.group(1)) >= 3, chart
        assert re.search(rf'id="{chart}".*?class="line" d="M[\d.]+,[\d.]+L', dom, re.S), chart
    assert dom.count("<tr>") - 2 >= 2 + 1  # two worker rows and syscall kinds, beside the two heads
    assert "master pid" in dom and "generation" in dom
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    width, height, busy = png_facts(data)
    assert (width, height) == (1100, 700)
    assert 30_000 < len(data) < 400_000 and busy > 0.02, (len(data), busy)
    if os.environ.get("RING3_SCREENSHOTS"):
        shutil.copy(shot, Path(__file__).resolve().parent.parent / "docs" / "images" / "status-page.png")
