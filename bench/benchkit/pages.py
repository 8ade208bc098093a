"""The compress scenarios' page and how its compressed answers are checked.

The page: 100 KiB of HTML made from a fixed seed (the same bytes in every run), shaped like a blog's front
page: a navigation bar, then articles (a card each, with a title, author, date, paragraphs of English words
with links, emphasis and code, now and then a list, a table or a figure, then tags and buttons). It
compresses as a real page does (about 5.4x with gzip -9, 4.5x with gzip -1, 6.5x with brotli 11), not as
random bytes (1x) or a repeated string (100x). It is written twice into the bench site: `page.html` alone
(compressed on the fly) and `pre/page.html` with `page.html.gz` (gzip -9, by the gzip command where there
is one, else zlib at level 9) and `page.html.br` (brotli 11, by the `brotli` package) beside it. The ASGI
app of asgi-gzip-html-100k (bench/apps/page_asgi.py) reads `page.html` and sends it in pieces.

The check, before the measured runs: the harness's own client asks with the scenario's Accept-Encoding
until the answer carries Content-Encoding (ring3 compresses the page in a worker thread once its file cache
has admitted it, and answers it plain until then), and decodes it against the page. An app's answer is
compressed as it streams, every time: there the first answer must carry Content-Encoding, with no waiting.
Its body's size is the scenario's bytes per response. After the rate runs the same request must still be
answered so, and wrk's bytes per request (headers included) must stay near that body: answers that went
out plain during the runs would show there.
"""

from __future__ import annotations

import gzip
import http.client
import itertools
import os
import random
import shutil
import subprocess
import sys
import time
import zlib
from functools import cache
from pathlib import Path

from benchkit import tls
from benchkit.figures import Record
from benchkit.procs import cpu_seconds
from benchkit.scenarios import KIB, PAGE, PRECOMPRESSED_PAGE, STATIC, Scenario
from benchkit.servers import HOST, Server

SIZE = 100 * KIB
SEED = 14
ENCODED_TIMEOUT = 20.0  # seconds for a server to answer the page compressed (ring3: once it made it)
POLL_S = 0.1
# wrk's bytes per request may exceed the body by the headers (and chunk framing) and by the responses cut
# at the end of a run (read but not counted); a fifth of the page's answers going out plain would add
# about 80% of the compressed body.
HEADER_ALLOWANCE = 1024
WIRE_SLACK = 1.25

# English words, the frequent ones first (a Zipf law picks them); made-up names besides.
ENGLISH = """the of and to in is for that with on as are by this be from at or an it not which can
have has was were will would should could may might must one two three more most some many each every
other new first last long short great small large high low early late good best better right left
server request response client file files page pages cache memory disk time second seconds minute
network connection connections socket stream streams header headers body bytes size length buffer
buffers queue thread threads worker workers process processes event events loop loops handler
handlers route routes path paths host hosts site sites config settings option options value values
number numbers table tables list lists index indexes record records field fields key keys name names
user users group groups account accounts message messages error errors warning warnings log logs
test tests result results report reports figure figures chart charts line lines point points share
people world year years day days week weeks month months home house city town country state states
water light sound color colour music story stories book books word words letter letters paper
after before under over between through during without within around about against among across
make makes made take takes took give gives gave find finds found keep keeps kept show shows shown
run runs ran read reads write writes wrote send sends sent open opens close closes start starts stop
stops wait waits serve serves served answer answers count counts measure measures compare compares
simple quick slow fast clear plain strong heavy closed public private local remote
because while where when what who whose how why then than there here these those such only also
very often never always again still just even much well back down up out off into onto upon
however therefore meanwhile although instead perhaps usually rather quite nearly almost enough"""
WORDS = ENGLISH.split()
SYLLABLES = ("ka", "lo", "mi", "ne", "ra", "to", "su", "vi", "an", "el", "or", "is", "un", "de", "ba",
             "co", "fi", "gu", "ho", "je", "pra", "str", "en", "ti", "ma", "ser", "ver", "lan", "con", "ex")
NAMES = 300  # made-up names: authors, tags, link targets
NAME_SHARE = 0.05  # of the words in the text
ZIPF = 1.1
# The icon of each article's share button, inline as on many sites.
ICON = ('<svg class="icon" viewBox="0 0 24 24" width="16" height="16" aria-hidden="true"><path d="M18 16.'
        '1c-.8 0-1.4.3-2 .8l-7.1-4.2c.1-.2.1-.5.1-.7s0-.5-.1-.7L16 7.2c.5.5 1.2.8 2 .8 1.7 0 3-1.3 3-3s-1'
        '.3-3-3-3-3 1.3-3 3c0 .2 0 .5.1.7L8 9.8C7.5 9.3 6.8 9 6 9c-1.7 0-3 1.3-3 3s1.3 3 3 3c.8 0 1.5-.3 '
        '2-.8l7.1 4.2c-.1.2-.1.4-.1.6 0 1.6 1.3 2.9 2.9 2.9s2.9-1.3 2.9-2.9-1.3-2.9-2.9-2.9z"/></svg>')
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _Writer:
    """The page's pieces, from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = rng = random.Random(seed)
        names = sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3, 3, 4))))
                        for _ in range(NAMES * 2)})
        rng.shuffle(names)
        self.names = names[:NAMES]
        self.words = WORDS  # the most frequent first, as in English
        self.weights = list(itertools.accumulate(1 / (rank + 1) ** ZIPF for rank in range(len(self.words))))

    def name(self) -> str:
        return self.rng.choice(self.names)

    def word(self) -> str:
        if self.rng.random() < NAME_SHARE:
            return self.name()
        return self.rng.choices(self.words, cum_weights=self.weights)[0]

    def words_(self, count: int) -> str:
        return " ".join(self.word() for _ in range(count))

    def sentence(self) -> str:
        text = self.words_(self.rng.randint(6, 20))
        return text[0].upper() + text[1:] + self.rng.choice("....?!")

    def paragraph(self) -> str:
        rng, parts = self.rng, []
        for _ in range(rng.randint(2, 5)):
            kind = rng.random()
            if kind < 0.2:
                target = f"/{self.name()}/{self.word()}-{rng.randint(1, 9999)}.html"
                parts.append(f'<a href="{target}" class="link" title="{self.words_(2)}">'
                             f"{self.words_(rng.randint(1, 4))}</a> {self.sentence()}")
            elif kind < 0.3:
                parts.append(f"<strong>{self.words_(2)}</strong> {self.sentence()}")
            elif kind < 0.35:
                call = f"{self.name()}_{self.word()}({rng.randint(0, 99)})"
                parts.append(f"<code>{call}</code> {self.sentence()}")
            else:
                parts.append(self.sentence())
        return f'      <p class="card__text">{" ".join(parts)}</p>\n'

    def extra(self) -> str:
        """Now and then a list, a table or a figure under an article's paragraphs."""
        rng, kind = self.rng, self.rng.random()
        if kind < 0.3:
            items = "".join(f'        <li class="card__item">{self.sentence()}</li>\n'
                            for _ in range(rng.randint(2, 5)))
            return f'      <ul class="card__list">\n{items}      </ul>\n'
        if kind < 0.45:
            rows = "".join(f'        <tr><td class="num">{rng.randint(0, 99999)}</td><td class="num">'
                           f'{rng.random() * 100:.1f}%</td><td>{self.words_(2)}</td></tr>\n'
                           for _ in range(rng.randint(3, 7)))
            return ('      <table class="data">\n        <tr><th>count</th><th>share</th><th>note</th></tr>\n'
                    f'{rows}      </table>\n')
        if kind < 0.6:
            image = f"/img/{self.name()}-{rng.randint(1, 999)}.webp"
            return (f'      <figure class="card__figure"><img src="{image}" '
                    f'alt="{self.words_(3)}" width="{rng.choice((320, 640, 800))}" '
                    f'height="{rng.choice((240, 480, 600))}" loading="lazy"><figcaption>{self.sentence()}'
                    '</figcaption></figure>\n')
        return ""

    def article(self) -> str:
        rng, author = self.rng, self.name()
        month, day = rng.randint(1, 12), rng.randint(1, 28)
        tags = "".join(f'<li class="tags__item"><a class="tag" href="/tags/{tag}">{tag}</a></li>'
                       for tag in (self.name() for _ in range(rng.randint(1, 4))))
        return (f'<article class="card card--{rng.choice(("news", "doc", "blog"))}" '
                f'id="post-{rng.randint(1000, 99999)}">\n  <div class="card__header">\n'
                f'    <h2 class="card__title"><a href="/posts/{self.word()}-{self.name()}">'
                f'{self.sentence()[:-1]}</a></h2>\n'
                f'    <div class="card__meta"><a class="card__author" href="/authors/{author}">'
                f'{author.title()}</a> <time class="card__date" datetime="2026-{month:02d}-{day:02d}">'
                f'{day} {MONTHS[month - 1]} 2026</time></div>\n  </div>\n  <div class="card__body">\n'
                + "".join(self.paragraph() for _ in range(rng.randint(1, 3))) + self.extra()
                + f'  </div>\n  <div class="card__footer">\n    <ul class="tags">{tags}</ul>\n'
                '    <button class="btn btn--share" type="button" aria-label="Share this post">'
                f'{ICON} Share</button>\n'
                f'    <a class="btn btn--more" href="/posts/{rng.randint(1000, 99999)}#comments">'
                f'{rng.randint(0, 250)} comments</a>\n  </div>\n</article>\n')


@cache
def page(size: int = SIZE, seed: int = SEED) -> bytes:
    """The page: exactly `size` bytes of HTML (ASCII), the same for the same seed."""
    writer = _Writer(seed)
    nav = "".join(f'  <li class="site-nav__item"><a class="site-nav__link" href="/{item}/">{item.title()}</a>'
                  "</li>\n" for item in (writer.name() for _ in range(14)))
    parts = ['<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>ring3 bench</title>\n'
             '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
             '<link rel="stylesheet" href="/assets/site.css">\n</head>\n<body class="page page--home">\n'
             '<header class="site-header">\n'
             '<nav class="site-nav" aria-label="Main"><ul class="site-nav__list">\n'
             f'{nav}</ul></nav>\n</header>\n<main class="content">\n']
    length = len(parts[0])
    while length < size - 3 * KIB:  # an article is under 3 KiB
        parts.append(writer.article())
        length += len(parts[-1])
    start, end = '</main>\n<footer class="site-footer"><p>', "</p></footer>\n</body>\n</html>\n"
    room = size - length - len(start) - len(end)
    footer = ""
    while len(footer) < room:
        footer += writer.sentence() + " "
    data = "".join(parts) + start + footer[:room] + end
    return data.encode("ascii")


def _gzip_9(data: bytes) -> bytes:
    """`gzip -9 -n` (no name, no time: the same bytes every run); zlib's level 9 without the command."""
    command = shutil.which("gzip")
    if command is None:
        return gzip.compress(data, 9, mtime=0)
    return subprocess.run([command, "-9", "-n", "-c"], input=data, capture_output=True, check=True,
                          timeout=60).stdout


def _brotli_11(data: bytes) -> bytes | None:
    try:
        import brotli
    except ImportError:
        return None
    return bytes(brotli.compress(data, quality=11))


def make_pages(root: Path) -> list[str]:
    """The page in the bench site, alone and (under pre/) with its .gz and .br beside it, no older than it
    (ring3 does not serve an older variant); what could not be made, for the log."""
    data = page()
    plain = root / PAGE
    pre = root / PRECOMPRESSED_PAGE
    pre.parent.mkdir(parents=True, exist_ok=True)
    pre.parent.chmod(0o755)
    for path in (plain, pre):
        path.write_bytes(data)
    variants = {".gz": _gzip_9(data), ".br": _brotli_11(data)}
    missing = []
    stamp = pre.stat().st_mtime_ns
    for suffix, body in variants.items():
        variant = pre.with_name(pre.name + suffix)
        if body is None:
            missing.append(f"{variant.name} (no brotli package in {sys.executable})")
            continue
        variant.write_bytes(body)
        os.utime(variant, ns=(stamp, stamp))
    for path in root.joinpath(PRECOMPRESSED_PAGE).parent.iterdir():
        path.chmod(0o644)
    plain.chmod(0o644)
    return missing


def decode(encoding: str, body: bytes) -> bytes | None:
    """The body decoded, or None where this Python cannot decode it (no brotli or zstandard package)."""
    if encoding == "gzip":
        return zlib.decompress(body, wbits=31)
    try:
        if encoding == "br":
            import brotli
            return bytes(brotli.decompress(body))
        if encoding == "zstd":
            import zstandard
            return bytes(zstandard.ZstdDecompressor().decompress(body))
    except ImportError:
        return None
    raise ValueError(f"unknown content-encoding {encoding!r}")


def fetch(server: Server, scenario: Scenario) -> tuple[int, str, bytes]:
    """One GET of the scenario's page with its Accept-Encoding: status, Content-Encoding ("" if none), the
    body (de-chunked, not decoded)."""
    launch = server.launch
    if launch.tls is None:
        conn = http.client.HTTPConnection(HOST, launch.port, timeout=10)
    else:
        context = tls.client_context(launch.tls)
        conn = http.client.HTTPSConnection(HOST, launch.port, timeout=10, context=context)
    headers = {"Accept-Encoding": scenario.accept_encoding}
    if server.spec.host:
        headers["Host"] = server.spec.host
    try:
        conn.request("GET", server.url(scenario.file)[len(server.origin):], headers=headers)
        response = conn.getresponse()
        body = response.read()
        return response.status, response.getheader("content-encoding", ""), body
    finally:
        conn.close()


def _checked(server: Server, scenario: Scenario) -> tuple[str, bytes] | None:
    """The page's encoding and body if it came compressed (and decodes to the page), None if plain."""
    status, encoding, body = fetch(server, scenario)
    if status != 200:
        raise RuntimeError(f"{server.spec.name}: {scenario.file} answered {status}")
    if not encoding:
        return None
    decoded = decode(encoding, body)
    if decoded is not None and decoded != page():
        raise RuntimeError(f"{server.spec.name}: its {encoding} answer does not decode to the page")
    return encoding, body


def await_encoded(server: Server, scenario: Scenario) -> Record:
    """Until the page comes compressed (RuntimeError past ENCODED_TIMEOUT): its encoding, its body's size,
    and how long (and how much server CPU) it took from the first ask: ring3's one-time compression. An
    app scenario's answer is compressed as it streams: a plain first answer is a RuntimeError at once."""
    started, cpu_before = time.monotonic(), cpu_seconds(server.pid)
    asked = 0
    while True:
        asked += 1
        found = _checked(server, scenario)
        if found is not None:
            break
        if scenario.kind != STATIC:
            raise RuntimeError(f"{server.spec.name}: the app's answer came without content-encoding (its "
                               "compression streams: every answer, the first too, should carry one)")
        if time.monotonic() - started > ENCODED_TIMEOUT:
            raise RuntimeError(f"{server.spec.name}: {scenario.file} still answered without content-encoding "
                               f"after {ENCODED_TIMEOUT:.0f} s ({asked} requests)")
        time.sleep(POLL_S)
    encoding, body = found
    return {"encoding": encoding, "body_bytes": len(body), "plain_bytes": SIZE, "asked": asked,
            "waited_s": round(time.monotonic() - started, 3),
            "cpu_ms_until_encoded": round((cpu_seconds(server.pid) - cpu_before) * 1000, 1)}


def add_encoding(record: Record, before: Record, server: Server, scenario: Scenario) -> None:
    """The encoding check's figures into the server's record (body_bytes for the goals), then the checks
    after the rate runs: the same encoding and size still, wrk's bytes per request near the body."""
    found = dict(before)
    try:
        after = _checked(server, scenario)
    except (RuntimeError, OSError, ValueError, zlib.error) as exc:
        after, found["after_error"] = None, str(exc)
    found["after"] = None if after is None else {"encoding": after[0], "body_bytes": len(after[1])}
    wire = record.get("bytes_per_request") or {}
    found["wire_bytes_per_request"] = wire.get("median")
    limit = (before["body_bytes"] + HEADER_ALLOWANCE) * WIRE_SLACK
    found["compressed_throughout"] = (after is not None and after[0] == before["encoding"]
                                      and bool(wire) and wire["max"] <= limit)
    record["encoding"] = found
    record["body_bytes"] = before["body_bytes"]
    if found["compressed_throughout"] or record.get("error"):
        return
    if after is None:
        why = found.get("after_error", "plain")
        record["error"] = f"after the rate runs the page came without content-encoding ({why})"
    elif after[0] != before["encoding"]:
        record["error"] = f"after the rate runs the page came as {after[0]}, before as {before['encoding']}"
    else:
        record["error"] = (f"rate runs: up to {wire.get('max', 0):,.0f} bytes per request on the wire for a "
                           f"{before['body_bytes']:,}-byte {before['encoding']} body: some answers went out "
                           "plain")


def _row(scenario: Record, name: str, record: Record, ring3: Record) -> str:
    found = record.get("encoding")
    if found is None:
        reason = " ".join(str(record.get("error")).split())[:100].replace("|", "/")
        return f"| {scenario['title']} | {name} | failed: {reason} |" + " |" * 7
    cpu = (record.get("cpu_us_per_request") or {}).get("median")
    ring3_cpu = (ring3.get("cpu_us_per_request") or {}).get("median")
    ring3_bytes = (ring3.get("encoding") or {}).get("body_bytes")
    bytes_ratio = cpu_ratio = ""
    if name != "ring3" and ring3_bytes:
        bytes_ratio = f"{ring3_bytes / found['body_bytes']:.2f}"
    if name != "ring3" and ring3_cpu and cpu:
        cpu_ratio = f"{ring3_cpu / cpu:.3f}"
    wire = found.get("wire_bytes_per_request")
    encoding = found["encoding"] + ("" if found.get("compressed_throughout") else " (**not throughout**)")
    cells = [scenario["title"], name, encoding, f"{found['body_bytes']:,}",
             "n/a" if wire is None else f"{wire:,.0f}", f"{found['body_bytes'] / found['plain_bytes']:.1%}",
             "n/a" if cpu is None else f"{cpu:.1f}", bytes_ratio, cpu_ratio,
             f"{found['waited_s']:.2f} s, {found['cpu_ms_until_encoded']:.0f} ms CPU"]
    return "| " + " | ".join(cells) + " |"


def compression_table(report: Record) -> list[str]:
    """Per compress scenario and server: the encoding, the bytes per response, and ring3 against each."""
    lines: list[str] = []
    for scenario in report["scenarios"]:
        results = scenario["results"]
        if not any("encoding" in record for record in results.values()):
            continue
        if not lines:
            lines = ["| scenario | server | encoding | body bytes/response | wire bytes/req (wrk) | of the "
                     "page | CPU µs/req | ring3/it bytes | ring3/it CPU | until compressed |",
                     "|" + "---|" * 10]
        ring3 = results.get("ring3", {})
        lines += [_row(scenario, name, record, ring3) for name, record in results.items()]
    return [*lines, "", NOTE] if lines else []


NOTE = ("Compression: every request carries `Accept-Encoding: gzip, br`. Body bytes/response: the "
        "compressed body of one answer to the harness's own client (de-chunked: nginx's `gzip on` answers "
        "chunked), checked to decode to the page; wire bytes/req: wrk's bytes read over its responses "
        "during the rate runs, headers included (a row that says not throughout sent some answers plain, "
        "or changed its encoding, during the runs). Until compressed: from the first ask with "
        "Accept-Encoding until the answer came compressed, and the server's CPU meanwhile (ring3 compresses "
        "the page once, br, zstd and gzip, in a worker thread; nginx compresses every answer, and so does "
        "ring3 with --app-compress the ASGI app's, as it streams: br 5, from the first answer).")
