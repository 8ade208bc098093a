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


def test_directory_listing_in_a_browser(ring3_process: Start, tmp_path: Path) -> None:
    """A listing as a person sees it (the screenshot goes to docs/images when RING3_SCREENSHOTS is set), and
    a name that looks like markup shown as text."""
    import os

    root = tmp_path / "files"
    (root / "photos 2026").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "report.pdf").write_bytes(b"%PDF" + b"x" * 150_000)
    (root / "notes #1?.txt").write_text("notes\n")
    (root / "café.md").write_text("# café\n")
    (root / "<img src=x onerror=alert(1)>.txt").write_text("not markup\n")
    (root / "archive.tar.gz").write_bytes(b"\x1f\x8b" + b"y" * 3_000_000)
    server = ring3_process(str(root), "--listen", "127.0.0.1:0", "--access-log", "off", "--listing")
    shot = tmp_path / "listing.png"
    profile = tmp_path / "profile"
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1000,600",
         f"--screenshot={shot}", server.url + "/?sort=size&order=desc"],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    if os.environ.get("RING3_SCREENSHOTS"):
        shutil.copy(shot, Path(__file__).resolve().parent.parent / "docs" / "images" / "listing.png")
    dom = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", server.url + "/"],
        capture_output=True, text=True, timeout=90).stdout
    assert "Index of /" in dom
    assert "<img src=x" not in dom and "&lt;img src=x onerror=alert(1)&gt;.txt" in dom  # text, not markup
    for link in ("photos%202026/", "notes%20%231%3F.txt", "caf%C3%A9.md"):
        assert f'href="{link}"' in dom, link
    assert dom.index("docs/") < dom.index("report.pdf")  # directories first
