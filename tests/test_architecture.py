"""The layering of the packages, read from every module's imports (function-level ones included).

Imports point down only: ``train`` -> ``agents`` -> ``arkd_env``; ``arkd_env.losses`` imports only torch and
the standard library, so the divergences can be lifted into any training loop.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"arkd_env": 0, "agents": 1, "train": 2}


def imported_modules(source: str, package: str) -> list[str]:
    """Absolute module names imported anywhere in ``source``, a module of ``package`` (relative imports
    resolved against it)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            if node.module:
                found.append(".".join([*base, node.module]))
            else:  # from . import x: x is a module of the package
                found += [".".join([*base, alias.name]) for alias in node.names]
    return found


def module_imports(path: Path) -> list[str]:
    return imported_modules(path.read_text(encoding="utf-8"),
                            ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1]))


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def upward_imports(names: list[str], package: str) -> list[str]:
    layer = LAYERS[package.split(".")[0]]
    return [name for name in names if LAYERS.get(name.split(".")[0], -1) > layer]


@pytest.mark.parametrize("package", list(LAYERS))
def test_no_import_points_up(package: str) -> None:
    bad = {str(p.relative_to(ROOT)): up for p in sources(package) if (up := upward_imports(module_imports(p), package))}
    assert bad == {}


def test_losses_import_only_torch_and_the_standard_library() -> None:
    allowed = {"torch", "__future__", "arkd_env"}
    bad = {}
    for path in sources("arkd_env/losses"):
        names = [n for n in module_imports(path)
                 if n.split(".")[0] not in allowed | set(sys.stdlib_module_names)
                 or (n.startswith("arkd_env") and not n.startswith("arkd_env.losses"))]
        if names:
            bad[str(path.relative_to(ROOT))] = names
    assert sources("arkd_env/losses") and bad == {}


def test_the_check_sees_upward_and_relative_imports() -> None:
    source = "def f():\n    from train.cli import main\n    from . import engine\n    from ..agents import x\n"
    names = imported_modules(source, "arkd_env.env")
    assert names == ["train.cli", "arkd_env.env.engine", "arkd_env.agents"]
    assert upward_imports(names, "arkd_env") == ["train.cli"]
    assert upward_imports(["agents.registry", "arkd_env.engine"], "arkd_env") == ["agents.registry"]
