"""Directory listings: what a directory without an index file answers when its site sets `listing = true`.

nginx's autoindex and Caddy's browse are the floor: an HTML page that reads well in a browser (sortable
columns, a filter box that works without JavaScript, pages, dark mode), or JSON when the Accept field
prefers it. Pure: the static handler passes a directory the resolver has allowed (its real path under the
root) and gets a Response; the only I/O is one os.scandir pass and the stats it needs.

Listed: regular files and directories (a symlink as what it points at). Hidden: names starting with '.'
unless `dotfiles`; symlinks that are broken, loop, or lead outside the root unless
`follow_symlinks_outside` (the resolver's rules, so every link shown can be followed); sockets, FIFOs,
devices; names that are not UTF-8 or hold a backslash, which the resolver refuses to serve.

Query: `sort=name|size|time`, `order=asc|desc`, `filter=TEXT` (case-insensitive substring), `page=N`
(1-based; past the end means the last). Unknown or malformed values mean the defaults, never an error.

Bounds: at most `max_entries` directory entries are read (hidden ones too: reading them is the cost);
beyond, the scan stops and the answer says it is truncated (which entries made the cut is the directory's
own, arbitrary order). One page of `page_size` rows is rendered; the filter is cut to MAX_FILTER_CHARS.

The cache, and its choice: rendered answers are kept by (directory, URL path, normalised query, JSON or
HTML), at most `cache_entries`, least recently used dropped first; the latest scans too (`max_entries`
entries in all), so paging or re-sorting a large directory reads it once. The directory is stat'ed at
most once per `recheck` seconds, and an answer holds while its mtime_ns is unchanged: that catches names
added, removed or renamed. A file rewritten in place leaves its directory's mtime alone, so an answer
older than STALE_AFTER_RECHECKS x `recheck` is also made afresh: names are at most `recheck` stale, sizes
and times ten times that. And as a directory's mtime moves in coarse ticks (a kernel tick; seconds on
some filesystems), a scan made within RACY_WINDOW_NS of the directory's last change is trusted for one
`recheck` only (git's "racy" rule), lest a second change in the same tick go unseen. `recheck = 0`
reads the directory on every request.

The cost ledger: a listing counts open, two getdents and close, as ring3 does elsewhere (a directory over
one 32 KiB buffer takes more getdents); each entry's stat (an lstat, or a stat of a symlink's target) and
each re-stat of the directory count fstat; finding where a symlink leads counts readlink.
"""

from __future__ import annotations

import html
import json
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import quote, unquote_to_bytes

from ring3.events import Request, Response
from ring3.files.listing_style import STYLE
from ring3.files.resolve import PathRefused
from ring3.observe.ledger import LEDGER

DEFAULT_PAGE_SIZE = 1000  # rows per page (nginx autoindex and Caddy browse: one page of everything)
MAX_ENTRIES = 100_000  # directory entries read at most (nginx: no limit; Caddy: none unless limit=)
MAX_FILTER_CHARS = 256  # a longer filter is cut to this
MAX_DIRECTORIES = 1024  # directories whose last-seen mtime is remembered
STALE_AFTER_RECHECKS = 10  # an answer is made afresh after this many `recheck` periods, changed or not
RACY_WINDOW_NS = 2_000_000_000  # mtime granularity to distrust: FAT's 2 s, ext3's 1 s, a kernel tick
SORT_COLUMNS = ("name", "size", "time")
SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
# Kept literal in a link: sub-delims and '@'. Encoded: '#', '?', '%' (they would end or escape the path)
# and ':' (a relative link "a:b" would read as a URL with scheme "a").
LINK_SAFE = "!$&'()*+,;=@~"

HTML_TYPE = b"text/html; charset=utf-8"
JSON_TYPE = b"application/json"


@dataclass(frozen=True, slots=True)
class Entry:
    """One listed name: a regular file or a directory (a symlink is described by its target)."""

    name: str
    is_dir: bool
    size: int  # 0 for a directory, whose size says nothing useful
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class ListingQuery:
    """The query a listing was asked with, normalised (a cache key: equal queries, equal answers)."""

    sort: str = "name"
    descending: bool = False
    page: int = 1
    filter: str = ""


AnswerKey = tuple[str, bytes, ListingQuery, bool]  # directory, URL path, query, as JSON


@dataclass(frozen=True, slots=True)
class Stamp:
    """When something was read, and the directory's mtime it was read at."""

    mtime_ns: int
    made_at: float  # the listing's clock
    racy: bool  # the directory changed within RACY_WINDOW_NS before: trust the mtime one recheck only


@dataclass(frozen=True, slots=True)
class Scan:
    """A directory's listable entries, in the directory's order."""

    entries: tuple[Entry, ...]
    truncated: bool  # it has more than max_entries entries; the rest were not read
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class ListingPage:
    """Everything one rendered page shows, decided before rendering."""

    path: str  # the URL path, decoded
    top: bool  # the site's root: no parent link
    query: ListingQuery  # its page clamped to 1..pages
    rows: list[Entry]
    pages: int
    total: int  # entries that match the filter, on all pages
    truncated: bool
    max_entries: int


# -- reading the directory ---------------------------------------------------------------------------


def read_directory(directory: str, *, root: str, dotfiles: bool, follow_symlinks_outside: bool,
                   max_entries: int) -> tuple[list[Entry], bool]:
    """The listable entries of `directory` (one scandir pass) and whether it had more than
    `max_entries` entries. Raise PathRefused (404, 403) when the directory cannot be read."""
    root_prefix = root.rstrip("/") + "/"
    entries: list[Entry] = []
    read = 0
    truncated = False
    LEDGER.open += 1  # opendir(): openat and fstat, then getdents64 until empty, and close
    LEDGER.fstat += 1
    LEDGER.getdents += 2
    LEDGER.close += 1
    try:
        with os.scandir(directory) as found:
            for dirent in found:
                if read == max_entries:
                    truncated = True
                    break
                read += 1
                entry = _entry_of(dirent, root_prefix, dotfiles, follow_symlinks_outside)
                if entry is not None:
                    entries.append(entry)
    except (FileNotFoundError, NotADirectoryError):
        raise PathRefused(404, "directory is gone") from None
    except OSError:
        raise PathRefused(403, "directory cannot be read") from None
    return entries, truncated


def _entry_of(dirent: os.DirEntry[str], root_prefix: str, dotfiles: bool,
              follow_outside: bool) -> Entry | None:
    """The Entry a directory entry lists as, or None if it is hidden."""
    name = dirent.name
    if (name[0] == "." and not dotfiles) or "\\" in name:
        return None
    try:
        name.encode("utf-8")  # scandir hands undecodable bytes over as surrogates
    except UnicodeEncodeError:
        return None
    try:
        if dirent.is_symlink():  # the type comes from getdents: no system call
            LEDGER.fstat += 1
            st = os.stat(dirent.path)  # follows: a broken link or a loop raises
            if not follow_outside:
                LEDGER.readlink += 1
                if not (os.path.realpath(dirent.path) + "/").startswith(root_prefix):
                    return None
        elif dirent.is_dir(follow_symlinks=False) or dirent.is_file(follow_symlinks=False):
            LEDGER.fstat += 1
            st = dirent.stat(follow_symlinks=False)
        else:
            return None  # a socket, FIFO or device
    except OSError:  # gone since getdents, or unreadable
        return None
    if stat.S_ISDIR(st.st_mode):
        return Entry(name, True, 0, st.st_mtime_ns)
    if stat.S_ISREG(st.st_mode):
        return Entry(name, False, st.st_size, st.st_mtime_ns)
    return None


# -- deciding what to show ---------------------------------------------------------------------------


def parse_query(raw: bytes) -> ListingQuery:
    """The listing's parameters from a query string; anything unknown or malformed means the default."""
    fields: dict[bytes, bytes] = {}
    for pair in raw.split(b"&"):
        key, _, value = pair.partition(b"=")
        fields.setdefault(key, value)
    sort = _query_text(fields.get(b"sort", b""))
    order = _query_text(fields.get(b"order", b""))
    page_text = _query_text(fields.get(b"page", b""))
    page = int(page_text) if page_text.isdigit() and page_text.isascii() and len(page_text) < 10 else 1
    return ListingQuery(
        sort=sort if sort in SORT_COLUMNS else "name",
        descending=order == "desc",
        page=max(page, 1),
        filter=_query_text(fields.get(b"filter", b""))[:MAX_FILTER_CHARS],
    )


def _query_text(value: bytes) -> str:
    """A query value decoded as a form sends it ('+' for space, then percent-encoding, then UTF-8)."""
    return unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8", "replace")


def query_string(query: ListingQuery) -> str:
    """The query string (with its '?') that asks for `query`; it keeps sort, order and filter."""
    text = f"?sort={query.sort}&order={'desc' if query.descending else 'asc'}"
    if query.page > 1:
        text += f"&page={query.page}"
    if query.filter:
        text += "&filter=" + quote(query.filter, safe="")
    return text


def prefers_json(accept: bytes | None) -> bool:
    """Whether an Accept field prefers application/json to text/html (other types are not weighed)."""
    if not accept or b"application/json" not in accept.lower():
        return False
    weights: dict[bytes, float] = {}
    for item in accept.lower().split(b","):
        media, *params = item.split(b";")
        media = media.strip()
        if media not in (b"application/json", b"text/html") or media in weights:
            continue
        weight = 1.0
        for param in params:
            key, _, value = param.partition(b"=")
            if key.strip() == b"q":
                try:
                    weight = float(value.strip().decode("ascii"))
                except (ValueError, UnicodeDecodeError):
                    weight = 0.0
                if not 0.0 <= weight <= 1.0:  # NaN fails this too
                    weight = 0.0
        weights[media] = weight
    json_weight = weights.get(b"application/json", 0.0)
    return json_weight > 0.0 and json_weight > weights.get(b"text/html", -1.0)


def order_entries(entries: list[Entry], sort: str, descending: bool) -> list[Entry]:
    """Directories first, then by `sort`; names break ties (case-insensitively, then by case)."""
    ordered = sorted(entries, key=lambda entry: (entry.name.casefold(), entry.name))
    if sort == "size":
        ordered.sort(key=lambda entry: entry.size, reverse=descending)  # stable: ties keep name order
    elif sort == "time":
        ordered.sort(key=lambda entry: entry.mtime_ns, reverse=descending)
    elif descending:
        ordered.reverse()
    ordered.sort(key=lambda entry: not entry.is_dir)
    return ordered


def make_page(scan: Scan, query: ListingQuery, url_path: bytes, *, page_size: int,
              max_entries: int) -> ListingPage:
    """Filter, sort and cut out the page `query` asks for."""
    needle = query.filter.casefold()
    matching = [entry for entry in scan.entries if needle in entry.name.casefold()]
    ordered = order_entries(matching, query.sort, query.descending)
    total = len(ordered)
    pages = max(1, -(-total // page_size))
    page = min(query.page, pages)
    path = unquote_to_bytes(url_path).decode("utf-8", "replace")
    rows = ordered[(page - 1) * page_size:page * page_size]
    return ListingPage(path, url_path == b"/", replace(query, page=page), rows, pages, total, scan.truncated,
                       max_entries)


# -- rendering ---------------------------------------------------------------------------------------


def link_of(entry: Entry) -> str:
    """The entry's relative link, percent-encoded; a directory's ends in '/'."""
    return quote(entry.name, safe=LINK_SAFE) + ("/" if entry.is_dir else "")


def format_size(size: int) -> str:
    """A size in binary units with one decimal: "512 B", "1.5 KiB", "3.0 MiB"."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in SIZE_UNITS:
        value /= 1024
        if round(value, 1) < 1024 or unit == SIZE_UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_time(mtime_ns: int, pattern: str) -> str:
    """A modification time in UTC by a strftime pattern; empty if the time cannot be shown."""
    try:
        return time.strftime(pattern, time.gmtime(mtime_ns // 1_000_000_000))
    except (OverflowError, OSError, ValueError):
        return ""


def render_json(page: ListingPage) -> bytes:
    """The page as JSON; a directory's size is null."""
    document = {
        "path": page.path,
        "entries": [{"name": entry.name, "is_dir": entry.is_dir, "size": None if entry.is_dir else entry.size,
                     "mtime": format_time(entry.mtime_ns, "%Y-%m-%dT%H:%M:%SZ"), "url": link_of(entry)}
                    for entry in page.rows],
        "page": page.query.page,
        "pages": page.pages,
        "total": page.total,
        "truncated": page.truncated,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")




def _sort_header(label: str, column: str, query: ListingQuery, css: str) -> str:
    """A column header whose link sorts by it: ascending, or the other way if it is already the sort."""
    current = query.sort == column
    target = ListingQuery(column, current and not query.descending, 1, query.filter)
    if not current:
        return f'<th class="{css}"><a href="{html.escape(query_string(target))}">{label}</a></th>'
    arrow, aria = ("\u25bc", "descending") if query.descending else ("\u25b2", "ascending")
    return (f'<th class="{css}" aria-sort="{aria}"><a href="{html.escape(query_string(target))}">'
            f"{label} {arrow}</a></th>")


def _row(entry: Entry) -> str:
    """One table row: the linked name, the size (exact bytes on hover), the time (ISO in `datetime`)."""
    name = html.escape(entry.name + ("/" if entry.is_dir else ""))
    size = "-" if entry.is_dir else format_size(entry.size)
    size_title = "" if entry.is_dir else f' title="{entry.size:,} bytes"'
    when = format_time(entry.mtime_ns, "%Y-%m-%d %H:%M")
    iso = format_time(entry.mtime_ns, "%Y-%m-%dT%H:%M:%SZ")
    row_class = ' class="dir"' if entry.is_dir else ""
    return (f'<tr{row_class}><td class="name">'
            f'<a href="{html.escape(link_of(entry))}">{name}</a></td>'
            f'<td class="size"{size_title}>{size}</td>'
            f'<td class="time"><time datetime="{iso}">{when}</time></td></tr>')


def render_html(page: ListingPage) -> bytes:
    """The page as a self-contained HTML document (inline style, no script)."""
    query = page.query
    title = html.escape(f"Index of {page.path}")
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        f"<title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n",
        '<form method="get" role="search">'
        f'<input type="search" name="filter" value="{html.escape(query.filter)}" '
        'placeholder="Filter by name" aria-label="Filter by name">'
        f'<input type="hidden" name="sort" value="{query.sort}">'
        f'<input type="hidden" name="order" value="{"desc" if query.descending else "asc"}">'
        '<button type="submit">Filter</button></form>\n',
    ]
    if page.truncated:
        parts.append(f'<p class="note">This directory has more than {page.max_entries:,} entries: it is '
                     f"truncated, and only the first {page.max_entries:,} read are listed.</p>\n")
    parts.append("<table>\n<thead><tr>" + _sort_header("Name", "name", query, "name")
                 + _sort_header("Size", "size", query, "size")
                 + _sort_header("Modified (UTC)", "time", query, "time") + "</tr></thead>\n<tbody>\n")
    if not page.top:
        parts.append('<tr class="dir"><td class="name"><a href="../">../</a></td>'
                     '<td class="size">-</td><td class="time"></td></tr>\n')
    parts.extend(_row(entry) + "\n" for entry in page.rows)
    if not page.rows:
        empty = f"Nothing matches \u201c{html.escape(query.filter)}\u201d." if query.filter else "Empty."
        parts.append(f'<tr><td class="empty" colspan="3">{empty}</td></tr>\n')
    parts.append("</tbody>\n</table>\n")
    parts.append(_footer(page))
    parts.append("</body>\n</html>\n")
    return "".join(parts).encode("utf-8")


def _footer(page: ListingPage) -> str:
    """How many entries (matching the filter), and links to the previous and next pages."""
    query = page.query
    noun = "entry" if page.total == 1 else "entries"
    matching = " match" if query.filter else ""
    items = [f"<span>{page.total:,} {noun}{matching}</span>"]
    if page.pages > 1:
        if query.page > 1:
            previous = html.escape(query_string(replace(query, page=query.page - 1)))
            items.append(f'<a rel="prev" href="{previous}">\u2039 Previous</a>')
        items.append(f"<span>Page {query.page:,} of {page.pages:,}</span>")
        if query.page < page.pages:
            following = html.escape(query_string(replace(query, page=query.page + 1)))
            items.append(f'<a rel="next" href="{following}">Next \u203a</a>')
    return "<footer>" + "".join(items) + "</footer>\n"


# -- the listing, with its cache ---------------------------------------------------------------------


class DirectoryListing:
    """Answers a request for a directory with its listing, cached while the directory is unchanged."""

    __slots__ = ("_answers", "_cache_entries", "_clock", "_directories", "_dotfiles", "_follow_outside",
                 "_max_entries", "_page_size", "_recheck", "_root", "_scanned", "_scans")

    def __init__(self, *, root: str, dotfiles: bool, follow_symlinks_outside: bool, recheck: float,
                 page_size: int = DEFAULT_PAGE_SIZE, cache_entries: int = 64,
                 max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic) -> None:
        if page_size < 1 or max_entries < 1 or cache_entries < 0 or recheck < 0:
            raise ValueError("page_size and max_entries must be positive, cache_entries and recheck not "
                             "negative")
        self._root = os.path.realpath(root)
        self._dotfiles = dotfiles
        self._follow_outside = follow_symlinks_outside
        self._recheck = recheck
        self._page_size = page_size
        self._cache_entries = cache_entries
        self._max_entries = max_entries
        self._clock = clock
        self._answers: OrderedDict[AnswerKey, tuple[Response, Stamp]] = OrderedDict()
        self._scans: OrderedDict[str, Scan] = OrderedDict()
        self._scanned = 0  # entries held in _scans, at most max_entries (beyond the latest scan)
        self._directories: OrderedDict[str, tuple[int, float]] = OrderedDict()  # mtime_ns, checked at

    def __call__(self, directory: str, url_path: bytes, request: Request) -> Response:
        """The listing of `directory` (a real path the caller allowed), requested as `url_path` (encoded,
        ending in '/'). Raise PathRefused (404, 403) if the directory vanished or cannot be read."""
        now = self._clock()
        query = parse_query(request.query)
        as_json = prefers_json(request.header(b"accept"))
        mtime_ns = self._directory_mtime(directory, now)
        key = (directory, url_path, query, as_json)
        answer = self._answers.get(key)
        if answer is not None and self._holds(answer[1], mtime_ns, now):
            self._answers.move_to_end(key)
            return answer[0]
        scan = self._scan(directory, mtime_ns, now)
        page = make_page(scan, query, url_path, page_size=self._page_size, max_entries=self._max_entries)
        body = render_json(page) if as_json else render_html(page)
        headers = [(b"content-type", JSON_TYPE if as_json else HTML_TYPE), (b"vary", b"accept"),
                   (b"cache-control", b"no-cache")]
        response = Response(status=200, headers=headers, body=body)
        if self._cache_entries:
            answers = self._answers
            answers[key] = (response, scan.stamp)
            answers.move_to_end(key)
            while len(answers) > self._cache_entries:
                answers.popitem(last=False)
        return response

    def _holds(self, stamp: Stamp, mtime_ns: int, now: float) -> bool:
        """Whether what was read at `stamp` still describes a directory whose mtime is now `mtime_ns`."""
        if stamp.mtime_ns != mtime_ns:
            return False
        periods = 1 if stamp.racy else STALE_AFTER_RECHECKS
        return now - stamp.made_at < periods * self._recheck

    def _directory_mtime(self, directory: str, now: float) -> int:
        """The directory's mtime_ns, stat'ed at most once per recheck."""
        directories = self._directories
        known = directories.get(directory)
        if known is not None and now - known[1] < self._recheck:
            return known[0]
        LEDGER.fstat += 1
        try:
            mtime_ns = os.stat(directory).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            directories.pop(directory, None)
            raise PathRefused(404, "directory is gone") from None
        except OSError:
            raise PathRefused(403, "directory cannot be read") from None
        directories[directory] = (mtime_ns, now)
        directories.move_to_end(directory)
        if len(directories) > MAX_DIRECTORIES:
            directories.popitem(last=False)
        return mtime_ns

    def _scan(self, directory: str, mtime_ns: int, now: float) -> Scan:
        """The directory's entries: the kept scan while it holds, else read afresh (and kept)."""
        scans = self._scans
        kept = scans.get(directory)
        if kept is not None and self._holds(kept.stamp, mtime_ns, now):
            scans.move_to_end(directory)
            return kept
        racy = time.time_ns() - mtime_ns < RACY_WINDOW_NS  # mtime_ns was read before the scan starts
        entries, truncated = read_directory(
            directory, root=self._root, dotfiles=self._dotfiles,
            follow_symlinks_outside=self._follow_outside, max_entries=self._max_entries)
        scan = Scan(tuple(entries), truncated, Stamp(mtime_ns, now, racy))
        if kept is not None:
            self._scanned -= len(kept.entries)
        scans[directory] = scan
        scans.move_to_end(directory)
        self._scanned += len(entries)
        while self._scanned > self._max_entries and len(scans) > 1:
            _, dropped = scans.popitem(last=False)
            self._scanned -= len(dropped.entries)
        return scan
