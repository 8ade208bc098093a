"""The benchmark's --quick mode runs end to end: every scenario (static files, ASGI, WSGI and WebSocket
apps, worker processes and reloads) measured for ring3, every syscall count taken.

Only counts are asserted (something was served, syscalls were seen); no timing decides this test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("wrk", "h2load", "strace", "taskset", "cc")


def scenario_names() -> list[str]:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from benchkit.scenarios import SCENARIOS
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return [scenario.name for scenario in SCENARIOS]


@pytest.mark.timeout(240)
def test_quick_benchmark_measures_every_scenario(tmp_path: Path) -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"needs {', '.join(missing)} (scripts/test installs them)"
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=220)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads((out / "latest.json").read_text())
    assert (out / "latest.md").read_text().startswith("# ring3 benchmark")
    assert data["settings"]["mode"] == "quick"
    assert data["machine"]["nproc"] >= 1
    by_name = {scenario["name"]: scenario for scenario in data["scenarios"]}
    # The harness could leave a scenario out (no C compiler for wsload, an interface ring3 lacks); here
    # every one must run: a scenario left out would be a skip in disguise.
    assert not data["skipped"], data["skipped"]
    assert sorted(by_name) == sorted(scenario_names())
    for name, scenario in by_name.items():
        if scenario["kind"] == "reload":
            check_reloads(name, scenario)
            continue
        ring3 = scenario["results"]["ring3"]
        assert ring3.get("error") is None, (name, ring3.get("error"))
        if scenario["kind"] == "idle":  # memory with connections held open, not rates
            assert ring3["connections"] == ring3["wanted"] > 0, name
            assert ring3["rss_held_mib"] > ring3["rss_before_mib"] > 0, name
            assert ring3["kib_per_connection"] > 0, name
            continue
        assert ring3["requests_per_s"]["median"] > 0, name
        assert ring3["syscalls"]["requests"] > 0, name
        assert ring3["syscalls"]["total_per_request"] > 0, name
        assert ring3["load_cpu_share"]["median"] > 0, name
        if data["ledger_available"]:
            assert ring3["ledger"]["comparison"], name
        if scenario.get("upstream") and data["ledger_available"]:  # a proxy scenario's body check
            body = ring3["proxy_body"]
            assert body["error"] is None and body["responses"] >= 2, (name, body)
            # every body byte went through Python or by splice (zero-copy), none twice or not at all
            moved = body["python_bytes_per_response"] + body["zero_copy_bytes_per_response"]
            assert moved == body["body_bytes"], (name, body)
        if scenario["workers"]:  # ring3-w2 beside ring3, its two workers' split from /metrics
            two = scenario["results"]["ring3-w2"]
            assert two.get("error") is None and two["requests_per_s"]["median"] > 0, (name, two)
            assert two["balance"]["worker_processes"] == 2, (name, two["balance"])
            if data["ledger_available"]:
                assert sorted(two["balance"]["requests"]) == ["1", "2"], (name, two["balance"])
                assert sum(two["balance"]["requests"].values()) > 0, (name, two["balance"])
        if scenario["static_goal"]:  # the ASGI stream beside ring3's static file of the same size
            assert scenario["results"]["ring3-static"]["mb_per_s"]["median"] > 0, name
            assert "ring3-static" in scenario["ratios"]["peers"], name


def check_reloads(name: str, scenario: dict[str, Any]) -> None:
    """ring3-w2 served wrk in every run; every SIGHUP of a reloading run led to a completed reload (a
    SIGHUP during a reload adds one after it), and nothing failed but wrk's count of the kept-alive
    connections the draining workers closed (read errors, at most one per connection and reload)."""
    record = scenario["results"]["ring3-w2"]
    assert record.get("error") is None, (name, record.get("error"))
    runs = record["runs"]
    assert sorted(runs) == ["close", "keep-alive"], (name, sorted(runs))
    for mode, phases in runs.items():
        assert sorted(phases) == ["quiet", "reload"], (name, mode)
        assert all(run["requests"] > 0 for run in phases.values()), (name, mode)
        quiet, reload = phases["quiet"], phases["reload"]
        assert not any(quiet["errors"].values()), (name, mode, quiet["errors"])
        assert quiet["hups"] == quiet["reloads_completed"] == 0, (name, mode)
        assert reload["hups"] >= 1 and reload["reloads_completed"] >= 1, (name, mode, reload)
        assert reload["reloads_not_done"] == 0, (name, mode, reload)
        cut = reload["errors"]["read"] if mode == "keep-alive" else 0
        assert cut <= scenario["connections"] * reload["reloads_completed"], (name, mode, reload["errors"])
        assert sum(reload["errors"].values()) == cut, (name, mode, reload["errors"])
