"""Runnable Python cells in a real Chromium: self-hosted Pyodide, numpy, our calculators.

Every request the page makes is recorded: nothing may leave our own server (no CDN), and a
page nobody runs must not load Pyodide at all.
"""

from __future__ import annotations

import re
import subprocess
import sys
from urllib.parse import urlparse

import pytest

from app.settings import PROJECT_ROOT

pytestmark = pytest.mark.browser

PYODIDE = PROJECT_ROOT / "static" / "vendor" / "pyodide"
RUN_TIMEOUT_MS = 90_000  # a cold start on a loaded 2-core CI box, with margin
LINE = re.compile(r"r=\s*(\d+)\s+\|M - M_r\|/\|M\| = ([\d.]+) \(tail of spectrum ([\d.]+)\)\s+\|L - M_r\|/\|L\| = ([\d.]+)")


@pytest.fixture(scope="module", autouse=True)
def vendored_pyodide():
    if not (PYODIDE / "pyodide.asm.wasm").exists():
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


def test_svd_cell_prints_errors_down_to_the_noise_floor_and_plots(page, live_server, screenshot_dir):
    page.goto(f"{live_server}/chapters/rank-and-targets")
    page.wait_for_selector(f"{cell(1)}.cell-live")
    assert not [u for u in page.requests_seen if "pyodide" in u], "Pyodide loaded before any Run"

    assert run(page, 1) == "done", output(page, 1)
    rows = [(int(r), float(m), float(t), float(l)) for r, m, t, l in LINE.findall(output(page, 1))]
    ranks = [r for r, *_ in rows]
    err_m = [m for _, m, _, _ in rows]
    err_l = [l for *_, l in rows]
    assert ranks == [1, 2, 4, 8, 16, 32]
    assert all(a > b for a, b in zip(err_m, err_m[1:])), err_m  # more rank, less error
    for _, m, tail, _ in rows:  # Eckart-Young: the error is the tail of the spectrum
        assert m == pytest.approx(tail, abs=1e-4)
    at8 = ranks.index(8)
    assert err_m[at8 - 1] > 0.5  # below the true rank most of the matrix is missing
    assert 0.03 < err_m[at8] < 0.06  # at the true rank only the 5% noise is left...
    assert err_m[-1] > 0.5 * err_m[at8]  # ...and more rank barely helps: the noise floor
    assert min(err_l) == err_l[at8]  # the signal is best recovered at its own rank

    plot = page.wait_for_selector(f"{cell(1)} .cell-plot.js-plotly-plot")
    assert "Truncated SVD" in plot.inner_text()
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


def _chapters_with_cells() -> list[tuple[str, int]]:
    from app.main import create_app

    return [(c.meta.label, len(c.cells)) for c in create_app().state.library().chapters if c.cells]


@pytest.mark.parametrize(("label", "n_cells"), _chapters_with_cells())
def test_every_cell_of_every_chapter_runs_in_the_browser(page, live_server, label, n_cells):
    """The reader's own path: each cell, in order, in the page's shared Pyodide interpreter."""
    page.goto(f"{live_server}/chapters/{label}")
    for n in range(1, n_cells + 1):
        state = run(page, n)
        assert state == "done", f"{label} cell {n} ended {state}:\n{output(page, n)}"
        assert "Traceback" not in output(page, n), f"{label} cell {n}:\n{output(page, n)}"
    assert_only_our_server(page, live_server)
