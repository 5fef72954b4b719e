"""Runnable Python cells in a real Chromium: self-hosted Pyodide, numpy, our calculators.

Every request the page makes is recorded: nothing may leave our own server (no CDN), and a
page nobody runs must not load Pyodide at all. Every cell of every chapter runs in the page,
and what the reader sees (each printed line, each "✓" check, each figure's data) must be what
the same cell shows in CPython under the same numpy (tests/cells_runtime.py): this is the
proof that the CPython run of tests/app/test_cells_execute.py speaks for the reader's Pyodide.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from urllib.parse import urlparse

import numpy as np
import pytest

from app.settings import PROJECT_ROOT
from calculators import lowrank
from tests.cells_runtime import CellRun, cells_numpy_missing, chapter_cells, chapter_run

pytestmark = pytest.mark.browser

PYODIDE = PROJECT_ROOT / "static" / "vendor" / "pyodide"
RUN_TIMEOUT_MS = 90_000  # a cold start on a loaded 2-core CI box, with margin
LINE = re.compile(r"r=\s*(\d+)\s+\|M - M_r\|/\|M\| = ([\d.]+) \(tail of spectrum ([\d.]+)\)\s+\|L - M_r\|/\|L\| = ([\d.]+)")


@pytest.fixture(scope="module", autouse=True)
def vendored_pyodide():
    if not (PYODIDE / "pyodide.asm.wasm").exists():
        if os.environ.get("CI"):
            pytest.fail("Pyodide is not vendored; scripts/test runs scripts/setup assets")
        pytest.skip("Pyodide is not vendored; run scripts/setup assets")
    # calculators/ changes more often than the set-up is rerun: rebuild its wheel (cheap, offline).
    subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "vendor-pyodide.py"), "--calculators-only"], check=True)


@pytest.fixture
def page(browser_page, live_server):
    """A chapter page with every request recorded in page.requests_seen."""
    seen: list[str] = []
    browser_page.on("request", lambda request: seen.append(request.url))
    browser_page.requests_seen = seen
    browser_page.set_default_timeout(RUN_TIMEOUT_MS)
    return browser_page


def cell(n: int) -> str:
    return f".cell[data-cell='{n}']"


def run(page, n: int, code: str | None = None) -> str:
    """Run cell n (optionally with new code), wait for it to finish, return its state."""
    if code is not None:
        page.evaluate("([n, code]) => window.loralabCells.setCode(n, code)", [n, code])
    page.click(f"{cell(n)} .cell-run")
    page.wait_for_selector(f"{cell(n)}[data-state]:not([data-state='running'])")
    return page.get_attribute(cell(n), "data-state")


def output(page, n: int) -> str:
    return page.inner_text(f"{cell(n)} .cell-output")


def assert_only_our_server(page, live_server):
    ours = urlparse(live_server).netloc
    foreign = [u for u in page.requests_seen if urlparse(u).scheme in ("http", "https") and urlparse(u).netloc != ours]
    assert not foreign, f"requests left our server: {foreign}"


def chapter_with_cells(minimum: int) -> str:
    from app.main import create_app

    for chapter in create_app().state.library().chapters:
        if len(chapter.cells) >= minimum:
            return chapter.meta.label
    pytest.skip(f"no chapter has {minimum} cells yet")


def test_svd_cell_prints_the_calculators_errors_and_plots(page, live_server, screenshot_dir):
    page.goto(f"{live_server}/chapters/rank-and-targets")
    page.wait_for_selector(f"{cell(1)}.cell-live")
    assert not [u for u in page.requests_seen if "pyodide" in u], "Pyodide loaded before any Run"

    assert run(page, 1) == "done", output(page, 1)
    rows = LINE.findall(output(page, 1))
    # What the cell must print, from calculators (the chapter's matrix: 128 x 128, rank 8, 5% noise).
    ranks = [1, 2, 4, 8, 16, 32]
    update = lowrank.make_low_rank_update(128, 128, 8, lowrank.noise_std_for_ratio(128, 128, 0.05), seed=0)
    err_m = lowrank.svd_error_curve(update.matrix, ranks).relative_errors
    err_l = [np.linalg.norm(update.signal - lowrank.truncated_reconstruction(update.matrix, r)) / np.linalg.norm(update.signal)
             for r in ranks]
    assert [int(r) for r, *_ in rows] == ranks
    assert [m for _, m, _, _ in rows] == [f"{e:.4f}" for e in err_m]
    assert [t for _, _, t, _ in rows] == [f"{e:.4f}" for e in err_m]  # Eckart-Young: the tail of the spectrum
    assert [l for *_, l in rows] == [f"{e:.4f}" for e in err_l]
    checks = "".join(page.locator(f"{cell(1)} .cell-check").all_inner_texts()).splitlines()  # shown in green
    assert checks == ["✓ |M - M_r|/|M| at every rank: all 6 values match calculators",
                      "✓ the clean signal is recovered best at its own rank, r = 8"]

    plot = page.wait_for_selector(f"{cell(1)} .cell-plot.js-plotly-plot")
    assert "Truncated SVD" in plot.inner_text()
    drawn = page.evaluate("el => el.data[0].y", plot)
    assert drawn == pytest.approx(err_m, rel=1e-9)
    page.locator(cell(1)).screenshot(path=str(screenshot_dir / "cell-light.png"))
    page.click("#theme-toggle")
    page.wait_for_function("() => document.documentElement.dataset.theme === 'dark'")
    page.wait_for_timeout(300)
    page.locator(cell(1)).screenshot(path=str(screenshot_dir / "cell-dark.png"))

    pyodide_files = [u for u in page.requests_seen if "/static/vendor/pyodide/" in u]
    assert any(u.endswith("pyodide.asm.wasm") for u in pyodide_files)
    assert any("numpy-2.0.2" in u for u in pyodide_files)
    assert_only_our_server(page, live_server)


def test_calculators_import_inside_a_cell(page, live_server):
    page.goto(f"{live_server}/chapters/rank-and-targets")
    # Edit with the keyboard, as a reader would, and run with Shift+Enter.
    page.click(f"{cell(1)} .cm-content")
    page.keyboard.press("Control+A")
    page.keyboard.type("from calculators import nf4; print(len(nf4.nf4_levels()), calculators_ok := 'yes')")
    assert page.locator(f"{cell(1)}.cell-edited").count() == 1
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector(f"{cell(1)}[data-state]:not([data-state='running'])")
    assert output(page, 1).strip() == "16 yes"
    page.click(f"{cell(1)} .cell-reset")
    assert "np.linalg.svd(M)" in page.inner_text(f"{cell(1)} .cm-content")
    assert_only_our_server(page, live_server)


def test_cells_share_one_interpreter_and_restart_clears_it(page, live_server):
    page.goto(f"{live_server}/chapters/{chapter_with_cells(2)}")
    page.wait_for_selector(f"{cell(2)}.cell-live")
    assert run(page, 1, "shared_value = 41\nshared_value") == "done"
    assert output(page, 1).strip() == "41"  # a final expression is shown, like a notebook
    assert run(page, 2, "print(shared_value + 1)") == "done"
    assert output(page, 2).strip() == "42"
    page.click(f"{cell(2)} .cell-restart")
    assert run(page, 2) == "error"
    assert "NameError: name 'shared_value' is not defined" in output(page, 2)
    assert 'File "<cell 2>", line 1' in output(page, 2)  # the traceback names the cell, not our runner
    assert "eval_code_async" not in output(page, 2)


def test_time_limit_and_stop_restart_python(page, live_server):
    page.goto(f"{live_server}/chapters/rank-and-targets")
    page.wait_for_selector(f"{cell(1)}.cell-live")
    assert run(page, 1, "print('warm')") == "done"  # boot first so the limit covers only the run
    page.evaluate("window.loralabCells.timeLimitMs = 1500")
    assert run(page, 1, "print('spinning')\nwhile True:\n    pass") == "stopped"
    assert "time limit" in output(page, 1)
    assert "spinning" in output(page, 1)  # output streamed before the loop is kept
    page.evaluate("window.loralabCells.timeLimitMs = 30000")

    page.evaluate("([n, code]) => window.loralabCells.setCode(n, code)", [1, "while True:\n    pass"])
    page.click(f"{cell(1)} .cell-run")
    page.wait_for_selector(f"{cell(1)} .cell-stop:visible")
    page.wait_for_timeout(300)
    page.click(f"{cell(1)} .cell-stop")
    page.wait_for_selector(f"{cell(1)}[data-state='stopped']", timeout=5_000)
    assert "Stopped" in output(page, 1)

    assert run(page, 1, "print(6 * 7)") == "done"  # a fresh interpreter answers
    assert output(page, 1).strip() == "42"


# A number as a cell prints it: 65,536  0.0467  -1.0000000  3.405e-06  6.7%
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def last_digit(token: str) -> float:
    """The value of one unit in the last printed digit of a number token."""
    mantissa, _, exponent = token.partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def same_line(shown: str, expected: str) -> bool:
    """The same text, and every number equal or off by one unit in its last printed digit.

    Printed figures are rounded; a float computed by another BLAS or libm may differ in its
    last bits and, right at a rounding boundary, print one digit apart. Nothing more is allowed.
    """
    if shown == expected:
        return True
    if NUMBER.split(shown) != NUMBER.split(expected):
        return False
    for a, b in zip(NUMBER.findall(shown), NUMBER.findall(expected)):
        x, y = float(a.replace(",", "")), float(b.replace(",", ""))
        if a != b and abs(x - y) > 1.0001 * max(last_digit(a), last_digit(b)):
            return False
    return True


def test_same_line_allows_only_a_last_digit_apart():
    assert same_line("max error 4.7e-07 of a weight", "max error 4.8e-07 of a weight")
    assert same_line("r= 8  0.0467", "r= 8  0.0468")
    assert same_line("16,777,216 parameters", "16,777,216 parameters")
    assert not same_line("r= 8  0.0467", "r= 8  0.0469")
    assert not same_line("16,777,216 parameters", "16,777,218 parameters")
    assert not same_line("✓ check", "✗ check")
    assert not same_line("MSE = 3.405e-06", "MSE = 3.405e-07")


def assert_shows(label: str, n: int, shown: str, expected: CellRun) -> None:
    shown_lines, expected_lines = shown.rstrip("\n").split("\n"), expected.stdout.rstrip("\n").split("\n")
    differing = [(a, b) for a, b in zip(shown_lines, expected_lines) if not same_line(a, b)]
    assert len(shown_lines) == len(expected_lines) and not differing, (
        f"{label} cell {n} shows in the page:\n{shown}\n--- but in CPython:\n{expected.stdout}\n--- first difference: {differing[:1]}"
    )


def assert_same_figures(label: str, n: int, drawn: list[dict], expected: list[dict]) -> None:
    assert len(drawn) == len(expected), f"{label} cell {n}: {len(drawn)} figures in the page, {len(expected)} in CPython"
    for ours, theirs in zip(drawn, expected):
        assert (ours["kind"], ours["layout"]) == (theirs["kind"], theirs["layout"]), f"{label} cell {n}"
        assert len(ours["traces"]) == len(theirs["traces"])
        for a, b in zip(ours["traces"], theirs["traces"]):
            for axis in ("x", "y"):
                assert len(a[axis]) == len(b[axis])
                assert all(
                    (u is None and v is None) or (isinstance(u, str) and u == v)
                    or (isinstance(u, (int, float)) and math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12))
                    for u, v in zip(a[axis], b[axis])
                ), f"{label} cell {n}: the page plots other {axis} values than CPython"


def shown_text(page, n: int) -> str:
    """The text a reader sees in cell n's output (its printed streams, not the plots' labels)."""
    return "".join(page.locator(f"{cell(n)} .cell-stream").all_inner_texts())


def drawn_figures(page, n: int) -> list[dict]:
    return page.evaluate(
        "n => [...document.querySelectorAll(`.cell[data-cell='${n}'] .cell-plot`)].map(el => el._loralabCellFigure)", n
    )


CHAPTERS = chapter_cells()


@pytest.mark.parametrize("label", list(CHAPTERS))
def test_every_cell_shows_the_reader_what_it_shows_in_cpython(page, live_server, label):
    """The reader's own path: each cell, in order, in the page's shared Pyodide interpreter."""
    missing = cells_numpy_missing()
    if missing:
        pytest.fail(missing)
    expected = chapter_run(label)
    page.goto(f"{live_server}/chapters/{label}")
    for n, cpython in enumerate(expected.cells, start=1):
        assert cpython.error is None, f"{label} cell {n} fails in CPython:\n{cpython.error}"
        state = run(page, n)
        assert state == "done", f"{label} cell {n} ended {state}:\n{output(page, n)}"
        shown = shown_text(page, n)
        assert "✓ " in shown, f"{label} cell {n} shows no check"
        assert_shows(label, n, shown, cpython)
        assert_same_figures(label, n, drawn_figures(page, n), cpython.figures)
    assert len(expected.cells) == len(CHAPTERS[label])
    assert_only_our_server(page, live_server)
