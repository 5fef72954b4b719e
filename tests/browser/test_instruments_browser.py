"""Instruments in real Chromium: moving a control swaps in the calculator's value, the URL
follows the settings and restores them, and each instrument is screenshotted light and dark."""

from __future__ import annotations

import re

import pytest

from calculators import lowrank, nf4, params, scaling

pytestmark = pytest.mark.browser


def headline(page, key: str) -> str:
    return page.locator(f".instrument-result [data-value={key}]").inner_text().strip()


def wait_for_headline(page, key: str, expected: str) -> None:
    page.wait_for_function(
        "([key, expected]) => { const el = document.querySelector(`.instrument-result [data-value=${key}]`);"
        " return el && el.textContent.trim() === expected; }",
        arg=[key, expected], timeout=10_000,
    )


def settle(page) -> None:
    """Wait until no instrument request is in flight and the figures are drawn."""
    page.wait_for_function("() => !document.querySelector('.instrument.is-loading')", timeout=10_000)
    page.wait_for_selector(".instrument-result .plot.plot-ready", timeout=15_000)


def test_configurator_slider_checkbox_and_model_switch(live_server, browser_page):
    page = browser_page
    page.goto(f"{live_server}/instruments/configurator?model=llama-2-7b&rank=16&target_modules=q_proj,k_proj,v_proj,o_proj")
    settle(page)
    assert headline(page, "trainable") == "16,777,216"

    page.locator("#configurator-rank").fill("20")  # the number box takes any rank; the slider steps by powers of two
    expected = params.count_trainable("llama-2-7b", "lora", r=20, target_modules="q_proj,k_proj,v_proj,o_proj")
    wait_for_headline(page, "trainable", f"{expected.trainable:,}")

    page.locator("input[name=target_modules][value=down_proj]").check()
    expected = params.count_trainable("llama-2-7b", "lora", r=20, target_modules="q_proj,k_proj,v_proj,o_proj,down_proj")
    wait_for_headline(page, "trainable", f"{expected.trainable:,}")
    rows = page.locator("[data-table=modules] tbody tr td:first-child").all_inner_texts()
    assert "mlp.down_proj" in rows

    # The URL carries the settings; opening it elsewhere restores them.
    settle(page)
    shared = page.url
    assert "rank=20" in shared and "down_proj" in shared
    other = page.context.new_page()
    other.goto(shared)
    assert other.locator("#configurator-rank").input_value() == "20"
    assert other.locator("input[name=target_modules][value=down_proj]").is_checked()
    assert headline(other, "trainable") == f"{expected.trainable:,}"
    other.close()

    # Another family: the checkboxes become GPT-2's, the count follows its q,v preset.
    page.select_option("#configurator-model", "gpt2")
    gpt2 = params.count_trainable("gpt2", "lora", r=20, target_modules="c_attn")
    wait_for_headline(page, "trainable", f"{gpt2.trainable:,}")
    names = page.locator("input[name=target_modules][type=checkbox]").evaluate_all("boxes => boxes.map(b => b.value)")
    assert "c_attn" in names and "q_proj" not in names
    assert page.locator("input[name=target_modules][value=c_attn]").is_checked()


def test_will_it_fit_marks_the_model_and_follows_the_rank(live_server, browser_page):
    page = browser_page
    page.goto(f"{live_server}/instruments/will-it-fit")
    settle(page)
    page.select_option("#will-it-fit-model", "llama-2-13b")
    page.wait_for_function(
        "() => document.querySelector('[data-table=fit] tr.total td')?.textContent.trim() === 'Llama-2 13B'", timeout=10_000)
    lora_before = page.locator("[data-table=fit] tr.total td").nth(3).inner_text()
    page.locator("#will-it-fit-rank").fill("128")
    page.wait_for_function(
        "before => document.querySelector('[data-table=fit] tr.total').children[3].textContent.trim() !== before",
        arg=lora_before, timeout=10_000)
    settle(page)
    assert "rank=128" in page.url and "model=llama-2-13b" in page.url
    traces = page.evaluate("document.querySelector('[data-figure=fit]').data.map(t => t.name)")
    assert traces == ["Full fine-tuning", "LoRA", "QLoRA", "Llama-2 13B"]


def test_nf4_viewer_block_size_changes_the_overhead(live_server, browser_page):
    page = browser_page
    page.goto(f"{live_server}/instruments/nf4-viewer")
    settle(page)
    page.select_option("#nf4-viewer-blocksize", "128")
    page.wait_for_function(
        "() => document.querySelector('[data-table=overhead] tbody tr:nth-child(2) td:nth-child(2)')?.textContent.trim() === "
        f"'{4 + nf4.bits_per_param(128):.3f}'", timeout=10_000)  # 4 code bits + 32/128
    stats = nf4.quantization_error(nf4.sample_weights("normal", n=128 * 64, seed=0), "nf4", 128, n_bins=41)
    assert headline(page, "nf4-mse") == f"{stats.mse:.3g}"
    assert "blocksize=128" in page.url


def test_svd_rank_error_hits_the_noise_floor(live_server, browser_page):
    page = browser_page
    page.goto(f"{live_server}/instruments/svd-rank")
    settle(page)
    page.locator("#svd-rank-intrinsic_rank").fill("4")
    update = lowrank.make_low_rank_update(128, 128, 4, lowrank.noise_std_for_ratio(128, 128, 0.05), 0)
    error = lowrank.svd_error_curve(update.matrix, [4]).relative_errors[0]
    wait_for_headline(page, "error-at-intrinsic", f"{error:.4f}")
    assert headline(page, "noise-floor") == f"{update.noise_floor:.4f}"
    assert abs(error - update.noise_floor) < 0.01
    assert_url_restores(page, "intrinsic_rank", "4", "error-at-intrinsic", f"{error:.4f}")


def test_scaling_demo_follows_alpha(live_server, browser_page):
    page = browser_page
    page.goto(f"{live_server}/instruments/scaling?alpha=16&rank=16")
    settle(page)
    page.locator("#scaling-alpha").fill("64")
    wait_for_headline(page, "lora-scale", f"{scaling.lora_scaling(64, 16):.4g}")
    assert headline(page, "rslora-scale") == f"{scaling.lora_scaling(64, 16, use_rslora=True):.4g}"
    assert_url_restores(page, "alpha", "64", "lora-scale", f"{scaling.lora_scaling(64, 16):.4g}")


def assert_url_restores(page, field: str, value: str, key: str, expected: str) -> None:
    """The address bar follows a changed setting, and opening that address shows the same result."""
    page.wait_for_function(
        "([field, value]) => new URLSearchParams(location.search).get(field) === value", arg=[field, value], timeout=5_000)
    other = page.context.new_page()
    other.goto(page.url)
    assert other.locator(f"form.instrument-form [name={field}]").input_value() == value
    assert headline(other, key) == expected
    other.close()


def test_chapter_embed_remembers_its_settings_in_the_chapter_url(live_server, browser_page):
    page = browser_page
    page.goto(f"{live_server}/chapters/lora")
    embed = page.locator("[data-instrument=configurator]").first
    assert page.evaluate("!window.Plotly"), "Plotly loads only when a figure nears the viewport"
    embed.scroll_into_view_if_needed()
    embed.locator(".plot.plot-ready").first.wait_for(timeout=15_000)
    embed_id = embed.get_attribute("data-embed")
    embed.locator("input[name=rank]").fill("32")
    expected = params.count_trainable("llama-2-7b", "lora", r=32, target_modules="q_proj,k_proj,v_proj,o_proj")
    page.wait_for_function(
        "([id, text]) => document.querySelector(`[data-embed='${id}'] [data-value=trainable]`).textContent.trim() === text",
        arg=[embed_id, f"{expected.trainable:,}"], timeout=10_000)
    page.wait_for_function("id => location.search.includes(id + '.rank=32')", arg=embed_id, timeout=5_000)
    page.reload()
    page.wait_for_function(
        "([id, text]) => document.querySelector(`[data-embed='${id}'] [data-value=trainable]`)?.textContent.trim() === text",
        arg=[embed_id, f"{expected.trainable:,}"], timeout=10_000)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", ["configurator", "will-it-fit", "nf4-viewer", "svd-rank", "scaling"])
def test_instrument_screenshots(live_server, browser_context_factory, screenshot_dir, name, scheme):
    context = browser_context_factory(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server}/instruments/{name}")
    settle(page)
    page.wait_for_timeout(300)  # Plotly's transitions
    # Plot text follows the theme: tick labels in the page's muted text colour, the other
    # text (titles) in the page's text colour, and that colour is the scheme's own.
    text_colour = page.evaluate("getComputedStyle(document.body).color")
    assert plot_colours(page) == {"ticks": css_colour(page, "var(--text-muted)"), "titles": text_colour}
    assert (luminance(text_colour) > 0.5) == (scheme == "dark"), f"{scheme} page with text {text_colour}"
    assert not errors, errors
    page.screenshot(path=str(screenshot_dir / f"instrument-{name}-{scheme}.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert width <= 0


def css_colour(page, value: str) -> str:
    """A CSS colour (such as var(--text-muted)) as the browser computes it: 'rgb(r, g, b)'."""
    return page.evaluate(
        """value => { const probe = document.createElement('span'); probe.style.color = value;
        document.body.append(probe); const colour = getComputedStyle(probe).color; probe.remove(); return colour; }""",
        value,
    )


def plot_colours(page) -> dict[str, str]:
    """The fill of the first figure's tick labels and of its title texts (each must be one colour)."""
    fills = page.evaluate("""() => {
        const plot = document.querySelector('.instrument-result .plot.plot-ready');
        const fills = selector => [...new Set([...plot.querySelectorAll(selector)].map(t => t.style.fill))];
        return {ticks: fills('.xtick text, .ytick text'), titles: fills('.g-xtitle text, .g-ytitle text, .gtitle')};
    }""")
    assert len(fills["ticks"]) == 1 and len(fills["titles"]) == 1, fills
    return {key: values[0] for key, values in fills.items()}


def luminance(colour: str) -> float:
    """Relative luminance (WCAG 2) of an 'rgb(r, g, b)' colour: 0 black, 1 white."""
    channels = [int(c) / 255 for c in re.findall(r"\d+", colour)[:3]]
    r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_theme_toggle_recolours_drawn_figures(live_server, browser_context_factory):
    """Switching the theme on a page re-themes figures already drawn, without a reload."""
    page = browser_context_factory(viewport={"width": 1280, "height": 900}, color_scheme="light").new_page()
    page.goto(f"{live_server}/instruments/configurator")
    settle(page)
    light = plot_colours(page)
    assert light == {"ticks": css_colour(page, "var(--text-muted)"), "titles": css_colour(page, "var(--text)")}
    page.click("#theme-toggle")
    page.wait_for_function("() => document.documentElement.dataset.theme === 'dark'")
    page.wait_for_function(
        "before => document.querySelector('.instrument-result .plot .xtick text').style.fill !== before",
        arg=light["ticks"], timeout=5_000)
    dark = plot_colours(page)
    assert dark == {"ticks": css_colour(page, "var(--text-muted)"), "titles": css_colour(page, "var(--text)")}
    assert luminance(dark["titles"]) > 0.5 > luminance(light["titles"])
    assert luminance(dark["ticks"]) > luminance(light["ticks"])


@pytest.mark.parametrize("name", ["configurator", "will-it-fit"])
def test_instruments_fit_a_phone(live_server, browser_context_factory, screenshot_dir, name):
    context = browser_context_factory(viewport={"width": 375, "height": 812}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    page.goto(f"{live_server}/instruments/{name}")
    page.locator(".instrument-result .plot").first.scroll_into_view_if_needed()  # figures draw near the viewport
    settle(page)
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    clipped = page.evaluate("""() => [...document.querySelectorAll('.instrument-result .result-table')].filter(table => {
        const t = table.closest('.table-scroll') || table;  // a wide table scrolls inside its own box
        const box = t.getBoundingClientRect(), frame = t.closest('.instrument').getBoundingClientRect();
        const scrolls = getComputedStyle(t).overflowX === 'auto';
        return box.right > frame.right + 1 || (t.scrollWidth > t.clientWidth + 1 && !scrolls);
    }).length""")
    assert clipped == 0, "a result table is cut off at 375 px"
    page.screenshot(path=str(screenshot_dir / f"mobile-instrument-{name}.png"), full_page=True)
