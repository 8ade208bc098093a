"""--baseline PATH: before and after. PATH is another checkout of ring3 (a git worktree); every scenario that
runs ring3 also runs `ring3-base`, the same command line with PATH/src first on PYTHONPATH, so that
`python -m ring3` imports the baseline's code. It is started beside the others and measured interleaved
with them, and the ratio table holds ring3 against it.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from benchkit import servers
from benchkit.servers import ServerSpec

NAME = "ring3-base"
PEER = "baseline"  # ServerSpec.peer: ring3 is compared with it, as with a peer
WHERE_FROM = "import ring3; print(ring3.__file__); print(getattr(ring3, '__version__', '?'))"


def environment(checkout: Path) -> dict[str, str]:
    """PYTHONPATH with the checkout's src/ before whatever the bench was given."""
    inherited = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(checkout / "src"), *([inherited] if inherited else [])])}


@dataclasses.dataclass(frozen=True)
class Baseline:
    checkout: Path
    package: Path  # the ring3/__init__.py that python imports with `env`
    version: str
    has_admin: bool

    @property
    def env(self) -> dict[str, str]:
        return environment(self.checkout)

    def spec_of(self, ring3: ServerSpec) -> ServerSpec:
        """ring3-base: ring3's spec, run with the baseline's code (its ledger only if it has --admin)."""
        return dataclasses.replace(ring3, name=NAME, peer=PEER, env=self.env,
                                   has_ledger=ring3.has_ledger and self.has_admin)

    def beside(self, specs: list[ServerSpec]) -> list[ServerSpec]:
        """The scenario's servers with ring3-base right after ring3 (none where ring3 does not run)."""
        return [found for spec in specs for found in ((spec, self.spec_of(spec)) if spec.name == "ring3"
                                                      else (spec,))]


def load(checkout: Path) -> Baseline:
    """The baseline at `checkout`, once it is proven that python imports ring3 from there (SystemExit
    otherwise: a baseline that is really the working tree would compare ring3 with itself)."""
    checkout = checkout.resolve()
    src = checkout / "src"
    if not (src / "ring3" / "__init__.py").is_file():
        raise SystemExit(f"bench: --baseline {checkout}: no src/ring3 there (a ring3 checkout is expected)")
    env = environment(checkout)
    out = subprocess.run([sys.executable, "-c", WHERE_FROM], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env})
    if out.returncode != 0:
        raise SystemExit(f"bench: --baseline {checkout}: importing ring3 failed: {out.stderr[-1500:]}")
    where, version = out.stdout.split("\n")[:2]
    package = Path(where).resolve()
    if not package.is_relative_to(src):
        raise SystemExit(f"bench: --baseline {checkout}: python imports ring3 from {package}, not from {src}")
    return Baseline(checkout, package, version, servers.ring3_has_admin(env))


PURE = "ring3-pure"  # --pure: ring3 run from its .py files (RING3_PURE=1) beside the compiled build


def with_pure(specs: list[ServerSpec]) -> list[ServerSpec]:
    """The scenario's servers with ring3-pure right after ring3: the same command, RING3_PURE=1."""
    return [found for spec in specs for found in (
        (spec, dataclasses.replace(spec, name=PURE, peer=PEER, env={**spec.env, "RING3_PURE": "1"}))
        if spec.name == "ring3" else (spec,))]
