"""Builds ring3's hot path with mypyc where a C compiler is present (ring3.compiled); pure Python
otherwise, or with RING3_COMPILE=0. Everything else about the package is in pyproject.toml."""

from __future__ import annotations

import ast
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from setuptools import setup

HERE = Path(__file__).parent
# Third-party packages the compiled modules reach are not installed while the package builds: mypyc
# treats their objects as opaque, and strictness about them is mypy's job in the test run.
MYPYC_OPTIONS = ["--ignore-missing-imports", "--no-warn-return-any", "--no-warn-unused-ignores",
                 "--allow-subclassing-any", "--allow-untyped-calls"]


def compiled_module_names() -> list[str]:
    """MODULES of src/ring3/compiled.py, read without importing ring3."""
    tree = ast.parse((HERE / "src/ring3/compiled.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "MODULES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise SystemExit("src/ring3/compiled.py has no MODULES")


def why_not_compiled() -> str | None:
    if os.environ.get("RING3_COMPILE", "") == "0":
        return "RING3_COMPILE=0"
    compiler = os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python.h (the Python development headers)"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "no mypyc"
    return None


def ext_modules() -> list[Any]:
    reason = why_not_compiled()
    if reason is not None:
        print(f"ring3: building pure Python: {reason}", file=sys.stderr)
        return []
    from mypyc.build import mypycify

    paths = [f"src/{name.replace('.', '/')}.py" for name in compiled_module_names()]
    return mypycify([*MYPYC_OPTIONS, *paths], opt_level="3", debug_level="0")


setup(ext_modules=ext_modules())
