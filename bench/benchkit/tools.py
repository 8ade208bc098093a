"""What the benchmark needs outside ring3: load tools from apt, the peers in their own virtual environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
VENV = BENCH_DIR / ".venv"
VENV_PYTHON = VENV / "bin" / "python"

# command -> Debian package that provides it
LOAD_TOOLS = {"wrk": "wrk", "h2load": "nghttp2-client", "strace": "strace", "taskset": "util-linux"}
PEER_TOOLS = {"nginx": "nginx"}
WEBSOCKET_TOOLS = {"cc": "gcc"}  # builds bench/wsload, the WebSocket load generator
TLS_TOOLS = {"openssl": "openssl"}  # makes the TLS scenarios' certificate
UPSTREAM_TOOLS = {"nginx": "nginx"}  # the proxy scenarios' upstream, whichever proxies run
HAPROXY_TOOLS = {"haproxy": "haproxy"}  # a proxy scenarios' peer
# The peers and the chart live in bench/.venv, never in ring3's own dependencies.
VENV_PACKAGES = ("granian>=2,<3", "uvicorn>=0.30,<1", "uvloop>=0.19,<1", "httptools>=0.6,<1",
                 "starlette>=0.37,<2", "gunicorn>=23,<28", "websockets>=14,<18", "wsproto>=1.2,<2",
                 "hypercorn>=0.17,<1", "matplotlib>=3.8,<4")
VENV_IMPORTS = ("granian", "uvicorn", "uvloop", "httptools", "starlette", "gunicorn", "websockets", "wsproto",
                "hypercorn", "matplotlib")
POLICY_RC = Path("/usr/sbin/policy-rc.d")
SBIN_TOOLS = ("nginx", "haproxy")  # installed in /usr/sbin, which a non-login PATH may lack


def find_tool(name: str) -> str | None:
    """The tool's path on PATH (nginx and haproxy also in /usr/sbin)."""
    found = shutil.which(name)
    if found is None and name in SBIN_TOOLS:
        path = f"/usr/sbin/{name}"
        found = path if os.access(path, os.X_OK) else None
    return found


def missing_tools(wanted: dict[str, str]) -> list[str]:
    """Debian packages for the commands of `wanted` that are not installed."""
    return sorted({package for command, package in wanted.items() if find_tool(command) is None})


def apt_install(packages: list[str]) -> None:
    """`apt-get update` once, then install; services are kept from starting during the install."""
    if not packages:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"bench: need root to install {' '.join(packages)} (or install them first)")
    print(f"bench: installing from apt: {' '.join(packages)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    made_policy = not POLICY_RC.exists()
    if made_policy:  # nginx's postinst would otherwise start a system nginx on port 80
        POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
                       check=True, env=env, timeout=900, stdout=subprocess.DEVNULL)
    finally:
        if made_policy:
            POLICY_RC.unlink()


def ensure_system_tools(with_peers: bool, with_websocket: bool, with_tls: bool, with_upstream: bool = False,
                        with_haproxy: bool = False) -> None:
    """The load tools, and those the chosen scenarios and servers need (the proxy scenarios: nginx as
    their upstream, haproxy where it runs)."""
    wanted = {**LOAD_TOOLS, **(PEER_TOOLS if with_peers else {}),
              **(WEBSOCKET_TOOLS if with_websocket else {}), **(TLS_TOOLS if with_tls else {}),
              **(UPSTREAM_TOOLS if with_upstream else {}), **(HAPROXY_TOOLS if with_haproxy else {})}
    apt_install(missing_tools(wanted))
    still = missing_tools(wanted)
    if still:
        raise SystemExit(f"bench: still missing after install: {' '.join(still)}")


def require_load_tools() -> None:
    """--quick installs nothing: the test command (scripts/test) provides these."""
    missing = missing_tools(LOAD_TOOLS)
    if missing:
        raise SystemExit(f"bench: missing tools, install with: apt-get install {' '.join(missing)}")


def venv_ready() -> bool:
    if not VENV_PYTHON.exists():
        return False
    check = subprocess.run([str(VENV_PYTHON), "-c", f"import {', '.join(VENV_IMPORTS)}"],
                           capture_output=True, timeout=120)
    return check.returncode == 0


def ensure_venv() -> None:
    """bench/.venv with granian, uvicorn (uvloop, httptools, websockets, wsproto), starlette, gunicorn,
    hypercorn and matplotlib."""
    if venv_ready():
        return
    print(f"bench: preparing {VENV} ({', '.join(VENV_IMPORTS)})", flush=True)
    if not VENV_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    subprocess.run([str(VENV_PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *VENV_PACKAGES], check=True, timeout=900)


def venv_versions() -> dict[str, str]:
    if not VENV_PYTHON.exists():
        return {}
    code = ("import importlib.metadata as m, json; "
            f"print(json.dumps({{n: m.version(n) for n in {list(VENV_IMPORTS)!r}}}))")
    out = subprocess.run([str(VENV_PYTHON), "-c", code], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return {}
    versions: dict[str, str] = json.loads(out.stdout)
    return versions


def tool_version(argv: list[str]) -> str:
    """First line of a tool's version output (stdout or stderr)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"
