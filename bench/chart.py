"""Draws bench/results/latest.png from a results JSON: `bench/.venv/bin/python bench/chart.py JSON PNG`.

One panel per scenario (requests/s, MB/s for the large bodies, messages/s for WebSocket; median with
min..max bars) and one of server CPU time per request (per message). Run by bench/run.py with
bench/.venv's matplotlib.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

Record = dict[str, Any]
COLORS = {"ring3": "#d62728", "ring3-static": "#ff9896", "nginx": "#2ca02c", "nginx-nopush-off": "#98df8a",
          "granian": "#1f77b4", "granian-rsgi": "#aec7e8", "uvicorn": "#9467bd",
          "uvicorn-websockets": "#7b4fa6", "uvicorn-wsproto": "#c5b0d5", "gunicorn": "#8c564b",
          "hypercorn": "#e377c2", "ring3-base": "#7f7f7f", "ring3-single": "#ffbb78",
          "nginx-gzip": "#17becf", "nginx-gzip-static": "#9edae5"}
COLUMNS = 4


def _metric(scenario: Record) -> tuple[str, str]:
    """The scenario's headline rate: MB/s for the large bodies, messages/s for WebSocket, else requests/s."""
    key = scenario.get("rate_key") or ("mb_per_s" if scenario["file"].startswith("10m") else "requests_per_s")
    if key == "mb_per_s":
        return key, "MB/s"
    return key, "messages/s" if scenario.get("unit") == "message" else "requests/s"


def rate_panel(ax: Axes, scenario: Record) -> None:
    key, unit = _metric(scenario)
    names, medians, low, high = [], [], [], []
    for name, record in scenario["results"].items():
        value = record.get(key)
        if not value:
            continue
        names.append(name)
        medians.append(value["median"])
        low.append(value["median"] - value["min"])
        high.append(value["max"] - value["median"])
    ax.bar(names, medians, yerr=[low, high], capsize=3, color=[COLORS.get(n, "grey") for n in names])
    ax.set_title(scenario["title"], fontsize=9)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)


def cpu_panel(ax: Axes, scenarios: list[Record]) -> None:
    servers = list(dict.fromkeys(name for s in scenarios for name in s["results"]))
    width = 0.8 / max(len(servers), 1)
    for index, name in enumerate(servers):
        values = [(s["results"].get(name, {}).get("cpu_us_per_request") or {}).get("median", math.nan)
                  for s in scenarios]
        positions = [i + index * width for i in range(len(scenarios))]
        ax.bar(positions, values, width, label=name, color=COLORS.get(name, "grey"))
    ax.set_yscale("log")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(scenarios))], [s["name"] for s in scenarios])
    ax.set_title("server CPU µs per request or message (log)", fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=6)


def draw(data: Record, png: Path) -> None:
    # no rates in the idle and reload-latency scenarios
    scenarios: list[Record] = [s for s in data["scenarios"] if s.get("kind") not in ("idle", "reload")]
    panels = len(scenarios) + 1
    rows = math.ceil(panels / COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(4 * COLUMNS, 3.3 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, scenario in zip(flat, scenarios, strict=False):
        rate_panel(ax, scenario)
    cpu_panel(flat[len(scenarios)], scenarios)
    for ax in flat[panels:]:
        ax.axis("off")
    machine = data["machine"]
    fig.suptitle(f"ring3 benchmark, {data['date']}: {machine['nproc']} CPUs ({machine['cpu_model']}), "
                 f"Linux {machine['kernel']}; one worker each (but -w2), medians of "
                 f"{data['settings']['repetitions']} x {data['settings']['duration_s']} s", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: chart.py RESULTS.json OUT.png", file=sys.stderr)
        return 2
    draw(json.loads(Path(argv[1]).read_text()), Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
