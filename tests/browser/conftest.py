"""A real headless Debian Chromium, driven by Playwright's protocol client."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import PROJECT_ROOT

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = PROJECT_ROOT / ".artifacts" / "screenshots"


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser_context_factory():
    playwright_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; scripts/test installs Debian's chromium")
        pytest.skip("chromium is not installed (scripts/test installs it)")
    profile = tempfile.mkdtemp(prefix="loralab-chromium-")
    with playwright_api.sync_playwright() as playwright:
        contexts = []

        def new_context(**options):
            context = playwright.chromium.launch_persistent_context(
                tempfile.mkdtemp(dir=profile), executable_path=executable, args=CHROMIUM_FLAGS, headless=True, **options
            )
            contexts.append(context)
            return context

        yield new_context
        for context in contexts:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser_page(browser_context_factory):
    context = browser_context_factory(viewport={"width": 1280, "height": 900})
    page = context.pages[0] if context.pages else context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
