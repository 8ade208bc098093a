"""ring3 as the `curl` binary sees it, and sendfile observed with strace."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

from conftest import READY, RunningServer

Start = Callable[..., RunningServer]
TEN_MIB = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def curl() -> str:
    path = shutil.which("curl")
    assert path is not None, "the curl binary is required for these tests"
    return path


def run_curl(curl: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run([curl, "--max-time", "30", *args], capture_output=True, timeout=timeout,
                            check=False)
    assert result.returncode == 0, (args, result.returncode, result.stderr.decode(errors="replace"))
    return result


def test_demo_site(curl: str, ring3_process: Start, tmp_path: Path) -> None:
    server = ring3_process("--listen", "127.0.0.1:0", "--access-log", "off")
    demo = resources.files("ring3") / "demo"
    expected = {
        "/": ("index.html", "text/html"),
        "/style.css": ("style.css", "text/css"),
        "/ring3.svg": ("ring3.svg", "image/svg+xml"),
    }
    for path, (name, mime) in expected.items():
        out = tmp_path / f"demo-{name}"
        result = run_curl(curl, "-v", "-s", "-o", str(out), "-w", "%{http_code} %{content_type}",
                          server.url + path)
        stderr = result.stderr.decode(errors="replace")
        assert re.search(r"^< HTTP/1\.1 200 OK\r?$", stderr, re.MULTILINE), stderr
        code, _, content_type = result.stdout.decode().partition(" ")
        assert code == "200"
        assert content_type.split(";")[0].strip() == mime, content_type
        assert out.read_bytes() == (demo / name).read_bytes(), path
    page = (tmp_path / "demo-index.html").read_text()
    assert "/style.css" in page
    assert "/ring3.svg" in page
    assert server.stop() == 0


def test_connection_reused(curl: str, served: RunningServer) -> None:
    result = run_curl(curl, "-v", "-s", "-o", "/dev/null", "-o", "/dev/null",
                      served.url + "/hello.txt", served.url + "/data.bin")
    stderr = result.stderr.decode(errors="replace")
    assert stderr.count("Connected to ") == 1, stderr
    reused = "Re-using existing connection" in stderr
    left_intact = len(re.findall(r"Connection #0 to host \S+ left intact", stderr))
    assert reused or left_intact == 2, stderr
    assert len(re.findall(r"^< HTTP/1\.1 200 OK\r?$", stderr, re.MULTILINE)) == 2, stderr


def test_range(curl: str, served: RunningServer, tmp_path: Path, site: Path) -> None:
    out = tmp_path / "range.out"
    result = run_curl(curl, "-s", "-r", "0-99", "-o", str(out), "-w", "%{http_code}",
                      served.url + "/data.bin")
    assert result.stdout == b"206"
    assert out.read_bytes() == (site / "data.bin").read_bytes()[:100]
    assert len(out.read_bytes()) == 100


def test_conditional_time(curl: str, served: RunningServer, site: Path, tmp_path: Path) -> None:
    # -z FILE sends If-Modified-Since with FILE's mtime: the served file itself is not newer -> 304.
    result = run_curl(curl, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                      "-z", str(site / "hello.txt"), served.url + "/hello.txt")
    assert result.stdout == b"304"
    # A reference file much older than the served one -> the full file.
    old = tmp_path / "old-reference"
    old.write_text("x")
    os.utime(old, (784111777, 784111777))  # 1994
    out = tmp_path / "cond.out"
    result = run_curl(curl, "-s", "-o", str(out), "-w", "%{http_code}",
                      "-z", str(old), served.url + "/hello.txt")
    assert result.stdout == b"200"
    assert out.read_bytes() == b"hello, world\n"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_ten_mib_file(curl: str, served: RunningServer, site: Path, tmp_path: Path) -> None:
    payload = os.urandom(TEN_MIB)
    (site / "big.bin").write_bytes(payload)
    out = tmp_path / "big.out"
    result = run_curl(curl, "-s", "-o", str(out), "-w", "%{http_code} %{size_download}",
                      served.url + "/big.bin")
    assert result.stdout == f"200 {TEN_MIB}".encode()
    assert sha256_file(out) == hashlib.sha256(payload).hexdigest()


# -- strace: the body leaves with sendfile ------------------------------------------------------------

SENDFILE_RESULT = re.compile(r"sendfile.*=\s*(\d+)\s*$")


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children += [int(child) for child in text]
    return children


def test_sendfile_under_strace(curl: str, site: Path, tmp_path: Path) -> None:
    strace = shutil.which("strace")
    assert strace is not None, "the strace binary is required for this test"
    payload = os.urandom(TEN_MIB)
    (site / "big.bin").write_bytes(payload)
    log = tmp_path / "strace.log"
    stderr_path = tmp_path / "strace-ring3-stderr.log"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [strace, "-f", "-e", "trace=sendfile", "-o", str(log),
             sys.executable, "-m", "ring3", "serve", str(site), "--listen", "127.0.0.1:0",
             "--access-log", "off"],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    try:
        url = wait_ready(process, stderr_path)
        out = tmp_path / "big-strace.out"
        result = run_curl(curl, "-s", "-o", str(out), "-w", "%{http_code}", url + "/big.bin")
        assert result.stdout == b"200"
        assert sha256_file(out) == hashlib.sha256(payload).hexdigest()
        # Signal ring3 itself (strace's child): strace then exits with ring3's exit status.
        servers = child_pids(process.pid)
        assert len(servers) == 1, servers
        os.kill(servers[0], signal.SIGTERM)
        code = process.wait(20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    assert code == 0, stderr_path.read_text()
    trace = log.read_text()
    sent = [int(m.group(1)) for line in trace.splitlines() if (m := SENDFILE_RESULT.search(line))]
    assert sent, f"no successful sendfile calls in the strace log:\n{trace[:2000]}"
    assert sum(sent) >= TEN_MIB, (sum(sent), trace[:2000])


def wait_ready(process: subprocess.Popen[str], stderr_path: Path, timeout: float = 20.0) -> str:
    """Read stdout until the readiness line; keep draining afterwards so the child never blocks."""
    assert process.stdout is not None
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = READY.search(line)
            if match and not ready.is_set():
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    ready.wait(max(0.0, deadline - time.monotonic()))
    if not found:
        message = stderr_path.read_text()
        if "ptrace" in message.lower() or "operation not permitted" in message.lower():
            raise AssertionError(f"strace cannot trace here (ptrace not permitted): {message}")
        raise AssertionError(f"ring3 under strace did not start: {message}")
    return found[0]
