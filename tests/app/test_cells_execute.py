"""Execute every `{cell}` of every chapter in CPython, in order, one namespace per chapter.

This is d2l's "the build executes every code cell": prose cannot rot. The page runs the
same cells in Pyodide; here `plot_xy`/`plot` are the same module (static/py/loralab_cells.py)
with its `sink` set to a recorder, since drawing is the browser's job. Imports are limited
to what the browser has: the standard library, numpy and our calculators.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import sys
from pathlib import Path

import pytest

from app.main import create_app
from app.settings import PROJECT_ROOT

HELPERS = PROJECT_ROOT / "static" / "py" / "loralab_cells.py"
# What a cell may import in the browser: stdlib + the vendored packages + our own.
BROWSER_PACKAGES = {"numpy", "calculators", "micropip", "packaging", "loralab_cells", "__future__"}


def load_helpers():
    spec = importlib.util.spec_from_file_location("loralab_cells", HELPERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chapters_with_cells():
    library = create_app().state.library()
    return [chapter for chapter in library.chapters if chapter.cells]


CHAPTERS = chapters_with_cells()


def imported_top_levels(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.meta.label for c in CHAPTERS])
def test_every_cell_runs(chapter):
    helpers = load_helpers()
    recorded: list[str] = []
    helpers.sink = recorded.append
    namespace = {"__name__": "__main__", "plot": helpers.plot, "plot_xy": helpers.plot_xy}
    for i, source in enumerate(chapter.cells, start=1):
        where = f"{chapter.meta.path.name} cell {i}"
        foreign = imported_top_levels(source) - BROWSER_PACKAGES - set(sys.stdlib_module_names)
        assert not foreign, f"{where} imports {sorted(foreign)}, which the browser (Pyodide) does not have"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(source, f"<{where}>", "exec"), namespace)
            except Exception as exc:  # name the cell; keep the traceback
                raise AssertionError(f"{where} raised {type(exc).__name__}: {exc}\n--- output so far ---\n{out.getvalue()}") from exc


def test_there_are_cells_to_run():
    assert CHAPTERS, "no chapter has a {cell}; the executor would test nothing"


def test_helpers_record_plain_figures():
    helpers = load_helpers()
    recorded: list[str] = []
    helpers.sink = recorded.append
    helpers.plot_xy([1, 2, 3], [1.0, 0.1, 0.01], title="t", xlabel="r", ylabel="err", logy=True)
    helpers.plot.bar(["q", "v"], [1, 2])
    helpers.plot.hist([0.0, 0.1, 0.9, 1.0], bins=2)
    import json

    figures = [json.loads(r) for r in recorded]
    assert [f["kind"] for f in figures] == ["line", "bar", "hist"]
    assert figures[0]["layout"] == {"title": "t", "xlabel": "r", "ylabel": "err", "logy": True}
    assert figures[2]["traces"][0]["y"] == [2.0, 2.0]
    with pytest.raises(ValueError):
        helpers.plot_xy([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        helpers.plot_xy([1, 2], [1, 0], logy=True)
