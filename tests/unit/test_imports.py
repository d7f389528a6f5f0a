"""DESIGN.md's direction of imports, enforced by walking every module's import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "silo"

# layer -> layers it may never import
FORBIDDEN: dict[str, set[str]] = {
    "types": {"*"},
    "errors": {"*"},
    "jail": {"*"},
    "runtimes": {"*"},
    "store": {"control", "api", "router", "sandbox", "cli", "runtime_api"},
    "control": {"api", "cli", "sandbox", "runtime_api"},
    "router": {"api", "control", "cli", "store"},
    "sandbox": {"router", "control", "api", "cli", "store", "runtime_api"},
    "runtime_api": {"router", "control", "api", "cli", "store", "sandbox"},
    "telemetry": {"router", "control", "api", "cli", "sandbox"},
    "api": {"cli", "store", "sandbox"},
    # The async dispatcher drives the router like the api does, and is driven by it, never the reverse.
    "events": {"api", "cli", "sandbox", "runtime_api", "jail"},
    # Credential vending serves the router (which hands it to environments) and the api (the key set); it
    # knows neither, nor the sandboxes or the Runtime API it is served through.
    "credentials": {"api", "cli", "control", "router", "sandbox", "runtime_api", "events"},
}
# Modules that wire everything together are allowed to see every layer.
WIRING = {"silo.cli.serve", "silo.__main__"}
SELF_CONTAINED = {"jail", "runtimes"}  # may import only themselves


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [name for name in found if name == "silo" or name.startswith("silo.")]


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out.append((".".join(rel.parts).removesuffix(".__init__"), path))
    return out


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_imports_point_one_way(module: str, path: Path) -> None:
    if module in WIRING:
        return
    layer = _layer(module.removesuffix(".py"))
    forbidden = FORBIDDEN.get(layer, set())
    for imported in _imports(path):
        target = _layer(imported)
        if target == layer:
            continue
        if "*" in forbidden or (layer in SELF_CONTAINED):
            pytest.fail(f"{module} imports {imported}, but the {layer} layer must import nothing of silo")
        assert target not in forbidden, f"{module} imports {imported}: {layer} must never import {target}"


def test_the_walk_sees_the_layers() -> None:
    layers = {_layer(m) for m, _ in _modules()}
    assert {"api", "router", "sandbox", "runtime_api", "control", "store"} <= layers
