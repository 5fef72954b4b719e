"""What a reader does with an instrument, in real Chromium: Back and Forward restore the form and
the result, "Open full page" keeps the settings, the rank slider steps through powers of two from
the keyboard while the box takes any rank, controls follow the method, the GPU planner takes a
typed memory and a pasted config.json, screen readers hear one summary per settled result, and
chapters read typeset maths without JavaScript and without layout shift."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from calculators import params, planner
from calculators.architectures import load_hf_config
from calculators.gpus import GIB

pytestmark = pytest.mark.browser


def trainable(model: str, r: int, targets: str = "q_proj,k_proj,v_proj,o_proj", method: str = "lora") -> str:
    return f"{params.count_trainable(model, method, r=r, target_modules=targets).trainable:,}"


def wait_text(page, selector: str, expected: str, timeout: int = 15_000) -> None:
    page.wait_for_function(
        "([sel, text]) => document.querySelector(sel)?.textContent.trim() === text", arg=[selector, expected],
        timeout=timeout)


def open_instrument(page, live_server: str, name: str) -> None:
    page.goto(f"{live_server}/instruments/{name}")
    page.wait_for_load_state("load")


def settled(page) -> None:
    page.wait_for_function("() => !document.querySelector('.instrument.is-loading')", timeout=15_000)


def test_back_and_forward_restore_form_and_result(live_server, browser_page):
    page = browser_page
    open_instrument(page, live_server, "configurator")
    headline = "[data-value=trainable]"
    assert page.locator(headline).inner_text() == trainable("llama-2-7b", 16)

    page.locator("#configurator-rank").fill("32")
    wait_text(page, headline, trainable("llama-2-7b", 32))
    page.wait_for_function("() => location.search.includes('rank=32')")
    page.wait_for_timeout(1100)  # settings a second apart are separate history entries
    page.select_option("#configurator-model", "llama-3-8b")
    wait_text(page, headline, trainable("llama-3-8b", 32))
    page.wait_for_function("() => location.search.includes('model=llama-3-8b')")

    page.go_back()
    wait_text(page, headline, trainable("llama-2-7b", 32))
    settled(page)
    assert page.locator("#configurator-model").input_value() == "llama-2-7b"
    assert page.locator("#configurator-rank").input_value() == "32"
    assert page.locator("#configurator-rank-slider").input_value() == "5"  # 2^5

    page.go_back()
    wait_text(page, headline, trainable("llama-2-7b", 16))
    settled(page)
    assert page.locator("#configurator-rank").input_value() == "16"

    page.go_forward()
    wait_text(page, headline, trainable("llama-2-7b", 32))
    page.go_forward()
    wait_text(page, headline, trainable("llama-3-8b", 32))
    settled(page)
    assert page.locator("#configurator-model").input_value() == "llama-3-8b"


def test_open_full_page_keeps_the_embeds_settings(live_server, browser_page):
    page = browser_page
    page.goto(f"{live_server}/chapters/lora")
    embed = page.locator("[data-instrument=configurator]").first
    embed.scroll_into_view_if_needed()
    embed.locator("input[name=rank]").fill("64")
    embed_id = embed.get_attribute("data-embed")
    wait_text(page, f"[data-embed='{embed_id}'] [data-value=trainable]", trainable("llama-2-7b", 64))
    link = embed.locator(".full-page-link")
    page.wait_for_function("el => el.href.includes('rank=64')", arg=link.element_handle(), timeout=5_000)
    link.click()
    page.wait_for_url(re.compile(r"/instruments/configurator\?"))
    assert page.locator("#configurator-rank").input_value() == "64"
    assert page.locator("[data-value=trainable]").inner_text() == trainable("llama-2-7b", 64)


def test_rank_slider_steps_through_powers_of_two_and_the_box_takes_any_rank(live_server, browser_page):
    page = browser_page
    open_instrument(page, live_server, "configurator")
    slider, box = page.locator("#configurator-rank-slider"), page.locator("#configurator-rank")
    assert slider.is_visible() and slider.get_attribute("aria-valuetext") == "16"
    slider.focus()
    page.keyboard.press("ArrowRight")
    assert box.input_value() == "32" and slider.get_attribute("aria-valuetext") == "32"
    wait_text(page, "[data-value=trainable]", trainable("llama-2-7b", 32))
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert box.input_value() == "8"
    wait_text(page, "[data-value=trainable]", trainable("llama-2-7b", 8))
    page.keyboard.press("End")
    assert box.input_value() == "1024"
    page.keyboard.press("Home")
    assert box.input_value() == "1"
    wait_text(page, "[data-value=trainable]", trainable("llama-2-7b", 1))

    box.fill("24")  # not a power of two: kept exactly, the slider shows the nearest
    wait_text(page, "[data-value=trainable]", trainable("llama-2-7b", 24))
    assert slider.input_value() == "5" and slider.get_attribute("aria-valuetext") == "24"


def test_plots_hold_no_tab_stops(live_server, browser_page):
    page = browser_page
    page.goto(f"{live_server}/instruments/configurator")
    page.wait_for_selector(".plot.plot-ready", timeout=20_000)
    assert page.locator(".plot .modebar").count() == 0
    focusable = page.evaluate("""() => [...document.querySelectorAll('.plot a, .plot button, .plot [tabindex]')]
        .filter(el => el.tabIndex >= 0).length""")
    assert focusable == 0
    for _ in range(40):  # tabbing through the page never lands inside a plot
        page.keyboard.press("Tab")
        assert not page.evaluate("!!document.activeElement.closest('.plot')")


def test_screen_readers_hear_one_summary_once_the_reader_stops(live_server, browser_page):
    page = browser_page
    open_instrument(page, live_server, "configurator")
    assert page.locator(".instrument-result[aria-live]").count() == 0  # redraws are not read out
    status = page.locator(".instrument-status[role=status]")
    page.evaluate("""() => { window.statusChanges = 0;
        new MutationObserver(() => window.statusChanges++).observe(document.querySelector('.instrument-status'),
                                                                   {childList: true, characterData: true, subtree: true}); }""")
    page.locator("#configurator-rank-slider").focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(250)
    wait_text(page, "[data-value=trainable]", trainable("llama-2-7b", 128))
    page.wait_for_function("() => document.querySelector('.instrument-status').textContent.includes('trainable')",
                           timeout=10_000)
    assert trainable("llama-2-7b", 128) in status.inner_text()
    assert page.evaluate("window.statusChanges") == 1


def test_configurator_controls_follow_the_method(live_server, browser_page):
    page = browser_page
    open_instrument(page, live_server, "configurator")
    tokens = page.locator("#configurator-num_virtual_tokens")
    assert not tokens.is_visible()

    page.select_option("#configurator-method", "prefix")
    assert tokens.is_visible() and tokens.is_enabled()
    assert page.locator("#configurator-rank").is_disabled() and page.locator("#configurator-alpha").is_disabled()
    assert page.locator("input[name=target_modules][type=checkbox]").first.is_disabled()
    tokens.fill("40")
    prefix = params.count_trainable("llama-2-7b", "prefix", num_virtual_tokens=40).trainable
    wait_text(page, "[data-value=trainable]", f"{prefix:,}")
    assert page.locator("[data-figure=modules]").count() == 0  # no empty chart
    assert f"{prefix:,}" in page.locator("[data-value=trained]").inner_text()

    page.select_option("#configurator-method", "qlora")
    assert page.locator("#configurator-base_dtype").input_value() == "nf4"
    enabled = page.eval_on_selector_all("#configurator-base_dtype option:not([disabled])", "os => os.map(o => o.value)")
    assert enabled == ["nf4"]
    assert page.locator("#configurator-rank").is_enabled() and not tokens.is_visible()
    page.select_option("#configurator-method", "full")
    assert page.locator("#configurator-base_dtype").input_value() == "bf16"
    enabled = page.eval_on_selector_all("#configurator-base_dtype option:not([disabled])", "os => os.map(o => o.value)")
    assert enabled == ["bf16", "fp16", "fp32"]
    wait_text(page, "[data-value=trainable]", f"{params.count_trainable('llama-2-7b', 'full').trainable:,}")


def test_gpu_planner_takes_a_typed_memory_and_a_pasted_config(live_server, browser_page):
    page = browser_page
    open_instrument(page, live_server, "gpu-planner")
    memory = page.locator("#gpu-planner-memory_gib")
    assert not memory.is_visible()
    page.select_option("#gpu-planner-gpu", "custom")
    assert memory.is_visible()
    memory.fill("12")
    plan = planner.plan_training("llama-3.1-8b", 12 * GIB, seq_len=2048)
    qlora = plan.plan("qlora", True)
    expected = f"batch {qlora.at_seq.max_batch_size:,} × 2,048 tokens" if qlora.fits else "does not fit"
    wait_text(page, "[data-plan=qlora-ckpt] [data-value=verdict]", expected)

    page.locator(".paste-config summary").click()
    page.locator("#gpu-planner-config").fill(json.dumps({**load_hf_config("smollm2-360m"),
                                                         "_name_or_path": "HuggingFaceTB/SmolLM2-360M"}, indent=2))
    wait_text(page, "[data-value=model]", "SmolLM2-360M 361.8M parameters")
    settled(page)
    small = planner.plan_training("smollm2-360m", 12 * GIB, seq_len=2048).plan("lora", True)
    assert page.locator("[data-plan=lora-ckpt] [data-value=verdict]").inner_text() == \
        f"batch {small.at_seq.max_batch_size:,} × 2,048 tokens"
    page.wait_for_function("() => location.search.includes('config=')")
    carried = parse_qs(urlsplit(page.url).query)["config"][0]
    assert "\n" not in carried and json.loads(carried)["hidden_size"] == 960  # sent without its indentation

    page.locator("#gpu-planner-config").fill('{"model_type": "llama"}')
    page.wait_for_selector(".result-error[role=alert]", timeout=10_000)
    assert "config.hidden_size" in page.locator(".result-error").inner_text()


def test_chapters_read_typeset_maths_without_javascript(browser_context_factory, live_server):
    context = browser_context_factory(viewport={"width": 390, "height": 800}, java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{live_server}/chapters/lora")
    assert page.locator(".katex").count() > 5
    assert page.locator(".math:not([data-rendered])").count() == 0
    visible_tex = page.evaluate("document.querySelector('.chapter').innerText")
    assert "\\frac" not in visible_tex and "\\alpha" not in visible_tex  # no raw LaTeX on the page


@pytest.mark.parametrize("path", ["/chapters/lora", "/chapters/qlora"])
def test_maths_do_not_shift_the_page(browser_context_factory, live_server, path):
    context = browser_context_factory(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.add_init_script("""window.layoutShift = 0; new PerformanceObserver(list => { for (const e of list.getEntries())
        if (!e.hadRecentInput) window.layoutShift += e.value; }).observe({type: 'layout-shift', buffered: true});""")
    page.goto(f"{live_server}{path}")
    page.wait_for_load_state("load")
    page.wait_for_timeout(1500)
    shift = page.evaluate("window.layoutShift")
    assert shift < 0.02, f"cumulative layout shift {shift:.3f}"


CONTRAST = """el => { const parse = c => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = rgb => { const [r, g, b] = rgb.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                       return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const s = getComputedStyle(el), a = lum(parse(s.color)), b = lum(parse(s.backgroundColor));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05); }"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_skip_link_is_readable_when_focused(browser_context_factory, live_server, theme):
    context = browser_context_factory(viewport={"width": 1280, "height": 800}, color_scheme=theme)
    page = context.new_page()
    page.goto(f"{live_server}/chapters/lora")
    page.keyboard.press("Tab")
    link = page.locator(".skip-link")
    assert page.evaluate("document.activeElement.classList.contains('skip-link')")
    box = link.bounding_box()
    assert box and box["x"] >= 0  # on screen once focused
    assert link.evaluate(CONTRAST) >= 4.5
