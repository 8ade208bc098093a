"""The project's promises about itself: exports, generated docs, the two-command quick start."""

from __future__ import annotations

import ast
import importlib.machinery
import re
from pathlib import Path

import ring3
from ring3.config.reference import markdown

ROOT = Path(__file__).resolve().parent.parent


def test_public_api_is_pinned() -> None:
    assert sorted(ring3.__all__) == [
        "Config", "ConfigError", "FileRange", "Request", "RequestData", "RequestEnded",
        "RequestRejected", "Response", "Server", "__version__", "build_config", "serve",
    ]
    for name in ring3.__all__:
        assert hasattr(ring3, name)


def test_config_reference_is_generated_from_the_schema() -> None:
    checked_in = (ROOT / "docs" / "reference" / "config.md").read_text()
    assert checked_in == markdown(), "run: python -m ring3.config.reference > docs/reference/config.md"


def test_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```(?:sh|bash|shell)?\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    assert "ring3 serve" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].strip() in ci.replace("exec ", "")


def test_package_ships_py_typed_and_the_demo_site() -> None:
    package = Path(ring3.__file__).parent
    assert (package / "py.typed").exists()
    for name in ("index.html", "style.css", "ring3.svg", "docs/index.html"):
        assert (package / "demo" / name).is_file()


def test_no_interpreted_class_inherits_a_compiled_one() -> None:
    """mypyc's classes cannot be subclassed by interpreted ones (TypeError at class creation, in the
    compiled build only): every subclass of a class of ring3.compiled.MODULES, in src/ or tests/, must be
    compiled too. By name, over the source: a base named as any compiled class counts."""
    from ring3.compiled import MODULES

    classes: dict[str, set[str]] = {}
    open_to_subclasses: set[str] = set()  # @mypyc_attr(allow_interpreted_subclasses=True)
    found: list[tuple[str, str, list[str]]] = []
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        module = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts) if path.is_relative_to(
            ROOT / "src") else str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, set()).add(module)
                found.append((module, node.name, [ast.unparse(base).split(".")[-1] for base in node.bases]))
                if any(isinstance(d, ast.Call) and ast.unparse(d.func).endswith("mypyc_attr")
                       and any(k.arg == "allow_interpreted_subclasses" and ast.unparse(k.value) == "True"
                               for k in d.keywords) for d in node.decorator_list):
                    open_to_subclasses.add(node.name)
    assert classes.get("OutputPath") == {"ring3.output"}  # the walk saw the source
    assert {"PushedBody", "RequestBody"} <= open_to_subclasses  # the walk saw the decorators
    wrong = [f"{module}.{name}({base})" for module, name, bases in found for base in bases
             if module not in MODULES and classes.get(base, set()) & set(MODULES)
             and base not in open_to_subclasses]
    assert not wrong


def test_every_extension_beside_the_source_is_a_compiled_module() -> None:
    """An extension module left beside src/ring3's source by an older build (a module since taken out of
    MODULES) would be imported in place of its .py file: none may exist."""
    from ring3.compiled import MODULES

    found = set()
    for path in (ROOT / "src" / "ring3").rglob("*.so"):
        suffix = max((s for s in importlib.machinery.EXTENSION_SUFFIXES if path.name.endswith(s)), key=len)
        found.add(".".join(path.relative_to(ROOT / "src").parts)[: -len(suffix)])
    assert found <= set(MODULES), found - set(MODULES)
