"""Every page at a phone's width and a desktop's, in both themes, in real Chromium: nothing is
wider than the viewport or cut off by its container (a wide table scrolls inside its own box),
every plot fits its instrument, and axe-core finds no serious or critical violation.

axe-core is pinned in package.json (devDependencies) and read from node_modules/: it is run
by the tests only, never served to readers. Screenshots of every page land in
.artifacts/screenshots/ (`layout-<page>-<width>-<theme>.png`) to be looked at.
"""

from __future__ import annotations

import json

import pytest

from app.content import CHAPTER_FILE, read_meta
from app.instrument_registry import INSTRUMENTS
from app.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.browser

AXE_JS = PROJECT_ROOT / "node_modules" / "axe-core" / "axe.min.js"
CHAPTERS = [read_meta(path).label for path in sorted(Settings().content_dir.glob("*.md")) if CHAPTER_FILE.match(path.name)]
PAGES = ["/", "/instruments", "/lab", "/docs", "/no-such-page", "/figures", "/figures/lora-shapes"] + [f"/chapters/{c}" for c in CHAPTERS] + [
    f"/instruments/{name}" for name in INSTRUMENTS]
WIDTHS = (390, 1280)
THEMES = ("light", "dark")

# An element sticking out of the viewport, or out of an ancestor that hides overflow, is a
# defect; inside an ancestor that scrolls (a wide table's box) it is what we want.
OVERFLOWING = """() => {
  const viewport = document.documentElement.clientWidth, found = [];
  const exempt = el => el.closest('.visually-hidden, .skip-link, .katex-mathml, [hidden]');
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('svg') && el.tagName.toLowerCase() !== 'svg') continue;
    const box = el.getBoundingClientRect();
    if (!box.width || !box.height || box.right < 0 || exempt(el)) continue;
    let verdict = box.right > viewport + 1 ? 'wider than the viewport' : null;
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      const style = getComputedStyle(up);
      if (style.overflowX === 'auto' || style.overflowX === 'scroll') { verdict = null; break; }
      if ((style.overflowX === 'hidden' || style.overflowX === 'clip') && box.right > up.getBoundingClientRect().right + 1) {
        verdict = 'cut off by .' + String(up.className).split(' ')[0]; break;
      }
    }
    if (verdict) found.push(`${verdict}: <${el.tagName.toLowerCase()} class="${String(el.className).slice(0, 40)}"> ` +
                            `right=${Math.round(box.right)} "${(el.textContent || '').trim().slice(0, 40)}"`);
  }
  return {sideways: document.documentElement.scrollWidth - window.innerWidth, found: found.slice(0, 8)};
}"""

PLOTS_FIT = """() => [...document.querySelectorAll('.plot')].filter(plot => {
  if (!plot.getClientRects().length) return false;  // hidden (the lab's loss plot before a run): nothing drawn
  const frame = (plot.closest('.instrument') || document.body).getBoundingClientRect();
  const svg = plot.querySelector('svg.main-svg');
  const box = (svg || plot).getBoundingClientRect();
  return box.left < frame.left - 1 || box.right > frame.right + 1;
}).map(plot => plot.dataset.figure || plot.id)"""


@pytest.fixture(scope="module")
def themed_pages(browser_context_factory):
    """One browser page per (width, theme), reused across this module's tests."""
    pages = {}

    def get(width: int, theme: str):
        if (width, theme) not in pages:
            context = browser_context_factory(viewport={"width": width, "height": 900}, color_scheme=theme,
                                              is_mobile=width < 500, has_touch=width < 500)
            pages[(width, theme)] = context.pages[0] if context.pages else context.new_page()
        return pages[(width, theme)]

    return get


def open_fully(page, url: str) -> None:
    """Load a page and scroll through it, so every figure near the viewport gets drawn."""
    page.goto(url)
    page.wait_for_load_state("load")
    # one step per frame: figures are drawn when an IntersectionObserver sees them, once per frame
    page.evaluate("""async () => { const frame = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
        for (let y = 0; y < document.documentElement.scrollHeight; y += 600) { window.scrollTo(0, y); await frame(); }
        window.scrollTo(0, 0); }""")
    page.wait_for_function("() => [...document.querySelectorAll('.plot')].every(p => p.classList.contains('plot-ready')"
                           " || !p.querySelector('script.figure-data'))", timeout=30_000)
    page.wait_for_timeout(150)


def axe_violations(page) -> list[str]:
    if not page.evaluate("!!window.axe"):
        page.evaluate(AXE_JS.read_text(encoding="utf-8"))  # evaluated by the driver: the page's CSP does not apply
    result = page.evaluate("""() => axe.run(document, {resultTypes: ['violations']}).then(r => r.violations
        .filter(v => v.impact === 'serious' || v.impact === 'critical')
        .map(v => v.id + ' (' + v.impact + '): ' + v.nodes.slice(0, 3).map(n => n.target.join(' ') + ' ' +
             (n.failureSummary || '').replace(/\\s+/g, ' ').slice(0, 160)).join(' | ')))""")
    return result


@pytest.mark.skipif(not AXE_JS.is_file(), reason="axe-core is not installed: npm ci installs it (devDependencies)")
@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("path", PAGES)
def test_page_fits_and_passes_axe(live_server, themed_pages, screenshot_dir, path, width, theme):
    page = themed_pages(width, theme)
    open_fully(page, live_server + path)
    layout = page.evaluate(OVERFLOWING)
    assert layout["sideways"] <= 0, f"{path} scrolls sideways by {layout['sideways']}px at {width}px"
    assert not layout["found"], "\n".join(layout["found"])
    assert page.evaluate(PLOTS_FIT) == [], f"{path}: a plot is wider than its instrument"
    name = path.strip("/").replace("/", "-") or "home"
    page.screenshot(path=str(screenshot_dir / f"layout-{name}-{width}-{theme}.png"), full_page=True)
    violations = axe_violations(page)
    assert not violations, f"{path} at {width}px, {theme}:\n" + "\n".join(violations)


def test_axe_is_pinned_for_tests_and_never_served(client):
    package = json.loads((PROJECT_ROOT / "package.json").read_text())
    assert package["devDependencies"]["axe-core"][0].isdigit()  # an exact version, not a range
    assert client.get("/static/vendor/axe-core/axe.min.js").status_code == 404
