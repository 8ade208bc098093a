"""Content negotiation of Accept-Encoding (RFC 9110 12.5.3): which of the encodings a file has the client
takes.

The highest q-value wins; among equal ones the server's preference (br, then zstd, then gzip), which is
also the order of compression ratio. `*` stands for every coding the field does not name; a coding with
q=0 is refused. The identity encoding needs no choosing: when nothing fits, the file goes as it is (even
with `identity;q=0`, which RFC 9110 lets a server ignore rather than answer 406). Browsers send a handful
of distinct values, so answers are remembered per (field value, available encodings), bounded.
"""

from __future__ import annotations

# Encoding name, the suffix of its precompressed file: in the server's order of preference.
ENCODINGS: tuple[tuple[str, str], ...] = (("br", ".br"), ("zstd", ".zst"), ("gzip", ".gz"))
SUFFIXES = dict(ENCODINGS)
MEMO_ENTRIES = 256  # (Accept-Encoding value, available encodings) answers remembered
MAX_FIELD = 512  # a longer Accept-Encoding is parsed each time and not remembered

_memo: dict[tuple[bytes, tuple[str, ...]], str | None] = {}


def parse_accept_encoding(value: bytes) -> dict[str, float]:
    """Coding -> q-value (lower case); a malformed q counts as 0 (refused), as a careful reading must."""
    weights: dict[str, float] = {}
    for item in value.split(b","):
        coding, _, params = item.partition(b";")
        name = coding.strip().lower().decode("latin-1")
        if not name:
            continue
        q = 1.0
        for param in params.split(b";"):
            key, eq, number = param.partition(b"=")
            if eq and key.strip().lower() == b"q":
                try:
                    q = float(number.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        if name == "x-gzip":
            name = "gzip"  # RFC 9110 8.4.1.3: the same coding
        weights[name] = max(q, weights.get(name, 0.0)) if name in weights else q
    return weights


def choose(value: bytes | None, available: tuple[str, ...]) -> str | None:
    """The encoding of `available` (in ENCODINGS' order) to send for this Accept-Encoding, or None for
    the file as it is."""
    if not value or not available:
        return None
    key = (value, available)
    if key in _memo:
        return _memo[key]
    weights = parse_accept_encoding(value)
    anything = weights.get("*", 0.0)
    best: str | None = None
    best_q = 0.0
    for name in available:
        q = weights.get(name, anything)
        if q > best_q:
            best, best_q = name, q
    if len(value) <= MAX_FIELD:
        if len(_memo) >= MEMO_ENTRIES:
            _memo.clear()
        _memo[key] = best
    return best
