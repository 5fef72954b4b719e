"""A reader's view in real Chromium: maths renders, the theme toggles and persists,
the page fits a phone. Screenshots land in .artifacts/screenshots/ to be looked at."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def background(page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


def test_chapter_renders_maths_and_theme_toggle_persists(live_server, browser_page, screenshot_dir):
    page = browser_page
    page.emulate_media(color_scheme="light")
    page.goto(f"{live_server}/chapters/lora")
    page.wait_for_selector(".katex", timeout=15_000)
    assert page.locator(".katex").count() > 5
    assert page.locator(".math.math-error").count() == 0
    assert page.locator(".katex-error").count() == 0, "KaTeX could not parse some maths"
    light_background = background(page)
    page.screenshot(path=str(screenshot_dir / "chapter-lora-light.png"))

    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    dark_background = background(page)
    assert dark_background != light_background
    page.screenshot(path=str(screenshot_dir / "chapter-lora-dark.png"))

    page.reload()
    page.wait_for_selector(".katex")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert background(page) == dark_background

    page.click("#theme-toggle")
    assert background(page) == light_background


def test_dark_system_preference_is_respected(live_server, browser_page):
    page = browser_page
    page.emulate_media(color_scheme="dark")
    page.goto(f"{live_server}/")
    dark = background(page)
    page.emulate_media(color_scheme="light")
    assert background(page) != dark


@pytest.mark.parametrize("path", ["/", "/chapters/lora", "/chapters/qlora", "/chapters/memory"])
def test_pages_fit_a_phone(live_server, browser_context_factory, screenshot_dir, path):
    context = browser_context_factory(viewport={"width": 375, "height": 812}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    page.goto(f"{live_server}{path}")
    page.wait_for_load_state("load")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 375px"
    name = "home" if path == "/" else path.rsplit("/", 1)[-1]
    page.screenshot(path=str(screenshot_dir / f"mobile-{name}.png"))
