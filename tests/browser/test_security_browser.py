"""The Content-Security-Policy in a real browser: every kind of page works under it, and
nothing on them is blocked (Pyodide's wasm, Plotly, KaTeX, CodeMirror, htmx, Swagger UI)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 90_000


@pytest.fixture
def watched_page(browser_page):
    """A page that records CSP violations (document and workers) and page errors."""
    page = browser_page
    page.violations = []
    page.on("console", lambda m: page.violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: page.violations.append(f"pageerror: {e}"))
    page.add_init_script("""document.addEventListener('securitypolicyviolation',
        e => console.error('Content Security Policy violation: ' + e.violatedDirective + ' ' + e.blockedURI));""")
    return page


def test_headers_are_on_every_kind_of_response(live_server, watched_page):
    for path in ("/", "/chapters/lora", "/instruments/scaling", "/static/css/book.css", "/api/v1/nf4/levels"):
        response = watched_page.request.get(live_server + path)
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "same-origin", path


def test_chapter_with_cells_instruments_and_maths_runs_under_the_policy(live_server, watched_page):
    page = watched_page
    page.set_default_timeout(RUN_TIMEOUT_MS)
    page.goto(f"{live_server}/chapters/rank-and-targets")
    page.wait_for_selector(".katex")
    page.click(".cell[data-cell='1'] .cell-run")  # the SVD cell: Pyodide, numpy, a plot
    page.wait_for_selector(".cell[data-cell='1'][data-state]:not([data-state='running'])")
    assert page.get_attribute(".cell[data-cell='1']", "data-state") == "done", page.inner_text(".cell[data-cell='1'] .cell-output")
    page.locator("[data-instrument=svd-rank]").scroll_into_view_if_needed()
    page.wait_for_selector("[data-instrument=svd-rank] .plot.plot-ready")
    assert page.violations == []


def test_instrument_lab_and_api_docs_run_under_the_policy(live_server, watched_page):
    page = watched_page
    page.goto(f"{live_server}/instruments/configurator")
    page.wait_for_selector(".plot.plot-ready")
    page.locator("#configurator-rank").fill("32")
    page.wait_for_function("() => document.querySelector('[data-value=trainable]').textContent.trim() === '33,554,432'")
    page.goto(f"{live_server}/lab")
    page.wait_for_selector("#lab-status[data-prediction]")
    page.goto(f"{live_server}/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)  # Swagger UI rendered our operations
    assert "/api/v1/params" in page.inner_text("#swagger-ui")
    assert page.violations == []
