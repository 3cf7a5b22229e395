"""The layers of scilens import only downwards (DEVELOPERS.md, "The layers").

core < io < synth < vision < the studies (neuro, astro, diagnosis, glaucoma, guarantees, masks, assertions:
independent of each other) < jobs < cli < demos. Every import counts, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import scilens

PACKAGE = Path(scilens.__file__).parent
RANK = {"core": 0, "io": 1, "synth": 2, "vision": 3, "neuro": 4, "astro": 4, "diagnosis": 4, "glaucoma": 4,
        "guarantees": 4, "masks": 4, "assertions": 4,
        "jobs": 5, "cli": 6, "demos": 7}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "scilens" and parts[1] in RANK else None


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_every_layer_has_a_rank():
    packages = {p.stem for p in PACKAGE.iterdir() if (p.is_dir() and (p / "__init__.py").exists())
                or (p.suffix == ".py" and p.stem != "__init__")}
    assert packages == set(RANK), "a new package needs its place in RANK and in DEVELOPERS.md"


def test_imports_run_only_down_the_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if layer not in RANK:
            continue
        for module in sorted(_imports(path)):
            other = _layer(module)
            if other is None or other == layer:
                continue
            if RANK[other] > RANK[layer] or (RANK[other] == RANK[layer] == RANK["neuro"]):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, "imports running up or across the layers:\n" + "\n".join(sorted(set(wrong)))
