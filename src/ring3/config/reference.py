"""The config reference page (docs/reference/config.md), generated from the schema.

Run `python -m ring3.config.reference > docs/reference/config.md`; a test keeps the checked-in page equal
to this output.
"""

from __future__ import annotations

import dataclasses
import types
import typing

from ring3.config.schema import SECTIONS, flag_name
from ring3.config.site_schema import (
    HANDLER_KEYS,
    NESTED_IN,
    STATIC_KEYS,
    TABLES,
    LocationSpec,
    Pairs,
    SiteSpec,
)

_UNITS = {"bytes": "bytes (or '16k', '1m')", "seconds": "seconds (or '500ms', '10s')", "": ""}

# SiteSpec fields the loader fills itself rather than from a key of that name.
_NOT_KEYS = ("defaults", "locations")

# Keys the loader (site_loader.py) refuses to go without, whatever their field's default.
_REQUIRED = {
    ("SiteSpec", "hosts"),
    ("LocationSpec", "path"),
    ("AuthSpec", "htpasswd"),
    ("RateLimitSpec", "rate"),
    ("SiteTLSSpec", "cert"),
    ("SiteTLSSpec", "key"),
    ("ProxySpec", "upstreams"),
}


def _type_name(type_: typing.Any) -> str:
    if typing.get_origin(type_) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(type_) if a is not type(None)]
        if len(args) == 1:
            type_ = args[0]
    if type_ == Pairs:
        return "table of strings"
    if dataclasses.is_dataclass(type_):
        return "string (a URL) or table" if getattr(type_, "__name__", "") == "ProxySpec" else "table"
    if typing.get_origin(type_) is tuple:
        return "list of strings"
    names: dict[typing.Any, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return names[type_]


def _default(value: typing.Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _key(cls: type[typing.Any], f: dataclasses.Field[typing.Any], heading: str,
         hints: dict[str, typing.Any], *, flag: bool) -> list[str]:
    """One key's entry: its doc string, type, default (or that it is required), flag and checks."""
    meta = f.metadata
    unit = _UNITS[meta.get("unit", "")]
    lines = [f"### `{heading}`", "", str(meta["doc"]), ""]
    lines.append(f"- type: {_type_name(hints[f.name])}" + (f", in {unit}" if unit else ""))
    if (cls.__name__, f.name) in _REQUIRED:
        lines.append("- required")
    elif f.default is None:
        lines.append("- default: not set")
    else:
        lines.append(f"- default: `{_default(f.default)}`")
    if flag:
        lines.append(f"- flag: `{flag_name(f.name, meta)}`")
    if meta.get("choices"):
        lines.append("- one of: " + ", ".join(f"`{c}`" for c in meta["choices"]))
    if meta.get("minimum") is not None:
        lines.append(f"- at least: {meta['minimum']}")
    lines.append("")
    return lines


def _doc(cls: type[typing.Any]) -> str:
    return " ".join((cls.__doc__ or "").split())


def _site_sections() -> list[str]:
    site_hints = typing.get_type_hints(SiteSpec)
    location_hints = typing.get_type_hints(LocationSpec)
    location_keys = {f.name for f in dataclasses.fields(LocationSpec)}
    lines = [
        "## [[site]]",
        "",
        _doc(SiteSpec),
        "",
        "Site keys have no command-line flag. Besides the keys below, every `[[site.location]]` key but",
        "`path` may be given at site level: a handler there (root, alias, app, redirect, respond) serves",
        "the site's '/' unless a location has the path '/', the rules and static keys are inherited by",
        "every location that does not set them, and a site-level rewrite runs before a location is",
        "chosen. How-tos: [virtual hosts](../how-to/virtual-hosts.md),",
        "[locations](../how-to/locations.md).",
        "",
    ]
    for f in dataclasses.fields(SiteSpec):
        if f.name not in _NOT_KEYS:
            lines += _key(SiteSpec, f, f.name, site_hints, flag=False)
    from ring3.sites.build import RULE_KEYS

    lines += [
        "## [[site.location]]",
        "",
        _doc(LocationSpec),
        "",
        "A key shown as not set takes its site's value where there is one: the rules ("
        + ", ".join(RULE_KEYS) + ") and static keys (" + ", ".join(STATIC_KEYS) + ") each on its own, the "
        "handler (" + ", ".join(HANDLER_KEYS) + ", with status) only when the location names none. A "
        "site-level rewrite is not copied into locations: it runs before a location is chosen.",
        "",
    ]
    for f in dataclasses.fields(LocationSpec):
        lines += _key(LocationSpec, f, f.name, location_hints, flag=False)
    for table_key, table_cls in TABLES.items():
        where = ("a `[[site.location]]` key (or one at site level)" if table_key in location_keys
                 else f"within `{NESTED_IN[table_key]}`" if table_key in NESTED_IN else "a `[[site]]` key")
        heading = f"{NESTED_IN[table_key]}.{table_key}" if table_key in NESTED_IN else table_key
        lines += [f"## {heading}", "", _doc(table_cls), "", f"A table: {where}.", ""]
        hints = typing.get_type_hints(table_cls)
        for f in dataclasses.fields(table_cls):
            lines += _key(table_cls, f, f"{heading}.{f.name}", hints, flag=False)
    return lines


def markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/ring3/config/schema.py` and `src/ring3/config/site_schema.py` by",
        "`python -m ring3.config.reference`; do not edit.",
        "",
        "Every key of the flat sections can be set in the TOML file given with `--config FILE` (in its",
        "`[section]`) or with its command-line flag, which wins over the file. The `[[site]]` tables",
        "(virtual hosts and their locations, after the flat sections) exist only in the file. Unknown",
        "keys and bad values stop ring3 at start with exit code 2, naming the file, the key and the",
        "reason.",
        "",
    ]
    for section_name, section_cls in SECTIONS.items():
        lines += [f"## [{section_name}]", "", (section_cls.__doc__ or "").strip(), ""]
        hints = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            lines += _key(section_cls, f, f.name, hints, flag=True)
    lines += _site_sections()
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
