"""Content types by file extension.

A fixed table covers what web sites serve, so those answers do not depend on the machine; other
extensions fall back to the standard library's `mimetypes` (which reads the system's tables).
"""

from __future__ import annotations

import functools
import mimetypes

_UTF8 = "; charset=utf-8"

_TYPES: dict[str, str] = {
    "html": "text/html" + _UTF8, "htm": "text/html" + _UTF8, "css": "text/css" + _UTF8,
    "js": "text/javascript" + _UTF8, "mjs": "text/javascript" + _UTF8,
    "json": "application/json", "map": "application/json", "xml": "application/xml",
    "txt": "text/plain" + _UTF8, "md": "text/markdown" + _UTF8, "csv": "text/csv" + _UTF8,
    "svg": "image/svg+xml", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
    "gif": "image/gif", "webp": "image/webp", "avif": "image/avif", "ico": "image/x-icon",
    "woff": "font/woff", "woff2": "font/woff2", "ttf": "font/ttf", "otf": "font/otf",
    "wasm": "application/wasm", "pdf": "application/pdf", "zip": "application/zip",
    "gz": "application/gzip", "br": "application/x-brotli", "tar": "application/x-tar",
    "mp4": "video/mp4", "webm": "video/webm", "mp3": "audio/mpeg", "ogg": "audio/ogg",
    "wav": "audio/wav", "webmanifest": "application/manifest+json", "bin": "application/octet-stream",
}

DEFAULT_TYPE = "application/octet-stream"


_BY_EXTENSION: dict[str, bytes] = {ext: value.encode("ascii") for ext, value in _TYPES.items()}


def content_type(name: str) -> bytes:
    """The Content-Type for a file name; text types carry charset=utf-8."""
    _, dot, extension = name.rpartition(".")
    if dot:
        known = _BY_EXTENSION.get(extension)
        if known is not None:
            return known
    return _guess(extension.lower() if dot else "")


@functools.lru_cache(maxsize=256)
def _guess(extension: str) -> bytes:
    """Extensions outside the table, asked of `mimetypes` once each."""
    known = _TYPES.get(extension)
    if known is not None:
        return known.encode("ascii")
    guessed, _ = mimetypes.guess_type("x." + extension, strict=True) if extension else (None, None)
    if guessed is None:
        return DEFAULT_TYPE.encode("ascii")
    if guessed.startswith("text/"):
        guessed += _UTF8
    return guessed.encode("ascii")
