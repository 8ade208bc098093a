"""Which of ring3's modules the build compiles with mypyc, and which of them this process runs compiled.

The hot path (the HTTP/1.1 connection and parser glue, the output path, the exchange layer, the ASGI
handler) is compiled where the install found a C compiler: the same source, built by mypyc into C
extensions that sit beside the .py files and are imported in their place. Everywhere else, and with
RING3_PURE=1 in the environment, the .py files run: the same behaviour, slower (the test suite runs
against both). setup.py reads MODULES from this file without importing ring3.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os

# The modules mypyc compiles, as dotted names (setup.py turns them into src/ paths). A path is compiled
# whole: compiled code reaching into interpreted objects (and the reverse) is slower than either alone
# (docs/discussion/design.md). No interpreted class may inherit from a class of these (test_project).
MODULES = (
    # the accept loop and an HTTP/1.1 connection's request, answer and close
    "ring3.server",
    "ring3.http1.connection",
    "ring3.http1.parser",
    "ring3.http1.serialize",
    "ring3.http1.replaying",
    "ring3.http1.closing",
    "ring3.http1.writers",
    "ring3.http1.timeouts",
    "ring3.replay",
    "ring3.timers",
    "ring3.observe.ledger",
    # what the protocols and handlers exchange: requests, responses, request bodies
    "ring3.events",
    "ring3.body",
    # the exchange layer and the output path, for every protocol
    "ring3.exchange",
    "ring3.output",
    "ring3.transport.tls_stream",
    "ring3.http2.stream",
    # applications
    "ring3.eager",
    "ring3.handlers.asgi",
    "ring3.websocket.asgi",
)

PURE_VARIABLE = "RING3_PURE"


def pure_requested() -> bool:
    """RING3_PURE=1 (any value but empty or 0): run every module from its source."""
    return os.environ.get(PURE_VARIABLE, "") not in ("", "0")


def compiled_modules() -> list[str]:
    """The modules of MODULES that this process imports (or would import) as C extensions."""
    found = []
    for name in MODULES:
        spec = importlib.util.find_spec(name)
        if spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            found.append(name)
    return found


def describe() -> str:
    """What `ring3 --version` says of the build: compiled (and how much of it), or pure Python."""
    done = compiled_modules()
    if not done:
        return "pure Python" + (f", {PURE_VARIABLE} set" if pure_requested() else "")
    return f"compiled: mypyc, {len(done)} of {len(MODULES)} hot-path modules"
