"""One set of TLS session ticket keys for every worker, so that a client resumes its session on whichever
worker its next connection reaches.

OpenSSL draws random ticket keys for each context, and each worker is a process of its own; the master
draws the keys once and hands them to each worker over its control socket (never in the environment,
which other processes of the same user can read). Python's ssl module has no call for them, so they are
set with SSL_CTX_ctrl(SSL_CTRL_SET_TLSEXT_TICKET_KEYS) through ctypes, on the SSL_CTX each
SSLContext holds; the pointer is checked (the context's options read through it must be the ones
Python reports) before anything is written through it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import ssl
from collections.abc import Iterable

logger = logging.getLogger("ring3.error")

KEYS_LENGTH = 80  # a name (16 bytes), an HMAC secret (32) and an AES key (32)
_SET_KEYS, _GET_KEYS = 59, 58  # SSL_CTRL_SET_TLSEXT_TICKET_KEYS, SSL_CTRL_GET_TLSEXT_TICKET_KEYS


def new_keys() -> bytes:
    return os.urandom(KEYS_LENGTH)


def _library() -> ctypes.CDLL:
    import _ssl

    library = ctypes.CDLL(_ssl.__file__)  # its symbols and libssl's, which it links
    library.SSL_CTX_get_options.restype = ctypes.c_uint64
    library.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    library.SSL_CTX_ctrl.restype = ctypes.c_long
    library.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    return library


def _ssl_ctx(library: ctypes.CDLL, context: ssl.SSLContext) -> int | None:
    """The SSL_CTX pointer of a context: the first field after the object's header, if it proves to be."""
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or library.SSL_CTX_get_options(pointer) != int(context.options):
        return None
    return int(pointer)


def share(contexts: Iterable[ssl.SSLContext], keys: bytes) -> bool:
    """Give every context these ticket keys; False (with a warning) where that cannot be done."""
    if len(keys) != KEYS_LENGTH:
        raise ValueError(f"ticket keys are {KEYS_LENGTH} bytes")
    try:
        library = _library()
    except (OSError, AttributeError, ImportError) as exc:
        logger.warning("TLS ticket keys are not shared by the workers (%s): sessions resume only on the "
                       "worker that issued them", exc)
        return False
    buffer = ctypes.create_string_buffer(keys, KEYS_LENGTH)
    for context in contexts:
        pointer = _ssl_ctx(library, context)
        if pointer is None or library.SSL_CTX_ctrl(pointer, _SET_KEYS, KEYS_LENGTH, buffer) != 1:
            logger.warning("TLS ticket keys are not shared by the workers: sessions resume only on the "
                           "worker that issued them")
            return False
    return True


def current(context: ssl.SSLContext) -> bytes | None:
    """A context's ticket keys (for tests)."""
    library = _library()
    pointer = _ssl_ctx(library, context)
    buffer = ctypes.create_string_buffer(KEYS_LENGTH)
    if pointer is None or library.SSL_CTX_ctrl(pointer, _GET_KEYS, KEYS_LENGTH, buffer) != 1:
        return None
    return buffer.raw
