"""The sites scenarios' virtual hosts: 100 sites of 20 locations each, a 1 KiB file behind every location,
the TOML config that routes to them, and the (Host, path) lists that bench/wrk/targets.lua cycles through.

Everything is made in the run's work folder: `sites/s{N}/` holds site N's files; the same tree served as
one root (ring3-single) reaches each of those files as `/s{N}/...`, so both servers answer the same 2000
files and differ only in how a request finds its file. Each site's locations mirror a realistic config:
`/` and prefixes with root (three nested one level down), two prefixes with alias, a `^~` prefix with alias,
an exact path and two regexes (`~` and `~*`), which every request that ends on a plain prefix also tries.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from benchkit.scenarios import KIB

SITES = 100
FILE = "1k.bin"
HOT_SITE = 50  # sites-hot-1k's file: site 50's /p3/1k.bin
HOT_PATH = "p3/1k.bin"
SHUFFLE_SEED = 3  # the same order of requests in both lists, and in every run
TREE = "sites"
CONFIG = "sites.toml"
SITES_TARGETS = "sites-targets.txt"  # "HOST PATH" lines: 100 hosts x 20 locations
SINGLE_TARGETS = "sites-single-targets.txt"  # "PATH" lines: the same files under one root


@dataclass(frozen=True)
class Location:
    """One [[site.location]]: its path pattern, root or alias (a folder of the site's, relative), and the
    request path that reaches its file (and the file's path in the site's folder)."""

    pattern: str
    request: str
    file: str  # relative to the site's folder
    alias: str = ""  # the site's folder holding the file, for an alias location

    def toml(self, site_dir: Path) -> str:
        handler = (f"alias = {_string(str(site_dir / self.alias) + '/')}" if self.alias
                   else f"root = {_string(str(site_dir))}")
        return f"  [[site.location]]\n  path = {_string(self.pattern)}\n  {handler}\n"


def _string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text)


def _prefix(path: str) -> Location:
    return Location(path, f"{path}{FILE}", f"{path[1:]}{FILE}")


LOCATIONS = (
    _prefix("/"),
    *(_prefix(f"/p{n}/") for n in range(1, 11)),
    *(_prefix(f"/p1/n{n}/") for n in range(1, 4)),  # nested: the longest prefix wins
    *(Location(f"/a{n}/", f"/a{n}/{FILE}", f"alias{n}/{FILE}", alias=f"alias{n}") for n in (1, 2)),
    Location("^~ /assets/", f"/assets/{FILE}", f"static/{FILE}", alias="static"),
    Location(f"= /e/{FILE}", f"/e/{FILE}", f"e/{FILE}"),
    Location(r"~ ^/r1/[a-z0-9]+\.bin$", f"/r1/{FILE}", f"r1/{FILE}"),
    Location(r"~* ^/r2/.+\.(bin|dat)$", f"/r2/{FILE}", f"r2/{FILE}"),
)
assert len(LOCATIONS) == 20


def host(site: int) -> str:
    return f"s{site}.test"


def tree(work: Path) -> Path:
    """The folder of every site's folder: ring3-single's root."""
    return work / TREE


def config_file(work: Path) -> Path:
    return work / CONFIG


def make_sites(work: Path) -> None:
    """The files (random bytes, as the bench site's), the config and both request lists, once per run."""
    root = tree(work)
    pairs = []
    lines = []
    for site in range(SITES):
        site_dir = root / f"s{site}"
        lines += [f"[[site]]\nhosts = [{_string(host(site))}, {_string('www.' + host(site))}]\n"]
        for location in LOCATIONS:
            path = site_dir / location.file
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_bytes(os.urandom(KIB))
            lines.append(location.toml(site_dir))
            pairs.append((site, location))
    config_file(work).write_text("# Written by bench/benchkit/sites.py.\n" + "\n".join(lines))
    random.Random(SHUFFLE_SEED).shuffle(pairs)
    (work / SITES_TARGETS).write_text("".join(f"{host(site)} {loc.request}\n" for site, loc in pairs))
    (work / SINGLE_TARGETS).write_text("".join(f"/s{site}/{loc.file}\n" for site, loc in pairs))
