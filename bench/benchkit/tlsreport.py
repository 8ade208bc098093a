"""The TLS scenarios' own table: the session each server settled on, and in the handshake scenarios the
handshakes the server counted against the requests the load tool counted."""

from __future__ import annotations

from benchkit.figures import Record, num

NOTE = ("TLS scenarios: HTTPS with an ECDSA P-256 certificate made at bench time; wrk and h2load "
        "(told OpenSSL's default TLS 1.3 suite order, which wrk offers) speak HTTP/1.1 over it (h2load "
        "h2 in the `h2-*` scenarios), the session shown is the one the harness's own client (Python's "
        "ssl, the same order, offering h2 first in the `h2-*` scenarios) got. The "
        "handshake scenarios send `Connection: close`, so each request opens a new connection: in the "
        "full one neither server issues session tickets or keeps a session cache (ring3 "
        "`--no-tls-session-tickets`, nginx `ssl_session_tickets off; ssl_session_cache off`), so every "
        "handshake is a full one; in the resumed one both issue tickets and wrk and h2load resume their "
        "last session on each new connection. The servers count the handshakes (ring3's "
        "`ring3_tls_handshakes_total`; for nginx a buffered access log of `$ssl_session_reused "
        "$connection_requests`) over the rate runs (against wrk's responses: up to one cut handshake per "
        "connection and run) and over the fixed count under strace (h2load); a server whose counts do not "
        "agree gets an error. There, CPU per request is CPU per handshake.")


def _window(counted: Record | None) -> str:
    if not counted:
        return "n/a"
    mark = "" if counted["agree"] else " ✗"
    return (f"{num(counted['handshakes_per_request'], 3)} ({counted['full']:,} full, "
            f"{counted['resumed']:,} resumed, {counted['requests']:,} requests){mark}")


def session_table(report: Record) -> list[str]:
    """One row per server of every TLS scenario."""
    lines = ["| scenario | server | protocol | suite | ALPN | handshakes per request, rate runs | "
             "under strace |", "|" + "---|" * 7]
    for scenario in report["scenarios"]:
        if not scenario.get("tls"):
            continue
        for name, record in scenario["results"].items():
            session = record.get("tls") or {}
            shakes = record.get("handshakes") or {}
            cells = ([session.get("version"), session.get("cipher"), session.get("alpn")]
                     if "error" not in session else [f"failed: {session['error'][:60]}", "", ""])
            lines.append(f"| {scenario['title']} | {name} | " + " | ".join(str(c or "n/a") for c in cells)
                         + f" | {_window(shakes.get('rates'))} | {_window(shakes.get('strace'))} |")
    return lines if len(lines) > 2 else []
