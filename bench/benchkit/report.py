"""Turning measurements into the JSON record, the Markdown tables and the README section."""

from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path

from benchkit import goals, pages, proxy, reloads, tlsreport, workers
from benchkit.figures import Record, median, num

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
TOP_SYSCALLS = 6
NOTES = ("Syscalls/req come from `strace -f -c` attached to the running server while h2load sends a fixed "
         "number of requests (uvicorn and gunicorn a fifth of it: strace slows them most); CPU µs/req is "
         "utime+stime of all the server's processes; peak RSS is VmHWM summed over them; `nginx` runs with "
         "`tcp_nopush on`. Pipelined latency is n/a (wrk's histogram is wrong with pipelining). "
         "App scenarios host the same application (bench/apps/) on every server: ring3 on its default "
         "asyncio loop, uvicorn on uvloop with httptools, gunicorn as `-k gthread --threads 10 -w 1`; "
         "granian-rsgi (granian's own interface) and ring3-static (ring3 serving a 10 MiB file) are "
         "references. WebSocket echo: rates, CPU, latency (round trip) and syscalls are per message, "
         "64 clients each sending a 1 KiB binary message and waiting for its echo (bench/wsload; syscalls "
         "under strace over a fixed count of messages). Load gen CPU: the share of its core the load "
         "generator used (wrk, wsload); in bold from 90%: there the client's core is the ceiling, and the "
         "rate a floor for the server (the 10 MiB scenarios: wrk copies every byte it receives).")
H2_NOTE = ("HTTP/2 scenarios: h2load drives the rates (`-D SECONDS`) as well as the counts, one thread, "
           "`-m` streams per connection; h2 by ALPN over TLS (h2load offers h2 first, then http/1.1), h2c "
           "with prior knowledge in the clear. Every h2load run must report the scenario's application "
           "protocol, or the server's row fails; p50/p99 are n/a (h2load prints no percentiles); MB/s counts "
           "all the bytes h2load received, headers and framing included.")
RATE_LABELS = {"requests_per_s": "req/s", "mb_per_s": "MB/s"}


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


def rate_label(scenario: Record) -> str:
    """The unit of the scenario's headline rate: req/s, MB/s or msg/s."""
    if scenario.get("unit") == "message":
        return "msg/s"
    return RATE_LABELS.get(scenario.get("rate_key", "requests_per_s"), "req/s")


def ratios(scenario: Record) -> Record:
    """ring3 against each other server of the scenario (or, where the scenario names pairs, each ring3
    against its peer: ring3-w2 against nginx-w2), on the headline rate (higher is better for ring3) and on
    CPU per request (lower is); the best Python peer (by that rate) named."""
    results: Record = scenario["results"]
    key = scenario.get("rate_key", "requests_per_s")
    pairs = scenario.get("pairs") or [("ring3", name) for name, r in results.items() if r.get("peer")]
    peers: Record = {}
    for mine_name, name in pairs:
        mine, record = results.get(mine_name, {}), results.get(name)
        if record is None:
            continue
        rate = _ratio(median(mine, key), median(record, key))
        cpu = _ratio(median(mine, "cpu_us_per_request"), median(record, "cpu_us_per_request"))
        if rate is not None or cpu is not None:
            peers[name] = {"rate": rate, "cpu_per_request": cpu}
            if mine_name != "ring3":
                peers[name]["ring3"] = mine_name
    found: Record = {"rate_key": key, "peers": peers}
    python = {name: median(r, key) or 0.0 for name, r in results.items() if r.get("peer") == "python"}
    best = max(python, key=lambda name: python[name], default=None)
    if best is not None and python[best] and best in peers:
        found["best_python"] = best
    return found


def _rate_cell(record: Record) -> str:
    rate = record.get("requests_per_s")
    if not rate:
        return "n/a"
    return f"{num(rate['median'])} ({num(rate['min'])}..{num(rate['max'])})"


def _top_syscalls(record: Record) -> str:
    per_request: dict[str, float] = (record.get("syscalls") or {}).get("per_request", {})
    top = sorted(per_request.items(), key=lambda item: -item[1])[:TOP_SYSCALLS]
    return ", ".join(f"{name} {value:.2f}" for name, value in top if value >= 0.005)


LOAD_CEILING = 0.9  # a load generator this busy caps the rate: the figure is a floor for the server


def _load_cell(record: Record) -> str:
    value = median(record, "load_cpu_share")
    if value is None:
        return "n/a"
    return f"**{value * 100:.0f}%**" if value >= LOAD_CEILING else f"{value * 100:.0f}%"


def _result_row(scenario: Record, name: str, record: Record) -> str:
    if record.get("error") and not record.get("requests_per_s"):
        reason = " ".join(record["error"].split())[:100].replace("|", "/")
        return f"| {scenario['title']} | {name} | failed: {reason} |" + " |" * 8
    syscalls = record.get("syscalls") or {}
    errors = record.get("socket_errors", 0) + record.get("unexpected_status", 0)
    label = f"{name} ({errors} errors)" if errors else name
    if record.get("error"):  # a repetition or the syscall count failed: the figures are the rest
        label += f" (error: {' '.join(record['error'].split())[:60].replace('|', '/')})"
    cells = [scenario["title"], label, _rate_cell(record), num(median(record, "mb_per_s")),
             num(median(record, "cpu_us_per_request")), num(median(record, "p50_ms"), 2),
             num(median(record, "p99_ms"), 2), num(record.get("peak_rss_mib")),
             num(syscalls.get("total_per_request"), 2), _top_syscalls(record),
             _load_cell(record)]
    return "| " + " | ".join(cells) + " |"


def results_table(report: Record) -> list[str]:
    lines = ["| scenario | server | requests/s (msg/s) median (min..max) | MB/s | server CPU µs/req | p50 ms "
             "| p99 ms | peak RSS MiB | syscalls/req | top syscalls/req | load gen CPU |", "|" + "---|" * 11]
    for scenario in report["scenarios"]:
        if scenario.get("kind") in ("idle", reloads.RELOAD):
            continue  # memory only (idle_table), latency during reloads (reloads.reload_table)
        for name, record in scenario["results"].items():
            lines.append(_result_row(scenario, name, record))
    return lines


def idle_table(report: Record) -> list[str]:
    """Resident memory with the idle scenario's connections held open, per server."""
    lines: list[str] = []
    for scenario in report["scenarios"]:
        if scenario.get("kind") != "idle":
            continue
        lines += [f"{scenario['title']}: each connection got one 1 KiB response, then sat idle in "
                  "keep-alive while the server's resident memory (VmRSS, summed over its processes) was "
                  "read.", "",
                  "| server | connections held | RSS before MiB | RSS holding them MiB | added MiB "
                  "| KiB per connection | opened in s |", "|" + "---|" * 7]
        for name, record in scenario["results"].items():
            if record.get("connections") is None:
                lines.append(f"| {name} | failed: {record.get('error')} | | | | | |")
                continue
            held = f"{record['connections']:,}" + ("" if not record.get("error") else f" ({record['error']})")
            lines.append(f"| {name} | {held} | {num(record['rss_before_mib'])} | "
                         f"{num(record['rss_held_mib'])} | {num(record['added_mib'])} | "
                         f"{num(record['kib_per_connection'], 2)} | {num(record['open_s'], 2)} |")
    return lines


PEER_NOTES = {"reference": " (reference)", "native-variant": " (variant)", "baseline": " (baseline)"}


def ratio_table(report: Record) -> list[str]:
    """One row per scenario and server: ring3's rate over the server's, ring3's CPU per request over its."""
    if not any((scenario.get("ratios") or {}).get("peers") for scenario in report["scenarios"]):
        return ["No peers in this run: no ratios."]
    lines = ["| scenario | against | ring3/it rate | ring3/it CPU per req (msg) |", "|" + "---|" * 4]
    for scenario in report["scenarios"]:
        found = scenario.get("ratios") or {}
        for name, ratio in found.get("peers", {}).items():
            peer = scenario["results"][name].get("peer", "")
            note = " (best Python)" if name == found.get("best_python") else PEER_NOTES.get(peer, "")
            label = name + note + (f" (by {ratio['ring3']})" if ratio.get("ring3") else "")
            rate = ratio.get("rate")
            rate_cell = "n/a" if rate is None else f"{rate:.2f} ({rate_label(scenario)})"
            lines.append(f"| {scenario['title']} | {label} | {rate_cell} | "
                         f"{num(ratio.get('cpu_per_request'), 2)} |")
    return lines


def goal_lines(report: Record) -> list[str]:
    """ring3's ASGI stream against ring3 serving a file of the same size, in the same run."""
    lines = []
    for scenario in report["scenarios"]:
        goal = scenario.get("static_goal")
        if not goal:
            continue
        results = scenario["results"]
        stream = median(results.get("ring3", {}), "mb_per_s")
        static = median(results.get("ring3-static", {}), "mb_per_s")
        if not stream or not static:
            lines.append(f"- {scenario['title']}: not measured in this run (needs ring3 and ring3-static).")
            continue
        ratio = stream / static
        verdict = "met" if ratio >= goal else "**not met**"
        cpu = [num(median(results[name], "cpu_us_per_request")) for name in ("ring3", "ring3-static")]
        busy = max(median(results[name], "load_cpu_share") or 0.0 for name in ("ring3", "ring3-static"))
        ceiling = (f" wrk used up to {busy:.0%} of its core, so both rates may be the client's ceiling."
                   if busy >= LOAD_CEILING else "")
        lines.append(f"- {scenario['title']}: ring3 streams {num(stream)} MB/s from the ASGI app, and "
                     f"serves the 10 MiB file at {num(static)} MB/s (ring3-static, same run and "
                     f"connections): {ratio:.2f}x of its static figure; goal >= {goal:.1f}x: {verdict}. "
                     f"Server CPU per 10 MiB: {cpu[0]} µs streamed, {cpu[1]} µs from the file.{ceiling}")
    return lines


def skipped_lines(report: Record) -> list[str]:
    return [f"- {name}: left out ({reason})." for name, reason in (report.get("skipped") or {}).items()]


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


LEDGER_APP_NOTE = ("In app scenarios strace also counts what the application does in ring3's process "
                   "(Starlette's os.stat beside ring3's own fstat), and the ledger does not: only those "
                   "kinds can disagree there. The loop's wake-ups from worker threads (the WSGI pool, "
                   "anyio's to_thread: a byte sent to the loop's self-pipe, then read by the loop) are "
                   "counted by both, as send and recv, since ring3's default loop counts its self-pipe.")


def _ledger_app_note(report: Record) -> list[str]:
    apps = any(s.get("kind", "static") != "static" and s["results"].get("ring3", {}).get("ledger")
               for s in report["scenarios"])
    return ["", LEDGER_APP_NOTE] if apps else []


def notes(report: Record) -> list[str]:
    """The notes under the results table: the HTTP/2 one where HTTP/2 scenarios ran."""
    http2 = any(scenario.get("protocol", "http/1.1") != "http/1.1" for scenario in report["scenarios"])
    return [NOTES, "", H2_NOTE] if http2 else [NOTES]


# The workers scenarios' 2-worker servers are pinned to both CPUs (benchkit.workers).
WORKERS_EXCEPTION = f" but the workers scenarios' 2-worker ones, pinned to CPUs {workers.BOTH_CPUS}"


def header_lines(report: Record) -> list[str]:
    m, s, v = report["machine"], report["settings"], report["versions"]
    peers = ", ".join(f"{k} {val}" for k, val in v.items() if k != "ring3")
    warmup = f"a {s['warmup_s']} s warm-up" if s["warmup_s"] else "no warm-up"
    exception = WORKERS_EXCEPTION if any(sc.get("workers") for sc in report["scenarios"]) else ""
    load = ""
    if m.get("loadavg_before"):
        load = f" 1-min load average {m['loadavg_before'][0]} before, {m['loadavg_after'][0]} after."
    return [f"Date: {report['date']}. Machine: {m['nproc']} CPUs ({m['cpu_model']}), "
            f"Linux {m['kernel']}.{load}",
            f"Mode: {s['mode']}: {s['repetitions']} interleaved repetition(s) of {s['duration_s']} s per "
            f"server and scenario after {warmup}; servers (one worker each{exception}) pinned to "
            f"CPU {s['server_cpu']}, wrk/h2load/wsload to CPU {s['load_cpu']}; medians, requests/s with "
            "min..max.",
            f"ring3 {v.get('ring3', '?')}; {peers}."]


def markdown(report: Record) -> str:
    parts = ["# ring3 benchmark", "", *header_lines(report), "", "## Results", "", *results_table(report),
             "", *notes(report), "", "## Ratios", "", *ratio_table(report)]
    if idle_table(report):
        parts += ["", "## Idle connections", "", *idle_table(report)]
    if goal_lines(report):
        parts += ["", "## ring3's ASGI stream against its static file", "", *goal_lines(report)]
    if tlsreport.session_table(report):
        parts += ["", "## TLS sessions and handshakes", "", *tlsreport.session_table(report), "",
                  tlsreport.NOTE]
    if pages.compression_table(report):
        parts += ["", "## Compressed answers", "", *pages.compression_table(report)]
    if proxy.body_table(report):
        parts += ["", "## Proxied bodies", "", *proxy.body_table(report)]
    if workers.balance_table(report):
        parts += ["", "## Worker processes", "", *workers.balance_table(report)]
    if reloads.reload_table(report):
        parts += ["", "## Latency during reloads", "", *reloads.reload_table(report)]
    if goals.goal_table(report):
        parts += ["", "## Goals", "", *goals.goal_table(report)]
    if skipped_lines(report):
        parts += ["", "## Scenarios left out", "", *skipped_lines(report)]
    if report.get("ledger_available"):
        parts += ["", "## ring3's ledger against strace (calls per request: strace / ledger)", "",
                  *ledger_table(report), "",
                  f"Agreement: within {report['ledger_tolerance']:.0%} (or {report['ledger_slack']} calls, "
                  "the two /metrics scrapes' own) on every kind shown.", *_ledger_app_note(report)]
    else:
        parts += ["", "ring3's ledger: not compared (this ring3 has no `--admin` /metrics listener)."]
    return "\n".join(parts) + "\n"


def readme_section(report: Record, chart: str | None) -> str:
    lines = [*header_lines(report), "", *results_table(report), "", *notes(report), "", *ratio_table(report)]
    if idle_table(report):
        lines += ["", *idle_table(report)]
    if goal_lines(report):
        lines += ["", "ring3's ASGI stream against its static file:", "", *goal_lines(report)]
    if tlsreport.session_table(report):
        lines += ["", "TLS sessions and handshakes:", "", *tlsreport.session_table(report), "",
                  tlsreport.NOTE]
    if pages.compression_table(report):
        lines += ["", "Compressed answers:", "", *pages.compression_table(report)]
    if proxy.body_table(report):
        lines += ["", "Proxied bodies:", "", *proxy.body_table(report)]
    if workers.balance_table(report):
        lines += ["", "Worker processes:", "", *workers.balance_table(report)]
    if reloads.reload_table(report):
        lines += ["", "Latency during reloads:", "", *reloads.reload_table(report)]
    if goals.goal_table(report):
        lines += ["", "Goals:", "", *goals.goal_table(report)]
    if report.get("ledger_available"):
        lines += ["", "ring3's ledger against strace (calls per request, strace / ledger):", "",
                  *ledger_table(report), *_ledger_app_note(report)]
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
