"""HTTP Basic authentication against an Apache htpasswd file: load it once, then check Authorization headers.

Schemes: bcrypt ($2y$, $2a$, $2b$) through the `bcrypt` package; SHA-256/512-crypt ($5$, $6$) and
APR1/MD5-crypt ($apr1$, $1$) through `libpass`, the maintained fork of passlib (its pure-Python SHA-crypt is
as fast as hashlib allows, so code of our own would gain nothing); {SHA} with hashlib. Plaintext and DES crypt
are refused at load. Both libraries are the optional extra ring3[auth], imported only when a file needs them.

Passwords are checked as the raw bytes the client sent, never decoded: htpasswd hashes the bytes it was given,
so a UTF-8 or a latin-1 password matches whichever bytes were hashed. User names are UTF-8, as in the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MAX_AUTHORIZATION_BYTES = 4096
"""Longest Authorization value looked at; longer ones fail before any decoding. Credentials that need more
are not credentials (Apache's LimitRequestFieldSize and nginx's large_client_header_buffers are 8 KiB for
any header)."""

VERIFIED_CACHE_ENTRIES = 1024
"""Successful checks remembered per file, oldest dropped first, so a client's next request skips bcrypt."""

BCRYPT_MAX_PASSWORD_BYTES = 72
"""bcrypt reads only this many bytes; htpasswd truncates longer passwords silently, the bcrypt package refuses
them, so we truncate as htpasswd did."""

AUTH_EXTRA = "pip install 'ring3[auth]'"
_REHASH = "re-create the entry with htpasswd -B (bcrypt)"
_CACHE_KEY = secrets.token_bytes(32)  # the success cache holds HMACs of headers, never the credentials
_BCRYPT_SHAPE = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_DES_SHAPE = re.compile(r"[./0-9A-Za-z]{13}")
_SHA1_SHAPE = re.compile(r"\{SHA\}[A-Za-z0-9+/]{27}=")
_LIBPASS_SCHEMES = {  # prefix -> (libpass handler, slow)
    "$5$": ("sha256_crypt", True),
    "$6$": ("sha512_crypt", True),
    "$apr1$": ("apr_md5_crypt", False),
    "$1$": ("md5_crypt", False),
}

Checker = Callable[[bytes, str], bool]
"""(password, stored hash) -> whether they match, compared in constant time; may raise ValueError."""


class HtpasswdError(Exception):
    """A file that cannot be used; str(exc) is one line: the reason, naming the line number when a line is at
    fault."""


class _LibpassHandler(Protocol):
    def verify(self, secret: bytes, stored: str) -> bool: ...
    def from_string(self, stored: str) -> _LibpassParsed: ...


class _LibpassParsed(Protocol):
    checksum: str | None


@dataclass(frozen=True, slots=True)
class _Entry:
    """One user's line: the scheme's name, the stored hash, and how to check a password against it."""

    scheme: str
    stored: str
    check: Checker
    slow: bool


class Htpasswd:
    """The users of one htpasswd file, and the Authorization values recently verified against it."""

    def __init__(self, entries: dict[str, _Entry]) -> None:
        self._entries = entries
        self._dummy = _cost_model(entries)
        self._slow = any(entry.slow for entry in entries.values())
        self._verified: dict[bytes, str] = {}
        self._verified_lock = threading.Lock()

    @classmethod
    def load(cls, path: str) -> Htpasswd:
        """Read and parse the file at `path`; HtpasswdError if it cannot be read or a line cannot be used."""
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise HtpasswdError(f"cannot read htpasswd file {path}: {exc.strerror or exc}") from None
        return cls(_parse(data, path))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def slow(self) -> bool:
        """True when a verification may take more than about a millisecond (bcrypt or SHA-crypt entries), so
        the caller should run verify() in a worker thread."""
        return self._slow

    def cached(self, authorization: bytes) -> str | None:
        """The user name if these exact header bytes were verified successfully recently, else None. Cheap."""
        if len(authorization) > MAX_AUTHORIZATION_BYTES:
            return None
        return self._verified.get(_cache_key(authorization))

    def verify(self, authorization: bytes) -> str | None:
        """The full check of an Authorization value (b"Basic base64..."): the user name, remembered for
        cached(), or None. An unknown user pays for a check too, so timing does not tell which users exist.
        Thread-safe; may take milliseconds."""
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return None
        user, password = credentials
        entry = self._entries.get(user)
        target = entry if entry is not None else self._dummy
        if target is None:  # an empty file: no user exists to be revealed
            return None
        matched = _matches(target, password)
        if entry is None or not matched:
            return None
        self._remember(authorization, user)
        return user

    def _remember(self, authorization: bytes, user: str) -> None:
        key = _cache_key(authorization)
        with self._verified_lock:  # readers stay lock-free: dict.get is atomic
            if key in self._verified:
                return
            while len(self._verified) >= VERIFIED_CACHE_ENTRIES:
                del self._verified[next(iter(self._verified))]  # dicts keep insertion order: the oldest
            self._verified[key] = user


def _cache_key(authorization: bytes) -> bytes:
    return hmac.digest(_CACHE_KEY, authorization, "sha256")


def _basic_credentials(authorization: bytes) -> tuple[str, bytes] | None:
    """(user, password bytes) from b"Basic <base64 of user:password>", or None if it is anything else."""
    if len(authorization) > MAX_AUTHORIZATION_BYTES:
        return None
    scheme, space, token = authorization.partition(b" ")
    if not space or scheme.lower() != b"basic":
        return None
    try:
        decoded = binascii.a2b_base64(token, strict_mode=True)  # a second space is not base64: refused
        user, colon, password = decoded.partition(b":")
        return (user.decode("utf-8"), password) if colon else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def _matches(entry: _Entry, password: bytes) -> bool:
    try:
        return entry.check(password, entry.stored)
    except ValueError:  # a password the scheme cannot take (libpass refuses NUL bytes)
        return False


def _cost_model(entries: dict[str, _Entry]) -> _Entry | None:
    """The entry an unknown user is checked against: the first one of the commonest scheme, so that a
    miss costs what a typical hit costs. Its result is thrown away."""
    if not entries:
        return None
    commonest = Counter(entry.scheme for entry in entries.values()).most_common(1)[0][0]
    return next(entry for entry in entries.values() if entry.scheme == commonest)


def _parse(data: bytes, path: str) -> dict[str, _Entry]:
    """user -> entry for each `user:hash` line; blank lines and '#' comments skipped."""
    entries: dict[str, _Entry] = {}
    checkers: dict[str, Checker] = {}  # scheme -> checker, so each library is imported once
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise HtpasswdError(f"{path}, line {number}: not UTF-8") from None
        if not line or line.startswith("#"):
            continue
        user, colon, rest = line.partition(":")
        stored = rest.split(":", 1)[0]  # Apache ignores fields after the hash
        if not colon or not user or not stored:
            raise HtpasswdError(f"{path}, line {number}: expected user:hash")
        if user in entries:
            raise HtpasswdError(f"{path}, line {number}: user {user!r} is already defined")
        try:
            scheme, slow = _scheme_of(stored)
        except ValueError as exc:
            raise HtpasswdError(f"{path}, line {number}: {exc}") from None
        if scheme not in checkers:
            checkers[scheme] = _checker(scheme)
        entries[user] = _Entry(scheme, stored, checkers[scheme], slow)
    return entries


def _scheme_of(stored: str) -> tuple[str, bool]:
    """(scheme name, slow) for a stored hash; ValueError with the reason if it cannot be used. The reason
    never repeats the hash: it could be a plaintext password."""
    if stored.startswith(("$2y$", "$2a$", "$2b$")):
        if not _BCRYPT_SHAPE.fullmatch(stored):
            raise ValueError("malformed bcrypt hash")
        return "bcrypt", True
    if stored.startswith("{SHA}"):
        if not _SHA1_SHAPE.fullmatch(stored):
            raise ValueError("malformed {SHA} hash")
        return "sha1", False
    for prefix, (name, slow) in _LIBPASS_SCHEMES.items():
        if stored.startswith(prefix):
            try:
                parsed = _libpass_handler(name).from_string(stored)
            except ValueError:
                parsed = None
            if parsed is None or parsed.checksum is None:
                raise ValueError(f"malformed {name} hash")
            return name, slow
    if stored.startswith("$"):
        raise ValueError(f"unsupported hash scheme (not bcrypt, SHA-crypt, APR1 or {{SHA}}); {_REHASH}")
    if _DES_SHAPE.fullmatch(stored):
        raise ValueError(f"DES crypt is insecure (it reads only 8 characters of a password); {_REHASH}")
    raise ValueError(f"a plaintext password or an unknown hash scheme; {_REHASH}")


def _checker(scheme: str) -> Checker:
    if scheme == "bcrypt":
        return _bcrypt_checker()
    if scheme == "sha1":
        return _check_sha1
    handler = _libpass_handler(scheme)

    def check_libpass(password: bytes, stored: str) -> bool:
        return bool(handler.verify(password, stored))  # libpass compares with hmac.compare_digest

    return check_libpass


def _check_sha1(password: bytes, stored: str) -> bool:
    """{SHA}: base64 of the unsalted SHA-1 of the password, as `htpasswd -s` writes."""
    digest = base64.b64encode(hashlib.sha1(password).digest())
    return hmac.compare_digest(digest, stored[len("{SHA}") :].encode("ascii"))


def _bcrypt_checker() -> Checker:
    try:
        import bcrypt
    except ImportError:
        raise HtpasswdError(f"bcrypt entries need the bcrypt package: {AUTH_EXTRA}") from None

    def check_bcrypt(password: bytes, stored: str) -> bool:
        expected = stored.encode("ascii")
        computed = bcrypt.hashpw(password[:BCRYPT_MAX_PASSWORD_BYTES], expected)
        return hmac.compare_digest(computed, expected)

    return check_bcrypt


def _libpass_handler(name: str) -> _LibpassHandler:
    try:
        from passlib import hash as libpass_hash  # type: ignore[import-untyped]
    except ImportError:
        raise HtpasswdError(f"SHA-crypt and APR1 entries need the libpass package: {AUTH_EXTRA}") from None
    handler: _LibpassHandler = getattr(libpass_hash, name)
    return handler
