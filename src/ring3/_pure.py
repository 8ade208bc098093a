"""RING3_PURE=1: ring3's modules imported from their .py files even where compiled ones sit beside them
(ring3.compiled). ring3/__init__.py imports this module before any other ring3 module, and importing it
installs the finder if the variable is set."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType

_SOURCE = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)


class SourceOnlyFinder(importlib.abc.MetaPathFinder):
    """Finds ring3's submodules by their source files alone (no extension modules)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("ring3.") or not path:
            return None
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, _SOURCE).find_spec(fullname, target)
            if spec is not None:
                return spec
        return None


def install() -> None:
    if not any(isinstance(finder, SourceOnlyFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, SourceOnlyFinder())


if os.environ.get("RING3_PURE", "") not in ("", "0"):
    install()
