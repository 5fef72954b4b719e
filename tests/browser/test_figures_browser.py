"""The figures in real Chromium: they fit a phone and stay legible, their text meets WCAG AA
contrast in both themes, and a live figure redraws when its control moves (keyboard too).
Screenshots of every figure land in .artifacts/screenshots/ to be looked at."""

from __future__ import annotations

import pytest

from app.content import CHAPTER_FILE, read_meta
from app.formatting import format_int
from app.settings import Settings
from calculators import nf4, params

pytestmark = pytest.mark.browser

CHAPTERS = [read_meta(path).label for path in sorted(Settings().content_dir.glob("*.md")) if CHAPTER_FILE.match(path.name)]

# For every text of every visible figure: its rendered size in CSS px, and its contrast against
# what is painted under it (figure shapes composited over the nearest opaque HTML background).
MEASURE_TEXT = """
() => {
  const rgba = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(',').map(Number); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const over = (top, bottom) => ({r: top.r * top.a + bottom.r * (1 - top.a), g: top.g * top.a + bottom.g * (1 - top.a),
                                  b: top.b * top.a + bottom.b * (1 - top.a), a: 1});
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const SHAPES = new Set(['rect', 'circle', 'polygon', 'path', 'ellipse']);
  const results = [];
  document.querySelectorAll('figure.fig svg.fig-svg').forEach((svg) => {
    if (!svg.getClientRects().length) return;  // the layout not shown at this width
    const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    svg.querySelectorAll('text').forEach((text) => {
      if (!text.textContent.trim()) return;
      let box = text.getBoundingClientRect();
      if (box.top < 0 || box.bottom > window.innerHeight) {  // hit-testing sees only the viewport
        window.scrollBy(0, box.top - window.innerHeight / 2);
        box = text.getBoundingClientRect();
      }
      const frame = svg.getBoundingClientRect();
      const x = box.left + box.width / 2, y = box.top + box.height / 2;
      const style = getComputedStyle(text);
      const ink = rgba(style.fill);
      const layers = [];
      let base = null;
      for (const el of document.elementsFromPoint(x, y)) {
        if (el === text || el.closest('text')) continue;
        const s = getComputedStyle(el);
        if (SHAPES.has(el.tagName) && s.fill !== 'none') {
          const c = rgba(s.fill); if (c) { c.a *= Number(s.fillOpacity) * Number(s.opacity); layers.push(c); }
        } else if (!(el instanceof SVGElement)) {
          const c = rgba(s.backgroundColor); if (c && c.a > 0) { if (c.a === 1) { base = c; break; } layers.push(c); }
        }
      }
      let bg = base || {r: 255, g: 255, b: 255, a: 1};
      for (const layer of layers.reverse()) bg = over(layer, bg);
      const [hi, lo] = [lum(ink), lum(bg)].sort((a, b) => b - a);
      results.push({figure: svg.closest('figure').dataset.figure, text: text.textContent,
                    contrast: (hi + 0.05) / (lo + 0.05), px: parseFloat(style.fontSize) * scale,
                    inside: box.left >= frame.left - 1 && box.right <= frame.right + 1 && box.top >= frame.top - 1
                            && box.bottom <= frame.bottom + 1 && box.right <= window.innerWidth});
    });
  });
  return results;
}
"""


def _phone(browser_context_factory, scheme: str = "light"):
    context = browser_context_factory(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                      color_scheme=scheme)
    return context.new_page()


def test_every_chapters_figures_fit_a_phone_and_stay_legible(live_server, browser_context_factory):
    page = _phone(browser_context_factory)
    for label in CHAPTERS:
        page.goto(f"{live_server}/chapters/{label}")
        page.wait_for_load_state("load")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{label} scrolls sideways by {overflow}px at 390px"
        widths = page.evaluate("[...document.querySelectorAll('figure.fig')].map(f => f.getBoundingClientRect().right)")
        assert widths and max(widths) <= 390, f"{label}: a figure is wider than the phone"
        shown = page.evaluate("[...document.querySelectorAll('figure.fig')].map(f =>"
                              " [...f.querySelectorAll('svg.fig-svg')].filter(s => s.getClientRects().length).length)")
        assert shown == [1] * len(shown), f"{label}: each figure shows exactly one drawing ({shown})"
        texts = page.evaluate(MEASURE_TEXT)
        small = [(t["figure"], t["text"], round(t["px"], 1)) for t in texts if t["px"] < 10]
        assert not small, f"{label}: figure text below 10 px at 390px: {small[:5]}"
        outside = [(t["figure"], t["text"]) for t in texts if not t["inside"]]
        assert not outside, f"{label}: figure text outside its drawing at 390px: {outside[:5]}"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_figure_text_meets_wcag_aa_in_both_themes(live_server, browser_context_factory, screenshot_dir, scheme):
    for width in (1280, 390):
        # light: the system's preference; dark: the reader's choice with the theme toggle
        context = browser_context_factory(viewport={"width": width, "height": 900}, color_scheme="light")
        page = context.new_page()
        page.goto(f"{live_server}/figures")
        page.wait_for_load_state("load")
        if scheme == "dark":
            page.click("#theme-toggle")
            assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        texts = page.evaluate(MEASURE_TEXT)
        assert len(texts) > 200
        poor = sorted((round(t["contrast"], 2), t["figure"], t["text"]) for t in texts if t["contrast"] < 4.5)
        assert not poor, f"{scheme} at {width}px: text below 4.5:1 contrast: {poor[:8]}"
        for figure in page.locator("figure.fig").all():
            name = figure.get_attribute("data-figure")
            figure.screenshot(path=str(screenshot_dir / f"figure-{name}-{width}-{scheme}.png"))
        context.close()


def test_live_figures_redraw_when_their_control_moves(live_server, browser_page):
    page = browser_page
    page.goto(f"{live_server}/chapters/lora")
    figure = page.locator("figure[data-figure=lora-shapes]")
    radio = figure.locator("input[name=rank][value='8']")
    assert radio.is_checked()
    radio.focus()
    page.keyboard.press("ArrowRight")  # keyboard: the next rank, 16
    expected = format_int(params.lora_module_params(4096, 4096, 16))
    page.wait_for_function(
        "(text) => document.querySelector('figure[data-figure=lora-shapes] .fig-readout').textContent.includes(text)",
        arg=f"{expected} parameters", timeout=10_000)
    assert "rank 16" in figure.locator(".fig-wide svg").get_attribute("aria-label")
    figure.locator("select[name=module]").select_option("down_proj")
    page.wait_for_function(
        "() => document.querySelector('figure[data-figure=lora-shapes] .fig-readout').textContent.includes('11,008')",
        timeout=10_000)

    page.goto(f"{live_server}/chapters/qlora")
    figure = page.locator("figure[data-figure=nf4-blocks]")
    figure.locator("label", has_text="256").click()
    bits = nf4.bits_per_param(256, double_quant=True)
    page.wait_for_function(
        "(text) => document.querySelector('figure[data-figure=nf4-blocks] .fig-readout').textContent.includes(text)",
        arg=f"{4 + bits:.3f} bits per parameter", timeout=10_000)
    toggle = figure.locator("input[type=checkbox][name=double_quant]")
    toggle.focus()
    page.keyboard.press("Space")
    bits = nf4.bits_per_param(256, double_quant=False)
    page.wait_for_function(
        "(text) => document.querySelector('figure[data-figure=nf4-blocks] .fig-readout').textContent.includes(text)",
        arg=f"{4 + bits:.3f} bits per parameter", timeout=10_000)


def _readout_has(page, name: str, text: str) -> None:
    page.wait_for_function(
        "([name, text]) => document.querySelector(`figure[data-figure=${name}] .fig-readout`).textContent.includes(text)",
        arg=[name, text], timeout=10_000)


def _settled(page) -> None:
    page.wait_for_function("() => !document.querySelector('.fig-controls.htmx-request')", timeout=10_000)


def test_a_figures_own_page_restores_its_settings_on_back_and_forward(live_server, browser_page):
    page = browser_page
    page.goto(f"{live_server}/figures/lora-shapes")
    page.wait_for_load_state("load")
    figure = page.locator("figure[data-figure=lora-shapes]")
    q_proj_16 = format_int(params.lora_module_params(4096, 4096, 16))
    down_proj_16 = format_int(params.lora_module_params(11008, 4096, 16))

    figure.locator("input[name=rank][value='16']").check()
    _readout_has(page, "lora-shapes", f"{q_proj_16} parameters")
    page.wait_for_function("() => location.search.includes('rank=16')")
    page.wait_for_timeout(1100)  # settings a second apart are separate history entries
    figure.locator("select[name=module]").select_option("down_proj")
    _readout_has(page, "lora-shapes", f"{down_proj_16} parameters")
    page.wait_for_function("() => location.search.includes('module=down_proj')")

    page.go_back()
    _readout_has(page, "lora-shapes", f"{q_proj_16} parameters")
    _settled(page)
    assert figure.locator("input[name=rank][value='16']").is_checked()
    assert figure.locator("select[name=module]").input_value() == "q_proj"
    page.go_back()  # the page as first drawn: rank 8
    _readout_has(page, "lora-shapes", f"{format_int(params.lora_module_params(4096, 4096, 8))} parameters")
    _settled(page)
    assert figure.locator("input[name=rank][value='8']").is_checked()
    page.go_forward()
    _readout_has(page, "lora-shapes", f"{q_proj_16} parameters")
    page.go_forward()
    _readout_has(page, "lora-shapes", f"{down_proj_16} parameters")
    _settled(page)
    assert figure.locator("select[name=module]").input_value() == "down_proj"
    assert "rank 16" in figure.locator(".fig-wide svg").get_attribute("aria-label")


def test_a_chapter_figure_keeps_its_settings_in_the_url_and_on_its_own_page(live_server, browser_page):
    page = browser_page
    page.goto(f"{live_server}/chapters/qlora")
    page.wait_for_load_state("load")
    figure = page.locator("figure[data-figure=nf4-blocks]")
    fig_id = figure.get_attribute("id")
    figure.locator("input[name=blocksize][value='256']").check()
    figure.locator("input[type=checkbox][name=double_quant]").uncheck()
    bits = nf4.bits_per_param(256, double_quant=False)
    _readout_has(page, "nf4-blocks", f"{4 + bits:.3f} bits per parameter")
    page.wait_for_function("(id) => location.search.includes(id + '.blocksize=256')", arg=fig_id)
    link = figure.locator(".fig-page-link")
    page.wait_for_function("el => el.href.includes('blocksize=256')", arg=link.element_handle())

    page.reload()  # the chapter's URL brings the figure back as the reader left it
    page.wait_for_load_state("load")
    _readout_has(page, "nf4-blocks", f"{4 + bits:.3f} bits per parameter")
    assert figure.locator("input[name=blocksize][value='256']").is_checked()
    assert not figure.locator("input[type=checkbox][name=double_quant]").is_checked()

    page.locator(f"#{fig_id} .fig-page-link").click()
    page.wait_for_url("**/figures/nf4-blocks?**")
    own = page.locator("figure[data-figure=nf4-blocks]")
    assert own.locator("input[name=blocksize][value='256']").is_checked()
    assert f"{4 + bits:.3f} bits per parameter" in own.locator(".fig-readout").inner_text()
