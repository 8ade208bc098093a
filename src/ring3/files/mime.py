"""Content types by file extension.

A fixed table covers what web sites serve, so those answers do not depend on the machine; other
extensions fall back to the standard library's `mimetypes` (which reads the system's tables).
"""

from __future__ import annotations

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
    "wav": "audio/wav", "webmanifest": "application/manifest+json",
}

DEFAULT_TYPE = "application/octet-stream"


def content_type(name: str) -> bytes:
    """The Content-Type for a file name; text types carry charset=utf-8."""
    _, dot, extension = name.rpartition(".")
    if dot:
        known = _TYPES.get(extension.lower())
        if known is not None:
            return known.encode("ascii")
    guessed, _ = mimetypes.guess_type(name, strict=True)
    if guessed is None:
        return DEFAULT_TYPE.encode("ascii")
    if guessed.startswith("text/"):
        guessed += _UTF8
    return guessed.encode("ascii")
