"""Directory listings: what is shown and hidden, order, filter, pages, escaping and links, JSON, the
bound on entries read, and the cache (kept while the directory is unchanged, renewed when it changes)."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from ring3.events import Request, Response
from ring3.files.listing import (
    DEFAULT_PAGE_SIZE,
    MAX_ENTRIES,
    STALE_AFTER_RECHECKS,
    DirectoryListing,
    format_size,
    parse_query,
    prefers_json,
)
from ring3.files.resolve import PathRefused
from ring3.observe.ledger import LEDGER

SCRIPT_NAME = "<script>alert(1)<script>.txt"  # a name cannot hold '/', so "</script>" is out of reach
ODD_NAMES = ["my file.txt", "caf\u00e9 \u2615.txt", "a#b.txt", "what?.txt", "100%.txt", "a:b.txt",
             "x&y=z.txt", "quote\"'.txt", SCRIPT_NAME]
DAY = 86_400 * 1_000_000_000
# (name, size, days since the epoch for the mtime): sizes and times both distinct and in different orders
FILES = [("small.txt", 10, 300), ("medium.bin", 1536, 100), ("large.bin", 3 * 1024 * 1024, 200),
         ("Apple.txt", 1, 50), ("apple.txt", 2, 60)]
DIRECTORIES = [("docs", 400), ("Zeta dir", 10)]


def request(query: bytes = b"", accept: bytes | None = None, path: bytes = b"/files/") -> Request:
    headers = [(b"host", b"x")] + ([(b"accept", accept)] if accept is not None else [])
    return Request(b"GET", path + (b"?" + query if query else b""), path, query, "1.1", headers, b"x", True)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A root with files of several sizes and times, directories, odd names and things to hide."""
    root = tmp_path / "root"
    root.mkdir()
    for name, size, days in FILES:
        path = root / name
        path.write_bytes(b"x" * size)
        os.utime(path, ns=(days * DAY, days * DAY))
    for name, days in DIRECTORIES:
        (root / name).mkdir()
        os.utime(root / name, ns=(days * DAY, days * DAY))
    for index, name in enumerate(ODD_NAMES):
        path = root / name
        path.write_bytes(b"o" * (20 + index))
        os.utime(path, ns=(1000 * DAY, 1000 * DAY))
    (root / ".hidden").write_bytes(b"secret")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside")
    (root / "inside-link").symlink_to("small.txt")
    (root / "docs-link").symlink_to("docs")
    (root / "outside-link").symlink_to(outside)
    (root / "broken-link").symlink_to("nowhere")
    os.mkfifo(root / "pipe")
    return root


def listing_of(root: Path, **options: Any) -> DirectoryListing:
    settings: dict[str, Any] = {"dotfiles": False, "follow_symlinks_outside": False, "recheck": 60.0}
    settings.update(options)
    return DirectoryListing(root=str(root), **settings)


def as_json(response: Response) -> dict[str, Any]:
    assert isinstance(response.body, bytes)
    document: dict[str, Any] = json.loads(response.body)
    return document


def names(response: Response) -> list[str]:
    return [entry["name"] for entry in as_json(response)["entries"]]


def get_json(listing: DirectoryListing, root: Path, query: bytes = b"") -> Response:
    return listing(str(root), b"/files/", request(query, b"application/json"))


def get_html(listing: DirectoryListing, root: Path, query: bytes = b"", path: bytes = b"/files/") -> str:
    response = listing(str(root), path, request(query, path=path))
    assert isinstance(response.body, bytes)
    return response.body.decode("utf-8")


class Links(HTMLParser):
    """The links of a listing page: entry links (in name cells), sort links and page links."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[tuple[str, str]] = []  # (href, text)
        self.others: dict[str, str] = {}  # text -> href, for headers and page links
        self.title = ""
        self._cell_class: str | None = None
        self._href: str | None = None
        self._text = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "td":
            self._cell_class = found.get("class")
        elif tag == "a":
            self._href, self._text = found.get("href"), ""
        elif tag == "title":
            self._in_title = True

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text += data
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            if self._cell_class == "name":
                self.entries.append((self._href, self._text))
            else:
                self.others[self._text] = self._href
            self._href = None
        elif tag == "td":
            self._cell_class = None
        elif tag == "title":
            self._in_title = False


def links_of(page: str) -> Links:
    parser = Links()
    parser.feed(page)
    return parser


# -- what is shown, and in which order ---------------------------------------------------------------


def test_default_order_is_directories_first_then_names_case_insensitively(tree: Path) -> None:
    listed = names(get_json(listing_of(tree), tree))
    directories = ["docs", "docs-link", "Zeta dir"]
    files = sorted([name for name, _, _ in FILES] + ODD_NAMES + ["inside-link"],
                   key=lambda name: (name.casefold(), name))
    assert listed == directories + files
    assert listed.index("Apple.txt") + 1 == listed.index("apple.txt")  # the tie goes by case


def test_name_descending_keeps_directories_first(tree: Path) -> None:
    listed = names(get_json(listing_of(tree), tree, b"sort=name&order=desc"))
    assert listed[:3] == ["Zeta dir", "docs-link", "docs"]
    assert listed[3:] == sorted(listed[3:], key=lambda name: (name.casefold(), name), reverse=True)


def test_size_sort_both_ways(tree: Path) -> None:
    listing = listing_of(tree)
    ascending = as_json(get_json(listing, tree, b"sort=size"))["entries"]
    descending = as_json(get_json(listing, tree, b"sort=size&order=desc"))["entries"]
    for entries, reverse in ((ascending, False), (descending, True)):
        assert [entry["is_dir"] for entry in entries[:3]] == [True] * 3
        assert not any(entry["is_dir"] for entry in entries[3:])
        sizes = [entry["size"] for entry in entries[3:]]
        assert sizes == sorted(sizes, reverse=reverse)
    assert ascending[3]["name"] == "Apple.txt" and ascending[-1]["name"] == "large.bin"
    assert descending[3]["name"] == "large.bin" and descending[-1]["name"] == "Apple.txt"


def test_time_sort_both_ways(tree: Path) -> None:
    listing = listing_of(tree)
    ascending = names(get_json(listing, tree, b"sort=time"))
    descending = names(get_json(listing, tree, b"sort=time&order=desc"))
    assert ascending[:2] == ["Zeta dir", "docs"]  # day 10, then day 400 (docs-link: the same time)
    # inside-link has its target's time: the tie with small.txt goes by name, both ways
    assert ascending[3:9] == ["Apple.txt", "apple.txt", "medium.bin", "large.bin", "inside-link", "small.txt"]
    assert descending[:3] == ["docs", "docs-link", "Zeta dir"]
    assert descending[-6:] == ["inside-link", "small.txt", "large.bin", "medium.bin", "apple.txt",
                               "Apple.txt"]


@pytest.mark.parametrize("query", [b"sort=bogus&order=sideways&page=x", b"sort=&page=-3&page=0",
                                   b"sort=NAME&order=DESC", b"page=99999999999999999999", b"&&=&"])
def test_unknown_values_fall_back_to_the_defaults(tree: Path, query: bytes) -> None:
    listing = listing_of(tree)
    response = get_json(listing, tree, query)
    assert response.status == 200
    assert names(response) == names(get_json(listing, tree))


def test_hidden_entries_are_absent(tree: Path) -> None:
    listed = names(get_json(listing_of(tree), tree))
    for hidden in (".hidden", "outside-link", "broken-link", "pipe"):
        assert hidden not in listed
    assert "inside-link" in listed


def test_dotfiles_and_links_outside_are_listed_when_allowed(tree: Path) -> None:
    listed = names(get_json(listing_of(tree, dotfiles=True, follow_symlinks_outside=True), tree))
    assert ".hidden" in listed and "outside-link" in listed
    assert "broken-link" not in listed and "pipe" not in listed


def test_a_symlink_is_described_by_its_target(tree: Path) -> None:
    entries = {entry["name"]: entry for entry in as_json(get_json(listing_of(tree), tree))["entries"]}
    assert entries["docs-link"]["is_dir"] and entries["docs-link"]["url"] == "docs-link/"
    assert entries["inside-link"]["size"] == 10 and not entries["inside-link"]["is_dir"]


def test_filter_is_a_case_insensitive_substring(tree: Path) -> None:
    listing = listing_of(tree)
    assert names(get_json(listing, tree, b"filter=APPLE")) == ["Apple.txt", "apple.txt"]
    assert names(get_json(listing, tree, b"filter=CAF%C3%89")) == ["caf\u00e9 \u2615.txt"]
    assert names(get_json(listing, tree, b"filter=my+file")) == ["my file.txt"]
    assert as_json(get_json(listing, tree, b"filter=nothing-like-this"))["total"] == 0
    page = get_html(listing, tree, b"filter=nothing-like-this")
    assert "Nothing matches" in page and 'value="nothing-like-this"' in page


# -- pages -------------------------------------------------------------------------------------------


def test_pages_count_and_links_keep_sort_order_and_filter(tree: Path) -> None:
    listing = listing_of(tree, page_size=3)
    first = as_json(get_json(listing, tree, b"filter=.txt&sort=size&order=desc"))
    total = first["total"]
    assert total == len(ODD_NAMES) + 3  # small, Apple, apple
    assert first["pages"] == -(-total // 3) and first["page"] == 1 and len(first["entries"]) == 3
    seen = []
    for number in range(1, first["pages"] + 1):
        query = f"filter=.txt&sort=size&order=desc&page={number}".encode()
        document = as_json(get_json(listing, tree, query))
        assert document["page"] == number
        seen += [entry["name"] for entry in document["entries"]]
    assert len(seen) == total == len(set(seen))
    assert seen == names(get_json(listing_of(tree), tree, b"filter=.txt&sort=size&order=desc"))

    links = links_of(get_html(listing, tree, b"filter=.txt&sort=size&order=desc&page=2")).others
    assert links["\u2039 Previous"] == "?sort=size&order=desc&filter=.txt"
    assert links["Next \u203a"] == "?sort=size&order=desc&page=3&filter=.txt"
    last = get_html(listing, tree, f"filter=.txt&sort=size&order=desc&page={first['pages']}".encode())
    assert "Next \u203a" not in links_of(last).others and f"of {first['pages']}" in last


def test_a_page_past_the_end_is_the_last_page(tree: Path) -> None:
    listing = listing_of(tree, page_size=4)
    document = as_json(get_json(listing, tree, b"page=500"))
    assert document["page"] == document["pages"] > 1
    assert document["entries"]


def test_sort_headers_toggle_the_current_column_and_keep_the_filter(tree: Path) -> None:
    links = links_of(get_html(listing_of(tree), tree, b"sort=size&filter=a%26b")).others
    assert links["Size \u25b2"] == "?sort=size&order=desc&filter=a%26b"
    assert links["Name"] == "?sort=name&order=asc&filter=a%26b"
    assert links["Modified (UTC)"] == "?sort=time&order=asc&filter=a%26b"
    links = links_of(get_html(listing_of(tree), tree, b"sort=size&order=desc")).others
    assert links["Size \u25bc"] == "?sort=size&order=asc"


# -- the HTML page -----------------------------------------------------------------------------------


def test_names_are_escaped_and_never_markup(tree: Path) -> None:
    page = get_html(listing_of(tree), tree)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;script&gt;.txt" in page
    assert "quote&quot;&#x27;.txt" in page


def test_each_link_unquotes_to_its_name(tree: Path) -> None:
    listing = listing_of(tree)
    links = links_of(get_html(listing, tree)).entries
    assert links[0] == ("../", "../")
    shown = names(get_json(listing, tree))
    assert [text for _, text in links[1:]] == [name + "/" if name in ("docs", "docs-link", "Zeta dir")
                                               else name for name in shown]
    for href, text in links[1:]:
        assert unquote(href) == text
        assert not any(character in href for character in "#?: ")
        assert href.endswith("/") == (text in ("docs/", "docs-link/", "Zeta dir/"))
    for entry in as_json(get_json(listing, tree))["entries"]:
        assert unquote(entry["url"]) == entry["name"] + ("/" if entry["is_dir"] else "")


def test_title_and_heading_show_the_decoded_path(tree: Path) -> None:
    page = get_html(listing_of(tree), tree, path=b"/files/my%20%3Cdocs%3E/")
    assert links_of(page).title == "Index of /files/my <docs>/"
    assert "<h1>Index of /files/my &lt;docs&gt;/</h1>" in page


def test_the_top_has_no_parent_link(tree: Path) -> None:
    top = get_html(listing_of(tree), tree, path=b"/")
    assert 'href="../"' not in top
    assert links_of(top).title == "Index of /"


def test_page_has_the_filter_form_sizes_times_and_style(tree: Path) -> None:
    page = get_html(listing_of(tree), tree, b"sort=time&order=desc")
    assert '<form method="get"' in page and 'name="filter"' in page
    assert '<input type="hidden" name="sort" value="time">' in page
    assert '<input type="hidden" name="order" value="desc">' in page
    assert "3.0 MiB" in page and "1.5 KiB" in page and "10 B" in page
    assert "1970-10-28 00:00" in page  # small.txt's mtime: day 300 of the epoch, in UTC
    assert "prefers-color-scheme:dark" in page and "<script" not in page


def test_responses_carry_type_vary_and_no_cache(tree: Path) -> None:
    listing = listing_of(tree)
    page = listing(str(tree), b"/files/", request())
    document = get_json(listing, tree)
    assert page.headers == [(b"content-type", b"text/html; charset=utf-8"), (b"vary", b"accept"),
                            (b"cache-control", b"no-cache")]
    assert document.headers[0] == (b"content-type", b"application/json")
    assert document.headers[1:] == page.headers[1:]
    assert page.status == document.status == 200 and page.replay is None


# -- JSON --------------------------------------------------------------------------------------------


def test_json_shape(tree: Path) -> None:
    response = listing_of(tree)(str(tree), b"/files/caf%C3%A9/", request(accept=b"application/json"))
    document = as_json(response)
    assert set(document) == {"path", "entries", "page", "pages", "total", "truncated"}
    assert document["path"] == "/files/caf\u00e9/"
    assert (document["page"], document["pages"], document["truncated"]) == (1, 1, False)
    assert document["total"] == len(document["entries"]) == 3 + len(FILES) + len(ODD_NAMES) + 1
    by_name = {entry["name"]: entry for entry in document["entries"]}
    assert by_name["medium.bin"] == {"name": "medium.bin", "is_dir": False, "size": 1536,
                                     "mtime": "1970-04-11T00:00:00Z", "url": "medium.bin"}
    assert by_name["docs"]["size"] is None and by_name["docs"]["url"] == "docs/"
    assert by_name["a#b.txt"]["url"] == "a%23b.txt" and by_name["100%.txt"]["url"] == "100%25.txt"


@pytest.mark.parametrize(("accept", "wanted"), [
    (b"application/json", True),
    (b"application/json, text/plain", True),
    (b"text/html;q=0.5, application/json", True),
    (b"Application/JSON;q=0.9, text/html;q=0.8", True),
    (b"text/html, application/json", False),
    (b"text/html;q=0.9, application/json;q=0.9", False),
    (b"application/json;q=0", False),
    (b"application/json;q=nan", False),
    (b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
    (b"*/*", False),
    (b"", False),
    (None, False),
])
def test_accept_decides_json(accept: bytes | None, wanted: bool) -> None:
    assert prefers_json(accept) is wanted


# -- small parts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "shown"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (1024 * 1024 - 1, "1.0 MiB"),
    (5 * 1024**2 + 1024**2 // 4, "5.2 MiB"), (3 * 1024**3, "3.0 GiB"), (2 * 1024**4, "2.0 TiB"),
])
def test_sizes_in_binary_units(size: int, shown: str) -> None:
    assert format_size(size) == shown


def test_query_is_normalised() -> None:
    assert parse_query(b"sort=time&order=desc&page=3&filter=a+b%21&sort=size") == parse_query(
        b"filter=a%20b!&page=3&order=desc&sort=time")
    assert parse_query(b"filter=" + b"x" * 10_000).filter == "x" * 256


def test_constants_are_the_documented_defaults() -> None:
    assert DEFAULT_PAGE_SIZE == 1000 and MAX_ENTRIES == 100_000


# -- bounds ------------------------------------------------------------------------------------------


def test_a_directory_beyond_max_entries_is_truncated(tmp_path: Path) -> None:
    for index in range(12):
        (tmp_path / f"file{index:02}").write_bytes(b"")
    listing = DirectoryListing(root=str(tmp_path), dotfiles=False, follow_symlinks_outside=False,
                               recheck=60.0, max_entries=5, page_size=2)
    document = as_json(get_json(listing, tmp_path))
    assert document["truncated"] is True and document["total"] == 5 and document["pages"] == 3
    page = get_html(listing, tmp_path)
    assert "truncated" in page and "more than 5 entries" in page

    exact = DirectoryListing(root=str(tmp_path), dotfiles=False, follow_symlinks_outside=False,
                             recheck=60.0, max_entries=12)
    document = as_json(get_json(exact, tmp_path))
    assert document["truncated"] is False and document["total"] == 12
    assert "truncated" not in get_html(exact, tmp_path)


def test_a_vanished_directory_is_refused(tmp_path: Path) -> None:
    listing = listing_of(tmp_path)
    with pytest.raises(PathRefused) as info:
        listing(str(tmp_path / "gone"), b"/gone/", request())
    assert info.value.status == 404


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        listing_of(tmp_path, page_size=0)
    with pytest.raises(ValueError):
        listing_of(tmp_path, recheck=-1.0)


# -- the ledger and the cache ------------------------------------------------------------------------


def test_a_listing_counts_its_system_calls(tree: Path) -> None:
    listing = listing_of(tree)
    before = LEDGER.snapshot()
    get_json(listing, tree)
    after = LEDGER.snapshot()
    calls = {kind: after[kind] - before[kind] for kind in ("open", "getdents", "close", "fstat", "readlink")}
    listed = 3 + len(FILES) + len(ODD_NAMES) + 1
    # one stat per listed entry and per hidden symlink (outside, broken), plus the directory's own, plus
    # opendir's fstat of the descriptor it opened
    assert calls == {"open": 1, "getdents": 2, "close": 1, "fstat": listed + 2 + 1 + 1, "readlink": 3}


def test_a_repeat_is_answered_from_the_cache_without_reading_the_directory(tree: Path) -> None:
    listing = listing_of(tree, recheck=60.0)
    first = listing(str(tree), b"/files/", request(b"sort=size"))
    getdents = LEDGER.getdents
    fstat = LEDGER.fstat
    again = listing(str(tree), b"/files/", request(b"order=asc&sort=size"))  # the same, normalised
    assert again is first and LEDGER.getdents == getdents and LEDGER.fstat == fstat
    other_page = listing(str(tree), b"/files/", request(b"sort=time"))
    assert other_page.body != first.body and LEDGER.getdents == getdents  # the kept scan serves it
    other_path = listing(str(tree), b"/mirror/", request(b"sort=size"))
    assert other_path is not first and isinstance(other_path.body, bytes)
    assert b"Index of /mirror/" in other_path.body


def test_an_added_file_shows_up_after_recheck(tree: Path) -> None:
    listing = listing_of(tree, recheck=0.0)
    assert "new.txt" not in names(get_json(listing, tree))
    (tree / "new.txt").write_bytes(b"new")
    assert "new.txt" in names(get_json(listing, tree))
    (tree / "new.txt").unlink()
    assert "new.txt" not in names(get_json(listing, tree))


def test_a_change_the_directory_mtime_misses_shows_up_after_ten_rechecks(tree: Path) -> None:
    now = [1000.0]
    listing = listing_of(tree, recheck=1.0, clock=lambda: now[0])
    old = 5 * DAY  # long ago, so the directory's mtime is trusted for the full period
    os.utime(tree, ns=(old, old))

    def size_of_small() -> int:
        entries = as_json(get_json(listing, tree))["entries"]
        size: int = next(entry["size"] for entry in entries if entry["name"] == "small.txt")
        return size

    assert size_of_small() == 10
    (tree / "small.txt").write_bytes(b"y" * 99)  # the directory's mtime does not move
    os.utime(tree, ns=(old, old))
    getdents = LEDGER.getdents
    now[0] += STALE_AFTER_RECHECKS - 0.5
    assert size_of_small() == 10 and LEDGER.getdents == getdents  # re-stat'ed, unchanged, still kept
    now[0] += 1.0
    assert size_of_small() == 99 and LEDGER.getdents == getdents + 2


def test_a_recently_changed_directory_is_trusted_one_recheck_only(tree: Path) -> None:
    now = [1000.0]
    listing = listing_of(tree, recheck=1.0, clock=lambda: now[0])
    os.utime(tree)  # changed just now
    get_json(listing, tree)  # the tree was made just now: its mtime could hide a change in the same tick
    getdents = LEDGER.getdents
    now[0] += 0.5
    get_json(listing, tree)
    assert LEDGER.getdents == getdents
    now[0] += 1.0
    get_json(listing, tree)
    assert LEDGER.getdents == getdents + 2


def test_the_cache_is_bounded(tree: Path) -> None:
    listing = listing_of(tree, cache_entries=2)
    first = get_json(listing, tree, b"filter=a")
    get_json(listing, tree, b"filter=b")
    assert get_json(listing, tree, b"filter=a") is first
    get_json(listing, tree, b"filter=c")  # drops filter=b, the least recently used
    get_json(listing, tree, b"filter=d")  # drops filter=a
    assert get_json(listing, tree, b"filter=a") is not first
