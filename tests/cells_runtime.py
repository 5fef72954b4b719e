"""Run the chapters' `{cell}`s in CPython under the numpy that readers get in Pyodide.

Readers run the cells in Pyodide 0.27.7, whose numpy is 2.0.2; the book's own virtualenv has
a newer numpy (requirements/base.txt). Running the cells with the venv's numpy would test a
library the reader never gets: a function added after 2.0, a changed default or a changed
printout would pass here and break in the page. So the cells run in a child Python whose
`numpy` is the pinned 2.0.2 from `.venv/cells-numpy/` (requirements/cells.txt, installed by
`scripts/setup python --test`), next to our `calculators` and static/py/loralab_cells.py,
as in the page (tests/app/test_cells_execute.py checks that cells import nothing else).

Two differences remain and are checked elsewhere: CPython 3.11+ here against Pyodide's 3.12
in WebAssembly, and a different BLAS under numpy. tests/browser/test_cells.py runs every
cell in the real page and compares its visible output with this run, line by line.

`_child()` is the child: it reads {"cells": [...]} on stdin, runs them in one namespace like
the page's shared interpreter, and writes what each showed as JSON to stdout.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HELPERS = PROJECT_ROOT / "static" / "py" / "loralab_cells.py"
CELLS_REQUIREMENTS = PROJECT_ROOT / "requirements" / "cells.txt"
CELLS_NUMPY = Path(sys.prefix) / "cells-numpy"  # inside the virtualenv that runs the tests
PYODIDE_LOCKS = (
    PROJECT_ROOT / "static" / "vendor" / "pyodide" / "pyodide-lock.json",  # what the page loads
    PROJECT_ROOT / "node_modules" / "pyodide" / "pyodide-lock.json",  # the official lock it comes from
)


@dataclass(frozen=True)
class CellRun:
    """What one cell showed: its printed text, its figures (plain dicts) and, if it raised, the traceback."""

    stdout: str
    figures: list[dict] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class ChapterRun:
    numpy_version: str
    numpy_file: str
    cells: list[CellRun]


def pinned_numpy() -> str:
    """The numpy version in requirements/cells.txt."""
    for line in CELLS_REQUIREMENTS.read_text().splitlines():
        if line.startswith("numpy=="):
            return line.removeprefix("numpy==").strip()
    raise AssertionError(f"{CELLS_REQUIREMENTS.name} pins no numpy")


def pyodide_numpy() -> str | None:
    """The numpy version Pyodide serves to the page (None when the assets are not set up)."""
    for lock in PYODIDE_LOCKS:
        if lock.exists():
            return json.loads(lock.read_text())["packages"]["numpy"]["version"]
    return None


def cells_numpy_missing() -> str | None:
    """Why the pinned numpy cannot be used, or None when it is in place."""
    if not (CELLS_NUMPY / f"numpy-{pinned_numpy()}.dist-info").is_dir():
        return f"numpy {pinned_numpy()} for the cells is not in {CELLS_NUMPY}; run `scripts/setup python --test`"
    return None


def run_cells(cells: list[str] | tuple[str, ...]) -> ChapterRun:
    """Run one page's cells, in order, in a child Python with the pinned numpy."""
    missing = cells_numpy_missing()
    if missing:
        raise RuntimeError(missing)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CELLS_NUMPY), str(PROJECT_ROOT)])}
    env.pop("PYTHONHOME", None)
    done = subprocess.run(
        [sys.executable, "-X", "utf8", "-c", "from tests.cells_runtime import _child; _child()"],
        input=json.dumps({"cells": list(cells)}),
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the cell runner failed ({done.returncode}):\n{done.stderr}")
    result = json.loads(done.stdout)
    return ChapterRun(result["numpy"], result["numpy_file"], [CellRun(**cell) for cell in result["cells"]])


@lru_cache(maxsize=None)
def chapter_run(label: str) -> ChapterRun:
    """The CPython run of one chapter's cells, once per test session (both cell test files use it)."""
    return run_cells(tuple(chapter_cells()[label]))


@lru_cache(maxsize=1)
def chapter_cells() -> dict[str, list[str]]:
    """{chapter label: its cells' sources}, for every chapter that has cells, in book order."""
    from app.main import create_app

    return {c.meta.label: list(c.cells) for c in create_app().state.library().chapters if c.cells}


# ------------------------------------------------------------------------------------ the child


def _load_helpers():
    spec = importlib.util.spec_from_file_location("loralab_cells", HELPERS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["loralab_cells"] = module  # as in the page, where `import loralab_cells` works
    spec.loader.exec_module(module)
    return module


def _run_like_the_page(source: str, filename: str, namespace: dict) -> None:
    """exec the cell; a final expression's value is printed, as the page's runner (eval_code_async) does."""
    tree = ast.parse(source, filename)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, filename, "exec"), namespace)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), filename, "eval"), namespace)
        if value is not None:
            print(repr(value))


def _child() -> None:
    request = json.load(sys.stdin)
    import numpy  # the pinned one: PYTHONPATH puts it before the virtualenv's

    helpers = _load_helpers()
    recorded: list[str] = []
    helpers.sink = recorded.append
    namespace = {"__name__": "__main__", "plot": helpers.plot, "plot_xy": helpers.plot_xy, "check": helpers.check}
    runs = []
    for i, source in enumerate(request["cells"], start=1):
        out = io.StringIO()
        recorded.clear()
        error = None
        with contextlib.redirect_stdout(out):
            try:
                _run_like_the_page(source, f"<cell {i}>", namespace)
            except Exception:
                error = traceback.format_exc()
        runs.append({"stdout": out.getvalue(), "figures": [json.loads(f) for f in recorded], "error": error})
        if error:
            break  # later cells may depend on this one, as in the page
    json.dump({"numpy": numpy.__version__, "numpy_file": numpy.__file__, "cells": runs}, sys.stdout)

