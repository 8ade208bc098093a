"""The issue's goals for ring3, held against the figures of the same run: a ratio to a peer (or to ring3
in another scenario), a difference from it (what ring3's routing adds to a single site's CPU per request),
or a bound of its own."""

from __future__ import annotations

from benchkit.figures import Record, num

LABELS = {"cpu_us_per_request": "CPU µs per request", "mb_per_s": "MB/s", "peak_rss_mib": "peak RSS MiB",
          "reload_errors.close": "wrk's errors during reloads (Connection: close)",
          "reload_errors.keep-alive": "wrk's errors during reloads (keep-alive)",
          "requests_per_s": "requests/s", "body_bytes": "bytes per response",
          "syscalls.total_per_request": "syscalls per request",
          "proxy_body.python_bytes_per_response": "body bytes through Python per response"}


def figure(record: Record | None, key: str) -> float | None:
    """A results figure: the median of the repetitions, or a single value (peak RSS); a dotted key is a
    path into the record (syscalls.total_per_request)."""
    *path, last = key.split(".")
    for part in path:
        found = (record or {}).get(part)
        record = found if isinstance(found, dict) else None
    value = (record or {}).get(last)
    if isinstance(value, dict):
        found = value.get("median")
        return float(found) if found is not None else None
    return float(value) if isinstance(value, int | float) else None


def evaluate(goal: Record, scenario: Record, by_name: dict[str, Record]) -> Record:
    """ring3's figure, the one it is held to (if a ratio or a difference), and whether the goal is met
    (None: not measured in this run)."""
    key = goal["key"]
    mine = figure(scenario["results"].get(goal.get("server") or "ring3"), key)
    reference = by_name.get(goal["scenario"] or scenario["name"], {})
    theirs = figure(reference.get("results", {}).get(goal["against"]), key) if goal["against"] else None
    value = mine / theirs if mine is not None and theirs else None
    if goal.get("difference"):
        value = mine - theirs if mine is not None and theirs is not None else None
    if not goal["against"]:
        value = mine
    met = None if value is None else (value >= goal["bound"] if goal["at_least"] else value <= goal["bound"])
    return {"ring3": mine, "reference": theirs, "value": value, "met": met,
            "peers": peer_ratios(goal, scenario, reference) if goal["against"] == "ring3" else {}}


def peer_ratios(goal: Record, scenario: Record, reference: Record) -> dict[str, float]:
    """For a goal against ring3's own figure elsewhere (resumed against full): each peer's same ratio,
    for scale."""
    found = {}
    elsewhere = reference.get("results", {})
    for name, record in scenario["results"].items():
        mine, theirs = figure(record, goal["key"]), figure(elsewhere.get(name), goal["key"])
        if name != "ring3" and mine is not None and theirs:
            found[name] = mine / theirs
    return found


def ran(goal: Record, scenario: Record, by_name: dict[str, Record]) -> bool:
    """Whether the server a goal holds ring3 to is in this run (ring3-base only with --baseline)."""
    reference = by_name.get(goal["scenario"] or scenario["name"], {})
    return goal["against"] in reference.get("results", {})


def describe(goal: Record, scenario: Record) -> str:
    sign = ">=" if goal["at_least"] else "<="
    label = LABELS.get(goal["key"], goal["key"])
    note = f" ({goal['note']})" if goal.get("note") else ""
    if goal.get("server"):
        label = f"{goal['server']}: {label}"
    if not goal["against"]:
        return f"{label} {sign} {goal['bound']:.1f}{note}"
    where = f" in {goal['scenario']}" if goal["scenario"] and goal["scenario"] != scenario["name"] else ""
    if goal.get("difference"):
        return f"{label} {sign} {goal['against']}'s{where} + {goal['bound']:.2f}{note}"
    return f"{label} {sign} {goal['bound']:.2f}x {goal['against']}'s{where}{note}"


def goal_table(report: Record) -> list[str]:
    """One row per goal of every scenario that has some."""
    by_name = {scenario["name"]: scenario for scenario in report["scenarios"]}
    lines = ["| scenario | goal | ring3 | held to | ring3/it (+: ring3 - it) | met |", "|" + "---|" * 6]
    for scenario in report["scenarios"]:
        for goal in scenario.get("goals") or []:
            if goal.get("if_run") and not ran(goal, scenario, by_name):
                continue
            found = evaluate(goal, scenario, by_name)
            verdict = {True: "yes", False: "**no**", None: "not measured"}[found["met"]]
            ratio = num(found["value"], 2) if goal["against"] else ""
            if goal.get("difference") and found["value"] is not None:
                ratio = f"{found['value']:+.2f}"
            if found["peers"]:
                ratio += " (" + ", ".join(f"{name}'s own: {num(value, 2)}"
                                          for name, value in found["peers"].items()) + ")"
            lines.append(f"| {scenario['title']} | {describe(goal, scenario)} | {num(found['ring3'], 2)} | "
                         f"{num(found['reference'], 2) if goal['against'] else ''} | {ratio} | {verdict} |")
    return lines if len(lines) > 2 else []
