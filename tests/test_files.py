"""Files: path decoding, resolution under a root, validators, preconditions, ranges, types, dates."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ring3 import dates
from ring3.dates import DateCache, clf_time, http_date, parse_http_date
from ring3.events import Request
from ring3.files.conditional import (
    Unsatisfiable,
    Validators,
    if_range_allows,
    parse_ranges,
    precondition_status,
)
from ring3.files.mime import content_type
from ring3.files.resolve import (
    DecodedPath,
    FileResolver,
    IsDirectory,
    OpenedFile,
    PathRefused,
    decode_path,
)

PROPERTY = settings(max_examples=200, deadline=None, database=None)

# -- decode_path ------------------------------------------------------------------------------------


def refused(raw: bytes, *, dotfiles: bool = False) -> int:
    """The status decode_path refuses `raw` with (fails if it accepts it)."""
    with pytest.raises(PathRefused) as info:
        decode_path(raw, dotfiles=dotfiles)
    return info.value.status


@pytest.mark.parametrize(
    ("raw", "segments", "trailing"),
    [
        (b"/", (), True),
        (b"/a/b.txt", ("a", "b.txt"), False),
        (b"/a/b/", ("a", "b"), True),
        (b"//a///b", ("a", "b"), False),
        (b"/./a/./b/.", ("a", "b"), False),
        (b"/a/../b", ("b",), False),
        (b"/a/b/../..", (), False),
        (b"/a%20b", ("a b",), False),
        (b"/caf%C3%A9", ("caf\u00e9",), False),
        (b"/%252e%252e/x", ("%2e%2e", "x"), False),  # decoded once: a literal segment, not `..`
        (b"/a/%2e%2e/b", ("b",), False),  # `%2e%2e` is `..` after decoding, and is resolved
        (b"/a/.%2E/b", ("b",), False),
    ],
)
def test_decode_path_accepts(raw: bytes, segments: tuple[str, ...], trailing: bool) -> None:
    assert decode_path(raw, dotfiles=False) == DecodedPath(segments, trailing)


@pytest.mark.parametrize("raw", [b"/..", b"/../etc/passwd", b"/a/../..", b"/a/../../b", b"/%2e%2e/",
                                 b"/%2E%2E", b"/.%2e/x", b"/a/%2e%2e/%2e%2e/b"])
def test_decode_path_never_climbs_above_the_root(raw: bytes) -> None:
    assert refused(raw) == 400
    assert refused(raw, dotfiles=True) == 400


@pytest.mark.parametrize("raw", [b"/a%2fb", b"/a%2Fb", b"/a%5cb", b"/a%5Cb", b"/a%00b", b"/a\\b",
                                 b"/a\x00b", b"/..%2f..%2fetc", b"/%c0%ae%c0%ae/", b"/%c0%af",
                                 b"/%ff", b"/%e0%80%ae"])
def test_decode_path_refuses_separators_nul_and_bad_utf8(raw: bytes) -> None:
    assert refused(raw) == 400


@pytest.mark.parametrize("raw", [b"/.env", b"/a/.git/config", b"/a/.well-known/x", b"/.well-known/.git",
                                 b"/%2egit", b"/.well-known-not/x"])
def test_dotfiles_are_403_unless_allowed(raw: bytes) -> None:
    assert refused(raw) == 403
    segments = decode_path(raw, dotfiles=True).segments
    assert any(s.startswith(".") for s in segments)


def test_well_known_at_the_top_is_served_without_dotfiles() -> None:
    # RFC 8615; certbot --webroot writes /.well-known/acme-challenge/TOKEN.
    assert decode_path(b"/.well-known/acme-challenge/t0k", dotfiles=False).segments == (
        ".well-known", "acme-challenge", "t0k")
    assert decode_path(b"/x/../.well-known/a", dotfiles=False).segments == (".well-known", "a")


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        (b"//evil.example/", "/evil.example/"),
        (b"////x", "/x"),
        (b"/a b/", "/a%20b/"),
        (b"/%252e%252e", "/%252e%252e"),
        (b"/q%3Fx%23y", "/q%3Fx%23y"),
        (b"/", "/"),
        (b"", "/"),
    ],
)
def test_url_path(raw: bytes, url: str) -> None:
    assert decode_path(raw, dotfiles=False).url_path() == url


@PROPERTY
@given(raw=st.one_of(
    st.binary(max_size=60),
    st.lists(st.sampled_from([b"/", b"//", b".", b"..", b"%2e", b"%2E", b"%25", b"a", b"%20",
                              b"%c3%a9", b"?", b"%3f", b"\xc3\xa9", b"~"]), max_size=15).map(b"".join),
))
def test_decode_path_properties(raw: bytes) -> None:
    try:
        decoded = decode_path(raw, dotfiles=True)
    except PathRefused as exc:
        assert exc.status in (400, 403)
        return
    for segment in decoded.segments:
        assert segment not in ("", ".", "..")
        assert "/" not in segment and "\\" not in segment and "\0" not in segment
    url = decoded.url_path()
    assert url.startswith("/") and not url.startswith("//")
    # the canonical URL decodes back to the same segments
    again = decode_path(url.encode("ascii"), dotfiles=True)
    assert again.segments == decoded.segments
    if decoded.segments:
        assert again.trailing_slash == decoded.trailing_slash


# -- FileResolver -----------------------------------------------------------------------------------


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    before = open_fds()
    yield
    assert open_fds() <= before, "file descriptors leaked"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with files, directories, symlinks and a FIFO; outside/ next to it."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("outside secret\n")
    (root / "index.html").write_text("root index\n")
    (root / "file.txt").write_text("file content\n")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_text("docs index\n")
    (root / "docs" / "page.html").write_text("page\n")
    (root / "noindex").mkdir()
    (root / "noindex" / "other.txt").write_text("x\n")
    (root / "a b").mkdir()
    (root / "evil.example").mkdir()
    (root / "link.txt").symlink_to("file.txt")
    (root / "docs-link").symlink_to("docs")
    (root / "to-outside").symlink_to(outside)
    (root / "outside-file.txt").symlink_to(outside / "secret.txt")
    (root / "to-etc").symlink_to("/etc")
    (root / "self-loop").symlink_to("self-loop")
    (root / "ping").symlink_to("pong")
    (root / "pong").symlink_to("ping")
    (root / "cycle").mkdir()
    (root / "cycle" / "up").symlink_to("..")
    os.mkfifo(root / "fifo")
    return root


def resolver(root: Path, *, follow: bool = False,
             index: tuple[str, ...] = ("index.html",)) -> FileResolver:
    return FileResolver(str(root), index=index, follow_symlinks_outside=follow)


def read_opened(found: OpenedFile | IsDirectory) -> tuple[str, bytes]:
    """(name, content) of an opened file; closes its fd."""
    assert isinstance(found, OpenedFile), found
    try:
        return found.name, os.pread(found.fd, 1 << 16, 0)
    finally:
        os.close(found.fd)


def resolve(root: Path, raw: bytes, **kwargs: bool) -> OpenedFile | IsDirectory:
    return resolver(root, **kwargs).open(decode_path(raw, dotfiles=False))


def resolve_status(root: Path, raw: bytes, **kwargs: bool) -> int:
    """The status a path is refused with; closes any fd if it was (wrongly) opened."""
    try:
        found = resolve(root, raw, **kwargs)
    except PathRefused as exc:
        return exc.status
    if isinstance(found, OpenedFile):
        os.close(found.fd)
    raise AssertionError(f"{raw!r} was served: {found!r}")


@pytest.mark.usefixtures("no_fd_leak")
class TestResolver:
    def test_regular_file(self, tree: Path) -> None:
        found = resolve(tree, b"/file.txt")
        assert isinstance(found, OpenedFile)
        assert found.stat.st_size == len("file content\n")
        assert read_opened(found) == ("file.txt", b"file content\n")

    def test_directory_without_slash_redirects(self, tree: Path) -> None:
        assert resolve(tree, b"/docs") == IsDirectory("/docs/")
        assert resolve(tree, b"/a%20b") == IsDirectory("/a%20b/")

    def test_redirect_location_is_never_protocol_relative(self, tree: Path) -> None:
        found = resolve(tree, b"//evil.example")
        assert isinstance(found, IsDirectory)
        assert found.location == "/evil.example/"

    def test_directory_with_slash_serves_its_index(self, tree: Path) -> None:
        assert read_opened(resolve(tree, b"/docs/")) == ("index.html", b"docs index\n")
        assert read_opened(resolve(tree, b"/")) == ("index.html", b"root index\n")

    def test_index_names_are_tried_in_order(self, tree: Path) -> None:
        (tree / "docs" / "index.htm").write_text("htm\n")
        (tree / "docs" / "default.html").mkdir()  # a directory is not an index file
        found = resolve(tree, b"/docs/", index=("default.html", "index.htm", "index.html"))
        assert read_opened(found) == ("index.htm", b"htm\n")

    def test_directory_without_index_is_403(self, tree: Path) -> None:
        assert resolve_status(tree, b"/noindex/") == 403

    def test_missing_is_404(self, tree: Path) -> None:
        assert resolve_status(tree, b"/nope.txt") == 404
        assert resolve_status(tree, b"/nope/deeper") == 404

    def test_file_with_trailing_slash_is_404(self, tree: Path) -> None:
        assert resolve_status(tree, b"/file.txt/") == 404

    def test_symlinks_inside_the_root_are_served(self, tree: Path) -> None:
        assert read_opened(resolve(tree, b"/link.txt")) == ("link.txt", b"file content\n")
        assert read_opened(resolve(tree, b"/docs-link/page.html")) == ("page.html", b"page\n")
        assert read_opened(resolve(tree, b"/cycle/up/file.txt")) == ("file.txt", b"file content\n")

    @pytest.mark.parametrize("raw", [b"/to-outside/secret.txt", b"/outside-file.txt",
                                     b"/to-outside/", b"/to-etc/"])
    def test_symlinks_leading_outside_are_403(self, tree: Path, raw: bytes) -> None:
        assert resolve_status(tree, raw) == 403

    def test_symlinks_leading_outside_are_served_when_allowed(self, tree: Path) -> None:
        found = resolve(tree, b"/to-outside/secret.txt", follow=True)
        assert read_opened(found) == ("secret.txt", b"outside secret\n")
        found = resolve(tree, b"/outside-file.txt", follow=True)
        assert read_opened(found) == ("outside-file.txt", b"outside secret\n")

    def test_index_symlinked_outside_is_403(self, tree: Path) -> None:
        (tree / "noindex" / "index.html").symlink_to(tree.parent / "outside" / "secret.txt")
        assert resolve_status(tree, b"/noindex/") == 403

    @pytest.mark.parametrize("raw", [b"/self-loop", b"/self-loop/x", b"/ping", b"/ping/",
                                     b"/cycle" + b"/up/cycle" * 50 + b"/"])
    def test_symlink_loops_are_not_served(self, tree: Path, raw: bytes) -> None:
        assert resolve_status(tree, raw) in (403, 404)

    @pytest.mark.timeout(10)
    def test_fifo_is_403_without_hanging(self, tree: Path) -> None:
        assert resolve_status(tree, b"/fifo") == 403

    def test_root_given_through_a_symlink(self, tree: Path) -> None:
        alias = tree.parent / "alias"
        alias.symlink_to(tree)
        assert read_opened(resolve(alias, b"/file.txt")) == ("file.txt", b"file content\n")
        assert resolve_status(alias, b"/to-outside/secret.txt") == 403


# -- validators and preconditions -------------------------------------------------------------------

MTIME = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT
IMF = b"Sun, 06 Nov 1994 08:49:37 GMT"
RFC850 = b"Sunday, 06-Nov-94 08:49:37 GMT"
ASCTIME = b"Sun Nov  6 08:49:37 1994"
EARLIER = http_date(MTIME - 1)
LATER = http_date(MTIME + 1)
ETAG = b'"5d-1a"'
VALIDATORS = Validators(etag=ETAG, last_modified=IMF, mtime=MTIME)


def get(*headers: tuple[bytes, bytes], method: bytes = b"GET") -> Request:
    return Request(method=method, target=b"/f", path=b"/f", query=b"", http_version="1.1",
                   headers=[(b"host", b"x"), *headers], host=b"x", keep_alive=True)


def test_validators_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"12345")
    os.utime(path, ns=(MTIME * 10**9 + 5, MTIME * 10**9 + 123_456_789))
    v = Validators.of(os.stat(path))
    assert re.fullmatch(rb'"[0-9a-f]+-[0-9a-f]+"', v.etag), v.etag
    assert v.mtime == MTIME
    assert v.last_modified == IMF
    # the tag changes with the content's size and with a sub-second mtime change
    path.write_bytes(b"123456")
    os.utime(path, ns=(MTIME * 10**9, MTIME * 10**9 + 123_456_789))
    bigger = Validators.of(os.stat(path))
    os.utime(path, ns=(MTIME * 10**9, MTIME * 10**9 + 123_456_790))
    touched = Validators.of(os.stat(path))
    assert len({v.etag, bigger.etag, touched.etag}) == 3
    assert touched.mtime == bigger.mtime == MTIME


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (ETAG, None),
        (b"*", None),
        (b'"other"', 412),
        (b'"other", ' + ETAG, None),
        (b'"a","b"', 412),
        (b"W/" + ETAG, 412),  # If-Match uses the strong comparison
    ],
)
def test_if_match(value: bytes, status: int | None) -> None:
    assert precondition_status(get((b"if-match", value)), VALIDATORS) == status


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (ETAG, 304),
        (b"W/" + ETAG, 304),  # If-None-Match uses the weak comparison
        (b'"x", W/' + ETAG, 304),
        (b"*", 304),
        (b'"x"', None),
        (b'"x", "y"', None),
    ],
)
def test_if_none_match(value: bytes, status: int | None) -> None:
    assert precondition_status(get((b"if-none-match", value)), VALIDATORS) == status


@pytest.mark.parametrize(
    ("value", "status"),
    [(IMF, 304), (RFC850, 304), (ASCTIME, 304), (LATER, 304), (EARLIER, None), (b"junk", None)],
)
def test_if_modified_since(value: bytes, status: int | None) -> None:
    assert precondition_status(get((b"if-modified-since", value)), VALIDATORS) == status


@pytest.mark.parametrize(
    ("value", "status"),
    [(IMF, None), (RFC850, None), (ASCTIME, None), (LATER, None), (EARLIER, 412), (b"junk", None)],
)
def test_if_unmodified_since(value: bytes, status: int | None) -> None:
    assert precondition_status(get((b"if-unmodified-since", value)), VALIDATORS) == status


def test_if_match_takes_precedence_over_if_unmodified_since() -> None:
    request = get((b"if-match", ETAG), (b"if-unmodified-since", EARLIER))
    assert precondition_status(request, VALIDATORS) is None


def test_if_none_match_takes_precedence_over_if_modified_since() -> None:
    no_match = get((b"if-none-match", b'"x"'), (b"if-modified-since", LATER))
    assert precondition_status(no_match, VALIDATORS) is None
    match = get((b"if-none-match", ETAG), (b"if-modified-since", EARLIER))
    assert precondition_status(match, VALIDATORS) == 304


def test_failed_if_match_wins_over_if_none_match() -> None:
    request = get((b"if-match", b'"x"'), (b"if-none-match", ETAG))
    assert precondition_status(request, VALIDATORS) == 412


def test_no_preconditions() -> None:
    assert precondition_status(get(), VALIDATORS) is None


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        (None, True),
        (ETAG, True),
        (b'"other"', False),
        (b"W/" + ETAG, False),  # a weak tag never matches
        (IMF, True),
        (EARLIER, False),
        (LATER, False),
        (b"not a date", False),
    ],
)
def test_if_range(value: bytes | None, allowed: bool) -> None:
    headers = [] if value is None else [(b"if-range", value)]
    assert if_range_allows(get(*headers), VALIDATORS) is allowed


# -- parse_ranges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ranges"),
    [
        (b"bytes=0-0", [(0, 0)]),
        (b"bytes=0-99", [(0, 99)]),
        (b"bytes=10-", [(10, 99)]),
        (b"bytes=-10", [(90, 99)]),
        (b"bytes=-1000", [(0, 99)]),  # suffix longer than the file: the whole file
        (b"bytes=90-1000", [(90, 99)]),  # clipped to the end
        (b"bytes=0-9,20-29,-5", [(0, 9), (20, 29), (95, 99)]),
        (b"BYTES = 1 - 2 , 4-5", [(1, 2), (4, 5)]),
        (b"bytes=0-9,200-300", [(0, 9)]),  # the unsatisfiable part is dropped
    ],
)
def test_parse_ranges(value: bytes, ranges: list[tuple[int, int]]) -> None:
    assert parse_ranges(value, 100, 4) == ranges


@pytest.mark.parametrize(
    "value",
    [b"bytes=", b"bytes=-", b"bytes=abc", b"bytes=1-x", b"bytes=5-1", b"bytes=0-1-2",
     b"bytes=\xd9\xa1-2", b"bytes 0-1", b"0-1", b"items=0-1", b"bytes=+1-2"],
)
def test_parse_ranges_bad_syntax_or_unit_is_ignored(value: bytes) -> None:
    assert parse_ranges(value, 100, 4) is None


def test_parse_ranges_too_many() -> None:
    assert parse_ranges(b"bytes=0-0,2-2,4-4,6-6", 100, 4) == [(0, 0), (2, 2), (4, 4), (6, 6)]
    assert parse_ranges(b"bytes=0-0,2-2,4-4,6-6,8-8", 100, 4) is None


def test_parse_ranges_overlapping_more_than_the_file() -> None:
    assert parse_ranges(b"bytes=0-49,50-99", 100, 4) == [(0, 49), (50, 99)]
    assert parse_ranges(b"bytes=0-60,40-99", 100, 4) is None
    assert parse_ranges(b"bytes=0-,0-", 100, 4) is None


@pytest.mark.parametrize("value", [b"bytes=100-", b"bytes=100-200", b"bytes=500-",
                                   b"bytes=-0", b"bytes=100-100,200-"])
def test_parse_ranges_unsatisfiable(value: bytes) -> None:
    with pytest.raises(Unsatisfiable):
        parse_ranges(value, 100, 4)


@pytest.mark.parametrize("value", [b"bytes=0-0", b"bytes=0-", b"bytes=-5", b"bytes=0-10,-3"])
def test_parse_ranges_empty_file(value: bytes) -> None:
    # An empty file has no byte to send: either the whole (empty) file or 416, never a range.
    try:
        result = parse_ranges(value, 0, 4)
    except Unsatisfiable:
        return
    assert result is None


@PROPERTY
@given(
    specs=st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 300)),
                             st.one_of(st.none(), st.integers(0, 300))), min_size=1, max_size=5),
    size=st.integers(1, 200),  # size 0: see test_parse_ranges_empty_file
)
def test_parse_ranges_results_lie_inside_the_file(specs: list[tuple[int | None, int | None]],
                                                  size: int) -> None:
    value = b"bytes=" + b",".join(
        b"%s-%s" % (b"" if a is None else b"%d" % a, b"" if b is None else b"%d" % b)
        for a, b in specs)
    try:
        ranges = parse_ranges(value, size, 4)
    except Unsatisfiable:
        return
    if ranges is None:
        return
    assert ranges
    assert sum(last - first + 1 for first, last in ranges) <= size
    for first, last in ranges:
        assert 0 <= first <= last < size, (value, size, ranges)


# -- mime -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("index.html", b"text/html; charset=utf-8"),
        ("INDEX.HTM", b"text/html; charset=utf-8"),
        ("style.css", b"text/css; charset=utf-8"),
        ("app.js", b"text/javascript; charset=utf-8"),
        ("notes.txt", b"text/plain; charset=utf-8"),
        ("logo.png", b"image/png"),
        ("logo.PNG", b"image/png"),
        ("data.json", b"application/json"),
        ("font.woff2", b"font/woff2"),
        ("archive.tar.gz", b"application/gzip"),
        ("blob.ring3-unknown-extension", b"application/octet-stream"),
        ("README", b"application/octet-stream"),
        ("", b"application/octet-stream"),
    ],
)
def test_content_type(name: str, expected: bytes) -> None:
    assert content_type(name) == expected


def test_binary_types_have_no_charset() -> None:
    for name in ("a.png", "a.jpg", "a.gif", "a.webp", "a.woff", "a.wasm", "a.pdf", "a.zip"):
        assert b"charset" not in content_type(name), name


# -- dates ------------------------------------------------------------------------------------------


def test_http_date_format() -> None:
    assert http_date(MTIME) == IMF
    assert http_date(0) == b"Thu, 01 Jan 1970 00:00:00 GMT"


@pytest.mark.parametrize("value", [IMF, RFC850, ASCTIME])
def test_parse_http_date_three_formats(value: bytes) -> None:
    assert parse_http_date(value) == MTIME


@PROPERTY
@given(timestamp=st.integers(min_value=0, max_value=253402300799))  # up to 9999-12-31
def test_http_date_round_trip(timestamp: int) -> None:
    text = http_date(timestamp)
    assert re.fullmatch(rb"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", text), text
    assert parse_http_date(text) == timestamp


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"yesterday",
        b"\xff\xfe",
        b"Sun, 06 Nov 1994",
        b"Sun, 06 Foo 1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994 08:49:37 +0100",
        b"Sun, 06 Nov 1994 08:49:37 EST",
        b"Sun, 32 Nov 1994 08:49:37 GMT",  # no 32nd of November
        b"Sun, 06 Nov 1994 25:49:37 GMT",  # no 25th hour
        b"Sun, 06 Nov 1994 08:61:37 GMT",
    ],
)
def test_parse_http_date_invalid(value: bytes) -> None:
    assert parse_http_date(value) is None


def test_clf_time() -> None:
    assert clf_time(MTIME) == "06/Nov/1994:08:49:37 +0000"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(MTIME + 0.1)
    import time

    monkeypatch.setattr(dates, "time", SimpleNamespace(time=fake.time, gmtime=time.gmtime))
    return fake


def test_date_cache_same_second_same_bytes(clock: FakeClock) -> None:
    cache = DateCache("ring3")
    first = cache.common_headers()
    assert first == b"date: " + IMF + b"\r\nserver: ring3\r\n"
    clock.now = MTIME + 0.9
    assert cache.common_headers() is first
    assert cache.log_time() == "06/Nov/1994:08:49:37 +0000"


def test_date_cache_next_second_new_bytes(clock: FakeClock) -> None:
    cache = DateCache("ring3")
    first = cache.common_headers()
    clock.now = MTIME + 1.0
    second = cache.common_headers()
    assert second != first
    assert second == b"date: " + http_date(MTIME + 1) + b"\r\nserver: ring3\r\n"
    assert cache.log_time() == "06/Nov/1994:08:49:38 +0000"


def test_date_cache_without_server_header(clock: FakeClock) -> None:
    assert DateCache("").common_headers() == b"date: " + IMF + b"\r\n"
