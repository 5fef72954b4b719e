"""Execute every `{cell}` of every chapter in CPython, in order, one namespace per chapter.

This is d2l's "the build executes every code cell": prose cannot rot. Every cell checks what
it shows with `check(...)` (static/py/loralab_cells.py) against `calculators` or an identity
the text states, so a cell that prints a wrong number raises here, not only one that crashes.

Which numpy: the reader's. The page runs the cells in Pyodide 0.27.7 with numpy 2.0.2, while
the book's virtualenv has a newer numpy. The cells therefore run in a child Python whose numpy
is the pinned 2.0.2 (requirements/cells.txt, installed apart into .venv/cells-numpy/ by
`scripts/setup python --test`; tests/cells_runtime.py), and a test below fails when that pin
drifts from the version in Pyodide's lock. What still differs (CPython against Pyodide's
WebAssembly build, another BLAS) is covered by tests/browser/test_cells.py, which compares
the page's visible output of every cell with this run. `plot_xy`/`plot` are the same module
as in the page, with its `sink` set to a recorder, since drawing is the browser's job.
"""

from __future__ import annotations

import ast
import io
import json
import sys
from contextlib import redirect_stdout

import pytest

from tests.cells_runtime import (
    CELLS_NUMPY,
    _load_helpers,
    cells_numpy_missing,
    chapter_cells,
    chapter_run,
    pinned_numpy,
    pyodide_numpy,
    run_cells,
)

# What a cell may import in the browser: stdlib + the vendored packages + our own.
BROWSER_PACKAGES = {"numpy", "calculators", "micropip", "packaging", "loralab_cells", "__future__"}
CHAPTERS = chapter_cells()


@pytest.fixture(scope="module", autouse=True)
def pinned_numpy_installed():
    missing = cells_numpy_missing()
    if missing:
        pytest.fail(missing)


def imported_top_levels(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_cells_run_under_the_numpy_pyodide_ships():
    served = pyodide_numpy()
    if served is None:
        pytest.fail("Pyodide is not vendored; run scripts/setup assets")
    assert pinned_numpy() == served, "requirements/cells.txt must pin the numpy in Pyodide's lock"
    run = chapter_run(next(iter(CHAPTERS)))
    assert run.numpy_version == served
    assert run.numpy_file.startswith(str(CELLS_NUMPY)), run.numpy_file  # not the virtualenv's numpy


@pytest.mark.parametrize("label", list(CHAPTERS))
def test_every_cell_runs_and_checks_what_it_shows(label):
    sources = CHAPTERS[label]
    for i, source in enumerate(sources, start=1):
        foreign = imported_top_levels(source) - BROWSER_PACKAGES - set(sys.stdlib_module_names)
        assert not foreign, f"{label} cell {i} imports {sorted(foreign)}, which the browser (Pyodide) does not have"
    run = chapter_run(label)
    for i, cell in enumerate(run.cells, start=1):
        assert cell.error is None, f"{label} cell {i} raised:\n{cell.error}\n--- output so far ---\n{cell.stdout}"
        checks = [line for line in cell.stdout.splitlines() if line.startswith("✓ ")]
        assert checks, f"{label} cell {i} checks nothing: call check(...) on what it shows\n{cell.stdout}"
    assert len(run.cells) == len(sources)


def test_there_are_cells_to_run():
    assert CHAPTERS, "no chapter has a {cell}; the executor would test nothing"


def test_a_wrong_number_stops_the_chapter_with_both_numbers():
    """The runner really reports a failed check, and later cells do not run on a broken state."""
    result = run_cells(["from calculators import scaling\ncheck('alpha/r at r=8', 16 / 4, scaling.lora_scaling(16, 8))",
                        "print('never')"])
    assert len(result.cells) == 1
    assert "CheckFailed: ✗ alpha/r at r=8: the cell computed 4, but calculators gives 2" in result.cells[0].error


def test_a_final_expression_is_shown_like_in_the_page():
    result = run_cells(["x = 41", "x + 1", "None"])
    assert [c.stdout for c in result.cells] == ["", "42\n", ""]


# ------------------------------------------------------------------------------- the helpers


def run_check(*args, **kwargs) -> str:
    helpers = _load_helpers()
    out = io.StringIO()
    with redirect_stdout(out):
        helpers.check(*args, **kwargs)
    return out.getvalue()


def test_check_prints_what_it_compared():
    assert run_check("LoRA parameters", 65_536, 65_536) == "✓ LoRA parameters: 65,536 (calculators: 65,536)\n"
    assert run_check("scale", 2.0000000001, 2.0, source="calculators.scaling") == \
        "✓ scale: 2 (calculators.scaling: 2)\n"
    assert run_check("merged == unmerged", True) == "✓ merged == unmerged\n"
    assert run_check("two", [1.0, 2.5], (1.0, 2.5)) == "✓ two: 1, 2.5 (calculators: 1, 2.5)\n"
    assert run_check("many", list(range(6)), list(range(6))) == "✓ many: all 6 values match calculators\n"


def test_check_raises_naming_both_numbers():
    helpers = _load_helpers()
    with pytest.raises(helpers.CheckFailed, match=r"^✗ count: the cell computed 65,535, but calculators gives 65,536 "):
        helpers.check("count", 65_535, 65_536)
    with pytest.raises(AssertionError, match="allowed: relative 0.01"):  # a CheckFailed is an AssertionError
        helpers.check("gap", 0.25, 0.2, rel=0.01)
    with pytest.raises(helpers.CheckFailed, match=r"^✗ identity: this is False$"):
        helpers.check("identity", 1 == 2)
    with pytest.raises(helpers.CheckFailed, match=r"value 1 is 2.1, but calculators gives 2"):
        helpers.check("series", [1.0, 2.1], [1.0, 2.0])
    with pytest.raises(helpers.CheckFailed, match="3 values, calculators gives 2"):
        helpers.check("series", [1, 2, 3], [1, 2])
    with pytest.raises(helpers.CheckFailed, match="expected a number"):
        helpers.check("count", "65,536", 65_536)
    with pytest.raises(ValueError, match="label"):
        helpers.check("", 1, 1)
    assert run_check("within", 1.0, 1.0 + 1e-7, atol=1e-6).startswith("✓ within")


def test_check_reads_numpy_values():
    import numpy as np

    assert run_check("norms", np.array([3.0, 4.0]), [3.0, 4.0]) == "✓ norms: 3, 4 (calculators: 3, 4)\n"
    assert run_check("allclose", np.bool_(True)) == "✓ allclose\n"
    assert run_check("int64", np.int64(1_000), 1_000) == "✓ int64: 1,000 (calculators: 1,000)\n"


def test_helpers_record_plain_figures():
    helpers = _load_helpers()
    recorded: list[str] = []
    helpers.sink = recorded.append
    helpers.plot_xy([1, 2, 3], [1.0, 0.1, 0.01], title="t", xlabel="r", ylabel="err", logy=True)
    helpers.plot.bar(["q", "v"], [1, 2])
    helpers.plot.hist([0.0, 0.1, 0.9, 1.0], bins=2)

    figures = [json.loads(r) for r in recorded]
    assert [f["kind"] for f in figures] == ["line", "bar", "hist"]
    assert figures[0]["layout"] == {"title": "t", "xlabel": "r", "ylabel": "err", "logy": True}
    assert figures[2]["traces"][0]["y"] == [2.0, 2.0]
    with pytest.raises(ValueError):
        helpers.plot_xy([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        helpers.plot_xy([1, 2], [1, 0], logy=True)
