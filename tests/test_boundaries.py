"""The module boundaries of DESIGN.md, enforced by reading every import (ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB_OR_TORCH = {"fastapi", "starlette", "jinja2", "jinja2_fragments", "uvicorn", "torch", "transformers", "peft", "bitsandbytes", "scipy", "pydantic"}


def imported_roots(path: Path) -> set[str]:
    """Top-level package names imported anywhere in a file (module level or not)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def module_level_roots(path: Path) -> set[str]:
    """Imports executed when the module is imported (not inside functions)."""
    roots: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", python_files("calculators"), ids=lambda p: str(p.relative_to(ROOT)))
def test_calculators_is_pure_maths(path):
    roots = imported_roots(path)
    assert not roots & WEB_OR_TORCH, f"{path.name} imports {roots & WEB_OR_TORCH}"
    assert not roots & {"app", "training"}, f"{path.name} imports our web or torch code"


@pytest.mark.parametrize("path", python_files("training"), ids=lambda p: str(p.relative_to(ROOT)))
def test_training_never_imports_the_app(path):
    roots = imported_roots(path)
    assert "app" not in roots and not roots & {"fastapi", "starlette", "jinja2"}, path.name


@pytest.mark.parametrize("path", python_files("app"), ids=lambda p: str(p.relative_to(ROOT)))
def test_app_imports_torch_lazily(path):
    """The site starts without torch work: torch and training load inside functions only."""
    roots = module_level_roots(path)
    assert not roots & {"torch", "training", "transformers", "peft"}, f"{path.name} imports {roots} at module level"


def test_calculators_package_exists():
    assert (ROOT / "calculators" / "__init__.py").exists()
