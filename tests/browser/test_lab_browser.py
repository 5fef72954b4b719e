"""The lab from a reader's seat, in real Chromium against the real server: start a short run of
SmolLM2, watch the loss and the held-out answer stream in, read before/after, try the adapter
on a request of one's own, download an adapter that peft loads."""

from __future__ import annotations

import json
import re
import zipfile

import pytest

from tests.browser.test_layout_and_a11y import OVERFLOWING
from tests.conftest import serving

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory, lab_model_dir, small_task_dir):
    """`loralab serve` configured, as a self-hoster could, with an eight-request slice of the task."""
    env = {"LORALAB_LAB_TASK_DIR": str(small_task_dir), "LORALAB_MODEL_CACHE": str(lab_model_dir),
           "LORALAB_DATA_DIR": str(tmp_path_factory.mktemp("data")), "LORALAB_TRY_MAX_NEW_TOKENS": "48",
           "LORALAB_ANSWER_MAX_NEW_TOKENS": "32", "LORALAB_WARM_TRAINER": "1"}
    with serving(env) as base:
        yield base


def test_a_short_run_from_the_page(lab_server, lab_model_dir, browser_context_factory, screenshot_dir, tmp_path):
    context = browser_context_factory(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.pages[0] if context.pages else context.new_page()
    page.goto(f"{lab_server}/lab")
    # before any run, the status says what the calculators predict for the form's settings
    page.wait_for_selector("#lab-status[data-prediction='460,800']", timeout=10_000)
    assert "460,800 trainable parameters of 134,975,808" in page.inner_text("#lab-status")
    page.eval_on_selector("#lab-steps", "el => { el.value = '5'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    page.select_option("#lab-batch", "2")
    assert page.inner_text("#lab-steps-value") == "5"
    page.click("#lab-start")

    # loading and the "before" answers show as progress, then the steps stream in
    page.wait_for_function("() => document.getElementById('lab-status').textContent.includes('held-out requests')",
                           timeout=300_000)
    page.wait_for_selector("#lab-loss .scatterlayer .trace", timeout=300_000)
    assert page.inner_text("#lab-sample-log li:first-child .lab-sample-step") == "before"
    page.wait_for_selector("#lab-status[data-kind=done]", timeout=600_000)
    losses = page.evaluate("() => document.getElementById('lab-loss').data[0].y")
    assert len(losses) == 5 and all(v > 0 for v in losses)
    # the sample request's answers: before training, at step 5 (the end)
    steps = page.eval_on_selector_all("#lab-sample-log .lab-sample-step", "els => els.map(e => e.textContent)")
    assert steps == ["before", "step 5"]
    # before and after on both held-out requests, with the expected answer
    rows = page.eval_on_selector_all("#lab-compare tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")
    assert len(rows) == 2 and all("expected: LoraConfig(" in row[0] for row in rows)
    assert all(row[1] != row[2] for row in rows), rows  # training changed the answers
    headline = page.inner_text("#lab-headline")
    assert "Exact match, held out" in headline and "/2 →" in headline
    measured, predicted = (page.inner_text(f"#lab-table tbody tr td:nth-child({n})") for n in (3, 4))
    assert measured == predicted == "460,800"
    assert re.fullmatch(r"[\d,.]+ (KiB|MiB|GiB)", page.inner_text("#lab-table tbody tr td:nth-child(5)"))

    # try it: the reader's own request, answered by both models side by side
    page.fill("#lab-try-prompt", "Please configure DoRA for the attention layers, rank 4, alpha 8.")
    page.click("#lab-try-start")
    page.wait_for_selector("#lab-try-answers:not([hidden])", timeout=300_000)
    base, adapted = page.inner_text("#lab-try-base"), page.inner_text("#lab-try-adapted")
    assert base and adapted and base != adapted

    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        for theme in ("light", "dark"):
            # as the header's toggle does: set the theme and tell the plots to redraw in it
            page.evaluate(f"document.documentElement.dataset.theme = '{theme}'; "
                          f"document.dispatchEvent(new CustomEvent('loralab:theme', {{detail: '{theme}'}}))")
            page.wait_for_timeout(300)
            layout = page.evaluate(OVERFLOWING)  # no sideways scroll, nothing cut off
            wide = page.evaluate("""() => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth + 1)
                .map(e => e.tagName + '#' + e.id + '.' + String(e.className).slice(0, 30) + ' ' + Math.round(e.getBoundingClientRect().right)).slice(0, 12)""")
            assert layout["sideways"] <= 0 and not layout["found"], f"{width}px {theme}: {layout} {wide}"
            page.screenshot(path=str(screenshot_dir / f"lab-after-run-{width}-{theme}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    with page.expect_download() as download_info:
        page.click("#lab-table a.download")
    path = tmp_path / "adapter.zip"
    download_info.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        archive.extractall(tmp_path)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM" and config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"

    peft = pytest.importorskip("peft")
    from training.model import read_model

    base_model = read_model(lab_model_dir)  # the cache's packed weights, as float32
    model = peft.PeftModel.from_pretrained(base_model, tmp_path / "adapter")
    assert [n for n, _ in model.named_parameters() if "lora_B" in n], "the downloaded adapter loaded no LoRA weights"
