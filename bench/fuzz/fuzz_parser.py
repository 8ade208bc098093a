#!/usr/bin/env python3
"""Fuzz ring3's sans-IO HTTP/1.1 parser (H1Parser) for as long as you like.

The invariant is the one tests/test_fuzz_parser.py checks in the suite (tests/hostile/invariants.py): only
the four event types come out, never an exception; (Request RequestData* RequestEnded)* then at most one
RequestRejected with a documented status; a rejected parser stays dead; body bytes never exceed the bytes
given nor max_body_size.

Two engines:

    python bench/fuzz/fuzz_parser.py --hours 2                       # atheris (libFuzzer), the default
    python bench/fuzz/fuzz_parser.py --engine hypothesis --hours 2   # no native build needed
    python bench/fuzz/fuzz_parser.py bench/fuzz/work/findings/finding-XXXX   # replay one input

An atheris input is: one flags byte (bit 0: the small limits; bits 1-4: how many cuts), one byte seeding
where the cuts fall, then the raw bytes sent to the parser. Arguments this script does not know are handed
to libFuzzer (-max_len=..., -seed=..., a corpus directory, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

WORK = HERE / "work"  # corpus and crash artifacts (ignored by git)


def decode(data: bytes) -> tuple[list[bytes], bool]:
    """An atheris input -> (the pieces to feed, whether to use the small limits)."""
    from hostile.invariants import cut

    if len(data) < 2:
        return [data], False
    flags, seed, raw = data[0], data[1], data[2:]
    rng = random.Random(seed * 65536 + len(raw))
    cuts = [rng.randrange(len(raw) + 1) for _ in range((flags >> 1) & 0x0F)]
    return cut(raw, cuts), bool(flags & 1)


def encode(raw: bytes, *, small: bool = False, cuts: int = 3, seed: int = 0) -> bytes:
    return bytes([(cuts & 0x0F) << 1 | small, seed & 0xFF]) + raw


def seed_inputs() -> list[bytes]:
    """Valid requests and the whole hostile corpus, each whole and in pieces, with both limits."""
    from hostile.corpus import CORPUS
    from hostile.invariants import SEEDS

    raws = list(SEEDS) + [row.raw for row in CORPUS]
    return [encode(raw, small=small, cuts=cuts, seed=n)
            for n, raw in enumerate(raws) for small in (False, True) for cuts in (0, 5)]


def one_input(data: bytes) -> None:
    from hostile.invariants import DEFAULT_LIMITS, SMALL_LIMITS, check_feed

    pieces, small = decode(data)
    check_feed(pieces, SMALL_LIMITS if small else DEFAULT_LIMITS)


SEEN: set[str] = set()


def signature(message: str) -> str:
    """What kind of broken invariant a message describes, without the input bytes and numbers."""
    text = re.sub(r"b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\"", "#", message)
    return re.sub(r"\d+", "#", text).split("): ", 1)[-1][:160]


def keep_going_input(data: bytes) -> None:
    """one_input, but a broken invariant is written to work/findings/ (once per kind) instead of stopping
    the run: libFuzzer's -fork mode, which would do that, does not work under atheris."""
    from hostile.invariants import InvariantBroken

    try:
        one_input(data)
    except InvariantBroken as exc:
        kind = signature(str(exc))
        if kind not in SEEN:
            SEEN.add(kind)
            findings = WORK / "findings"
            findings.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha1(data).hexdigest()[:16]
            (findings / f"finding-{name}").write_bytes(data)
            (findings / f"finding-{name}.txt").write_text(f"{kind}\n\n{exc}\n")
            print(f"\n=== finding {len(SEEN)}: {kind}\n    input: work/findings/finding-{name}\n", flush=True)


def structured_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Half the time libFuzzer's own byte mutation; otherwise HTTP-aware ones (insert CRLF, a
    Transfer-Encoding line, an overflowing chunk size, swap header lines, ...) from
    tests/hostile/invariants.py."""
    import atheris

    from hostile.invariants import MUTATIONS, SEEDS, TOKENS, mutate

    rng = random.Random(seed)
    if len(data) < 2:
        data = encode(rng.choice(SEEDS), cuts=rng.randrange(16), seed=rng.randrange(256))
    if rng.random() < 0.5:
        return bytes(atheris.Mutate(data, max_size))
    head, raw = data[:2], data[2:]
    if rng.random() < 0.1:
        head = bytes([rng.randrange(32), rng.randrange(256)])
    for _ in range(rng.randrange(1, 4)):
        raw = mutate(raw, rng.randrange(MUTATIONS), rng.randrange(1 << 16), rng.randrange(256),
                     rng.choice(TOKENS))
    return (head + raw)[:max_size]


def run_atheris(seconds: float, extra: list[str], keep_going: bool) -> int:
    import atheris

    # Coverage comes from the Python side only (ring3's parser wrapper and the checker); llhttp itself is
    # C code that atheris does not see, so the structured mutator does much of the work.
    with atheris.instrument_imports(include=["ring3.http1", "hostile"]):
        import hostile.invariants  # noqa: F401
        import ring3.http1.parser  # noqa: F401

    corpus = WORK / "corpus"
    crashes = WORK / "crashes"
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    replaying = any(Path(arg).is_file() for arg in extra)
    if not replaying:
        for number, seed in enumerate(seed_inputs()):
            (corpus / f"seed-{number:04d}").write_bytes(seed)
    argv = [sys.argv[0], *extra]
    if not replaying:
        argv += [f"-max_total_time={max(1, int(seconds))}", f"-dict={HERE / 'http.dict'}",
                 f"-artifact_prefix={crashes}/", "-max_len=4096", "-print_final_stats=1", str(corpus)]
    atheris.Setup(argv, keep_going_input if keep_going else one_input, custom_mutator=structured_mutator)
    atheris.Fuzz()
    return 0


def run_hypothesis(seconds: float) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from hostile.corpus import CORPUS
    from hostile.invariants import (
        DEFAULT_LIMITS,
        MUTATIONS,
        SEEDS,
        SMALL_LIMITS,
        TOKENS,
        check_feed,
        cut,
        mutate,
    )

    seeds = SEEDS + tuple(row.raw for row in CORPUS)
    mutation = st.tuples(st.integers(0, MUTATIONS - 1), st.integers(0, 1 << 16), st.integers(0, 255),
                         st.sampled_from(TOKENS))

    @st.composite
    def inputs(draw: st.DrawFn) -> bytes:
        if draw(st.booleans()):
            return draw(st.binary(max_size=2048))
        data = draw(st.sampled_from(seeds))
        for op, position, amount, token in draw(st.lists(mutation, max_size=12)):
            data = mutate(data, op, position, amount, token)
        return data

    @settings(max_examples=20_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=inputs(), cuts=st.lists(st.integers(0, 1 << 16), max_size=16), small=st.booleans())
    def prop(data: bytes, cuts: list[int], small: bool) -> None:
        check_feed(cut(data, cuts), SMALL_LIMITS if small else DEFAULT_LIMITS)

    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        prop()  # raises, with a shrunk example, on the first broken invariant
        rounds += 1
        print(f"hypothesis: {rounds * 20_000} examples, no invariant broken", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=("atheris", "hypothesis"), default="atheris")
    parser.add_argument("--keep-going", action="store_true",
                        help="atheris: record each kind of broken invariant in work/findings/ and go on")
    duration = parser.add_mutually_exclusive_group()
    duration.add_argument("--hours", type=float)
    duration.add_argument("--minutes", type=float)
    duration.add_argument("--seconds", type=float)
    args, extra = parser.parse_known_args()
    seconds = (args.hours or 0) * 3600 + (args.minutes or 0) * 60 + (args.seconds or 0) or 600.0
    if args.engine == "hypothesis":
        return run_hypothesis(seconds)
    return run_atheris(seconds, extra, args.keep_going)


if __name__ == "__main__":
    sys.exit(main())
