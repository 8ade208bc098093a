"""The config reference page (docs/reference/config.md), generated from the schema.

Run `python -m ring3.config.reference > docs/reference/config.md`; a test keeps the checked-in page equal
to this output.
"""

from __future__ import annotations

import dataclasses
import typing

from ring3.config.schema import SECTIONS, flag_name

_UNITS = {"bytes": "bytes (or '16k', '1m')", "seconds": "seconds (or '500ms', '10s')", "": ""}


def _type_name(type_: typing.Any) -> str:
    if typing.get_origin(type_) is tuple:
        return "list of strings"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[type_]


def _default(value: typing.Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/ring3/config/schema.py` by `python -m ring3.config.reference`; do not edit.",
        "",
        "Every key can be set in the TOML file given with `--config FILE` (in its `[section]`) or with",
        "its command-line flag, which wins over the file. Unknown keys and bad values stop ring3 at",
        "start with exit code 2, naming the file, the key and the reason.",
        "",
    ]
    for section_name, section_cls in SECTIONS.items():
        lines += [f"## [{section_name}]", "", (section_cls.__doc__ or "").strip(), ""]
        types = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            meta = f.metadata
            type_text = _type_name(types[f.name])
            unit = _UNITS[meta.get("unit", "")]
            lines.append(f"### `{f.name}`")
            lines.append("")
            lines.append(str(meta["doc"]))
            lines.append("")
            lines.append(f"- type: {type_text}" + (f", in {unit}" if unit else ""))
            lines.append(f"- default: `{_default(f.default)}`")
            lines.append(f"- flag: `{flag_name(f.name, meta)}`")
            if meta.get("choices"):
                lines.append("- one of: " + ", ".join(f"`{c}`" for c in meta["choices"]))
            if meta.get("minimum") is not None:
                lines.append(f"- at least: {meta['minimum']}")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
