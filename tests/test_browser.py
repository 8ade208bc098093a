"""The demo site as a person sees it: headless Chromium loads the page and its stylesheet and image."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from conftest import RunningServer

Start = Callable[..., RunningServer]

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is missing: scripts/test installs it"
    return path


def test_demo_page_renders_with_its_stylesheet_and_image(ring3_process: Start, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server = ring3_process("--listen", "127.0.0.1:0", "--access-log", str(log))
    shot = tmp_path / "demo.png"
    profile = tmp_path / "profile"
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1000,800",
         f"--screenshot={shot}", server.url + "/"],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 10_000  # a real rendering, not a blank page
    dom = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", server.url + "/"],
        capture_output=True, text=True, timeout=90)
    assert "<h1>ring3 is running</h1>" in dom.stdout
    assert server.stop() == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "ring3.svg" not in log.read_text():
        time.sleep(0.1)
    served = log.read_text()
    for path in ("/", "/style.css", "/ring3.svg"):
        assert f'"GET {path} HTTP/1.1" 200 ' in served, served
