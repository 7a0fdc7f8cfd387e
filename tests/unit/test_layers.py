"""The package layers, checked from the source's own imports (no import is run).

``core`` is pure: the standard library and ``hacontrol.core`` only. ``io`` and
``config`` stand on ``core``; ``service`` and ``cli`` on everything. Only ``testing``
and ``cli`` (the local demo cluster) may import ``testing``. No module imports
itself back through others: no cycles.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hacontrol"
# Shared leaves every layer may use.
LEAVES = ("hacontrol.redact", "hacontrol.resilience")
# What each layer may import from hacontrol (besides itself and the leaves).
ALLOWED: dict[str, tuple[str, ...]] = {
    "hacontrol.core": (),
    "hacontrol.resilience": (),
    "hacontrol.redact": (),
    "hacontrol.io": ("hacontrol.core",),
    "hacontrol.config": ("hacontrol.core", "hacontrol.io"),
    "hacontrol.service": ("hacontrol.core", "hacontrol.io", "hacontrol.config"),
    "hacontrol.cli": ("hacontrol.core", "hacontrol.io", "hacontrol.config", "hacontrol.service",
                      "hacontrol.testing"),
    "hacontrol.testing": ("hacontrol.core", "hacontrol.io", "hacontrol.config",
                          "hacontrol.service", "hacontrol.cli"),
}
# The old paths kept for one release: thin re-exports of the new ones.
SHIMS = {"hacontrol.decide", "hacontrol.model", "hacontrol.state", "hacontrol.actions"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str) -> Iterator[tuple[str, int]]:
    """Every module ``path`` imports (absolute, resolved), with its line."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:
                # ``from hacontrol.io import steps`` imports a module too.
                yield f"{base}.{alias.name}", node.lineno


def layer_of(name: str) -> str:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if name == layer or name.startswith(layer + "."):
            return layer
    return name


def violations() -> list[str]:
    known = modules()
    found: list[str] = []
    for name, path in known.items():
        if name in SHIMS or name in ("hacontrol", "hacontrol.__main__"):
            continue
        layer = layer_of(name)
        for target, line in imports(path, name):
            top = target.split(".")[0]
            if layer == "hacontrol.core" and top != "hacontrol" and top not in (
                sys.stdlib_module_names
            ):
                found.append(f"{path.relative_to(ROOT)}:{line}: core imports {target}")
                continue
            if top != "hacontrol" or target == "hacontrol":
                continue
            if target not in known and target.rpartition(".")[0] in known:
                target = target.rpartition(".")[0]  # a name from a module, not a module
            if target == "hacontrol":
                continue  # the version
            other = layer_of(target)
            if other == layer or (other in LEAVES and layer != "hacontrol.core"):
                continue
            if target in SHIMS or other not in ALLOWED.get(layer, ()):
                found.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {target}")
    return sorted(set(found))


def cycles() -> list[list[str]]:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, _ in imports(path, name):
            if target in known and target != name:
                graph[name].add(target)
            elif target.rpartition(".")[0] in known and target.rpartition(".")[0] != name:
                graph[name].add(target.rpartition(".")[0])
    # A package's ``__init__`` re-exporting its modules is not a cycle of design.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_every_module_imports_only_from_the_layers_below() -> None:
    assert violations() == []


def test_no_import_cycles() -> None:
    assert cycles() == []


def test_the_check_sees_a_violation_and_a_cycle(tmp_path: Path) -> None:
    core = tmp_path / "m.py"
    core.write_text("import psycopg\nfrom hacontrol.io import steps\n")
    assert [t for t, _ in imports(core, "hacontrol.core.m")] == [
        "psycopg", "hacontrol.io", "hacontrol.io.steps"]
    assert layer_of("hacontrol.core.decide") == "hacontrol.core"
    assert "hacontrol.testing" not in ALLOWED["hacontrol.service"]
