"""The decision core stays small: short functions, modules of one concern, pure imports."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "hacontrol" / "core"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500


def _functions() -> list[tuple[str, int]]:
    found = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                found.append((f"{path.name}:{node.name}", node.end_lineno - node.lineno + 1))
    return found


def test_no_core_function_is_longer_than_sixty_lines() -> None:
    functions = _functions()
    assert len(functions) > 100  # the check sees the core
    long = [(name, n) for name, n in functions if n > MAX_FUNCTION_LINES]
    assert long == []


def test_no_core_module_is_longer_than_five_hundred_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in CORE.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_the_core_imports_only_the_standard_library_and_itself() -> None:
    outside = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or name.startswith("hacontrol.core"):
                    continue
                outside.append(f"{path.name}: {name}")
    assert outside == []
