"""SIGUSR1 reopens the access logs, as nginx's does for logrotate: the server's and each site's; no line
is lost, and the server keeps serving (the signal used to kill it)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from conftest import RunningServer
from sites_kit import request, serve_config


def test_usr1_after_a_rename_moves_new_lines_to_new_files(ring3_process: Callable[..., RunningServer],
                                                          tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    main_log, site_log = logs / "access.log", logs / "site.log"
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "{main_log}"
        [[site]]
        hosts = ["own.test"]
        access_log = "{site_log}"
        respond = {{ body = "own" }}
        [[site]]
        hosts = ["*"]
        respond = {{ body = "default" }}
        """)
    for host in ("own.test", "other.test"):
        assert request(server, "/before", host)[0] == 200
    main_log.rename(logs / "access.log.1")  # what logrotate does, then its postrotate: kill -USR1
    site_log.rename(logs / "site.log.1")
    for host in ("own.test", "other.test"):
        assert request(server, "/between", host)[0] == 200  # still the old files: nothing lost
    server.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not (main_log.exists() and site_log.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for host in ("own.test", "other.test"):
        assert request(server, "/after", host)[0] == 200
    deadline = time.monotonic() + 10
    while (b"/after" not in site_log.read_bytes() or b"/after" not in main_log.read_bytes()) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    for old, new, host in (("access.log.1", main_log, "other.test"), ("site.log.1", site_log, "own.test")):
        rotated = (logs / old).read_text().splitlines()
        assert [line.split('"')[1] for line in rotated] == ["GET /before HTTP/1.1", "GET /between HTTP/1.1"]
        fresh = new.read_text().splitlines()
        assert [line.split('"')[1] for line in fresh] == ["GET /after HTTP/1.1"], (host, fresh)
    assert server.process.poll() is None
    assert server.stop() == 0


def test_usr1_when_the_file_cannot_be_opened_keeps_the_old_one(
        ring3_process: Callable[..., RunningServer], tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "access.log"
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "{log}"
        [[site]]
        hosts = ["*"]
        respond = {{ body = "x" }}
        """)
    log.rename(tmp_path / "moved.log")
    logs.rmdir()  # the directory is gone: the path cannot be opened again
    server.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "cannot reopen the access log" not in server.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "still writing the old file" in server.stderr()
    assert request(server, "/later", "x.test")[0] == 200
    deadline = time.monotonic() + 10
    while b"/later" not in (tmp_path / "moved.log").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b"GET /later" in (tmp_path / "moved.log").read_bytes()
    assert server.stop() == 0
