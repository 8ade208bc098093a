"""Turning measurements into the JSON record, the Markdown tables and the README section."""

from __future__ import annotations

import platform
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

Record = dict[str, Any]
README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
TOP_SYSCALLS = 6
NOTES = ("Syscalls/req come from `strace -f -c` attached to the running server while h2load sends a fixed "
         "number of requests (uvicorn a fifth of it: strace slows it most); CPU µs/req is utime+stime of "
         "all the server's processes; peak RSS is VmHWM summed over them; `nginx` runs with `tcp_nopush on`. "
         "Pipelined latency is n/a (wrk's histogram is wrong with pipelining).")


def stat(samples: list[float]) -> Record | None:
    """Median with min..max of the repetitions."""
    if not samples:
        return None
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "samples": samples}


def median(record: Record, key: str) -> float | None:
    value = record.get(key)
    return value["median"] if isinstance(value, dict) else None


def machine() -> Record:
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, timeout=10).stdout.strip()
    return {"nproc": int(nproc) if nproc.isdigit() else None, "cpu_model": cpu_model,
            "kernel": platform.release()}


def git_commit(repo: Path) -> str:
    out = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True,
                         text=True, timeout=10)
    return out.stdout.strip() or "unknown"


def _ratio(mine: float | None, theirs: float | None) -> float | None:
    return mine / theirs if mine and theirs else None


def ratios(scenario: Record) -> Record:
    """ring3 against nginx and against the best Python peer (by median requests/s)."""
    results: Record = scenario["results"]
    ring3, nginx = results.get("ring3", {}), results.get("nginx", {})
    found: Record = {}
    for key in ("requests_per_s", "cpu_us_per_request"):
        found[f"ring3/nginx {key}"] = _ratio(median(ring3, key), median(nginx, key))
    python = {name: median(r, "requests_per_s") or 0.0 for name, r in results.items()
              if r.get("peer") == "python"}
    best = max(python, key=lambda name: python[name], default=None)
    if best is not None and python[best]:
        found["best_python"] = best
        for key in ("requests_per_s", "cpu_us_per_request"):
            found[f"ring3/best_python {key}"] = _ratio(median(ring3, key), median(results[best], key))
    return {key: value for key, value in found.items() if value is not None}


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _rate_cell(record: Record) -> str:
    rate = record.get("requests_per_s")
    if not rate:
        return "n/a"
    return f"{_num(rate['median'])} ({_num(rate['min'])}..{_num(rate['max'])})"


def _top_syscalls(record: Record) -> str:
    per_request: dict[str, float] = (record.get("syscalls") or {}).get("per_request", {})
    top = sorted(per_request.items(), key=lambda item: -item[1])[:TOP_SYSCALLS]
    return ", ".join(f"{name} {value:.2f}" for name, value in top if value >= 0.005)


def _result_row(scenario: Record, name: str, record: Record) -> str:
    if record.get("error") and not record.get("requests_per_s"):
        return f"| {scenario['title']} | {name} | failed: {record['error'][:80]} |" + " |" * 7
    syscalls = record.get("syscalls") or {}
    errors = record.get("socket_errors", 0) + record.get("unexpected_status", 0)
    label = f"{name} ({errors} errors)" if errors else name
    cells = [scenario["title"], label, _rate_cell(record), _num(median(record, "mb_per_s")),
             _num(median(record, "cpu_us_per_request")), _num(median(record, "p50_ms"), 2),
             _num(median(record, "p99_ms"), 2), _num(record.get("peak_rss_mib")),
             _num(syscalls.get("total_per_request"), 2), _top_syscalls(record)]
    return "| " + " | ".join(cells) + " |"


def results_table(report: Record) -> list[str]:
    lines = ["| scenario | server | requests/s median (min..max) | MB/s | server CPU µs/req | p50 ms "
             "| p99 ms | peak RSS MiB | syscalls/req | top syscalls/req |", "|" + "---|" * 10]
    for scenario in report["scenarios"]:
        for name, record in scenario["results"].items():
            lines.append(_result_row(scenario, name, record))
    return lines


def ratio_table(report: Record) -> list[str]:
    if not any(scenario.get("ratios") for scenario in report["scenarios"]):
        return ["No peers in this run: no ratios."]
    lines = ["| scenario | ring3/nginx req/s | ring3/nginx CPU/req | best Python peer "
             "| ring3/best Python req/s | ring3/best Python CPU/req |", "|" + "---|" * 6]
    for scenario in report["scenarios"]:
        found = scenario.get("ratios", {})
        cells = [scenario["title"], _num(found.get("ring3/nginx requests_per_s"), 2),
                 _num(found.get("ring3/nginx cpu_us_per_request"), 2), found.get("best_python", "n/a"),
                 _num(found.get("ring3/best_python requests_per_s"), 2),
                 _num(found.get("ring3/best_python cpu_us_per_request"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ledger_table(report: Record) -> list[str]:
    kinds: list[str] = report.get("ledger_verdict_kinds", [])
    lines = ["| scenario | " + " | ".join(kinds) + " | agree |", "|" + "---|" * (len(kinds) + 2)]
    for scenario in report["scenarios"]:
        ledger = scenario["results"].get("ring3", {}).get("ledger")
        if not ledger:
            continue
        rows = {row["kind"]: row for row in ledger["comparison"]}
        cells = [scenario["title"]]
        for kind in kinds:
            row = rows[kind]
            mark = "" if row["agree"] else " ✗"
            cells.append(f"{row['strace_per_request']:.2f} / {row['ledger_per_request']:.2f}{mark}")
        cells.append("yes" if ledger["agree"] else "**no**")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def header_lines(report: Record) -> list[str]:
    m, s, v = report["machine"], report["settings"], report["versions"]
    peers = ", ".join(f"{k} {val}" for k, val in v.items() if k != "ring3")
    warmup = f"a {s['warmup_s']} s warm-up" if s["warmup_s"] else "no warm-up"
    load = ""
    if m.get("loadavg_before"):
        load = f" 1-min load average {m['loadavg_before'][0]} before, {m['loadavg_after'][0]} after."
    return [f"Date: {report['date']}. Machine: {m['nproc']} CPUs ({m['cpu_model']}), "
            f"Linux {m['kernel']}.{load}",
            f"Mode: {s['mode']}: {s['repetitions']} interleaved repetition(s) of {s['duration_s']} s per "
            f"server and scenario after {warmup}; servers (one worker each) pinned to "
            f"CPU {s['server_cpu']}, wrk/h2load to CPU {s['load_cpu']}; medians, requests/s with min..max.",
            f"ring3 {v.get('ring3', '?')}; {peers}."]


def markdown(report: Record) -> str:
    parts = ["# ring3 benchmark", "", *header_lines(report), "", "## Results", "", *results_table(report),
             "", NOTES, "", "## Ratios", "", *ratio_table(report)]
    if report.get("ledger_available"):
        parts += ["", "## ring3's ledger against strace (calls per request: strace / ledger)", "",
                  *ledger_table(report), "",
                  f"Agreement: within {report['ledger_tolerance']:.0%} (or {report['ledger_slack']} calls, "
                  "the two /metrics scrapes' own) on every kind shown."]
    else:
        parts += ["", "ring3's ledger: not compared (this ring3 has no `--admin` /metrics listener)."]
    return "\n".join(parts) + "\n"


def readme_section(report: Record, chart: str | None) -> str:
    lines = [*header_lines(report), "", *results_table(report), "", NOTES, "", *ratio_table(report)]
    if report.get("ledger_available"):
        lines += ["", "ring3's ledger against strace (calls per request, strace / ledger):", "",
                  *ledger_table(report)]
    if chart:
        lines += ["", f"![benchmark chart]({chart})"]
    return "\n".join(lines)


def update_readme(readme: Path, section: str) -> bool:
    """Replace what lies between the bench markers; False if the README has none."""
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        return False
    readme.write_text(pattern.sub(lambda _: f"{README_START}\n{section}\n{README_END}", text))
    return True
