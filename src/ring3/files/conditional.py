"""Validators, preconditions (RFC 9110 13) and byte ranges (RFC 9110 14), as plain decisions."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ring3.dates import http_date, parse_http_date
from ring3.events import Request


@dataclass(frozen=True, slots=True)
class Validators:
    etag: bytes  # strong, quoted
    last_modified: bytes
    mtime: int

    @classmethod
    def of(cls, st: os.stat_result, encoding: str = "") -> Validators:
        """From a file's stat; a precompressed variant's ETag also names its encoding."""
        mtime = int(st.st_mtime)
        if encoding:
            etag = b'"%x-%x-%s"' % (st.st_mtime_ns, st.st_size, encoding.encode("ascii"))
        else:
            etag = b'"%x-%x"' % (st.st_mtime_ns, st.st_size)
        return cls(etag, http_date(mtime), mtime)


def _etags(value: bytes) -> list[bytes]:
    return [tag.strip() for tag in value.split(b",") if tag.strip()]


def _weak_match(a: bytes, b: bytes) -> bool:
    return a.removeprefix(b"W/") == b.removeprefix(b"W/")


def precondition_status(request: Request, validators: Validators) -> int | None:
    """412 or 304 when a precondition decides the answer, else None (RFC 9110 13.2.2 order)."""
    if_match = request.header(b"if-match")
    if if_match is not None:
        tags = _etags(if_match)
        if b"*" not in tags and validators.etag not in tags:  # strong comparison
            return 412
    else:
        since = request.header(b"if-unmodified-since")
        if since is not None:
            date = parse_http_date(since)
            if date is not None and validators.mtime > date:
                return 412
    if_none_match = request.header(b"if-none-match")
    if if_none_match is not None:
        tags = _etags(if_none_match)
        if b"*" in tags or any(_weak_match(tag, validators.etag) for tag in tags):
            return 304
        return None
    modified_since = request.header(b"if-modified-since")
    if modified_since is not None:
        date = parse_http_date(modified_since)
        if date is not None and validators.mtime <= date:
            return 304
    return None


def if_range_allows(request: Request, validators: Validators) -> bool:
    """Whether a Range header may be honoured given If-Range (RFC 9110 13.1.5)."""
    value = request.header(b"if-range")
    if value is None:
        return True
    if value.startswith((b'"', b"W/")):
        return value == validators.etag  # strong comparison; a weak tag never matches
    date = parse_http_date(value)
    return date is not None and date == validators.mtime


class Unsatisfiable(Exception):
    """No range of the Range header overlaps the file: 416."""


def parse_ranges(value: bytes, size: int, max_ranges: int) -> list[tuple[int, int]] | None:
    """Ranges as (first, last) inclusive, clipped to the file.

    None means "ignore the Range header and send the whole file": bad syntax, a unit other than bytes,
    more ranges than `max_ranges`, or ranges that add up to more than the file. Raises Unsatisfiable.
    """
    unit, sep, spec = value.partition(b"=")
    if not sep or unit.strip().lower() != b"bytes":
        return None
    ranges: list[tuple[int, int]] = []
    parts = [part.strip() for part in spec.split(b",")]
    parts = [part for part in parts if part]
    if not parts or len(parts) > max_ranges:
        return None
    for part in parts:
        first_text, dash, last_text = part.partition(b"-")
        first_text, last_text = first_text.strip(), last_text.strip()
        if not dash or (first_text and not _digits(first_text)) or (last_text and not _digits(last_text)):
            return None
        if not first_text:  # suffix: the last N bytes
            if not last_text:
                return None
            suffix = int(last_text)
            if suffix and size:
                ranges.append((max(0, size - suffix), size - 1))
            continue
        first = int(first_text)
        if last_text and int(last_text) < first:
            return None
        if first >= size:
            continue  # this range is unsatisfiable; others may not be
        last = min(int(last_text), size - 1) if last_text else size - 1
        ranges.append((first, last))
    if not ranges:
        raise Unsatisfiable
    if sum(last - first + 1 for first, last in ranges) > size:
        return None
    return ranges


def _digits(text: bytes) -> bool:
    return text.isdigit() and text.isascii()
