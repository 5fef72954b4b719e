"""The lab from a reader's seat: start a short run, watch the loss curve grow, download
an adapter that peft loads."""

from __future__ import annotations

import json
import zipfile

import pytest

pytestmark = pytest.mark.browser


def test_short_run_from_the_page(live_server, browser_page, screenshot_dir, tmp_path):
    page = browser_page
    page.goto(f"{live_server}/lab")
    # before any run, the status says what the calculators predict for the form's settings
    page.wait_for_selector("#lab-status[data-prediction='74,883']", timeout=10_000)
    assert "74,883 trainable parameters" in page.inner_text("#lab-status")
    page.fill("#lab-steps", "20")  # range input: set the value, fire input
    page.eval_on_selector("#lab-steps", "el => { el.value = '20'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    page.select_option("#lab-batch", "8")
    page.select_option("#lab-seq", "32")
    page.click("#lab-start")

    page.wait_for_selector("#lab-loss .scatterlayer .trace", timeout=120_000)
    first_points = page.evaluate("document.getElementById('lab-loss').data[0].x.length")
    page.wait_for_function(
        f"() => document.getElementById('lab-loss').data[0].x.length > {first_points}", timeout=60_000
    )
    page.wait_for_selector("#lab-status[data-kind=done]", timeout=180_000)
    losses = page.evaluate("document.getElementById('lab-loss').data[0].y")
    assert len(losses) == 20 and all(v > 0 for v in losses)
    assert "→" in page.inner_text("#lab-table tbody tr td:nth-child(7)")
    measured, predicted = (page.inner_text(f"#lab-table tbody tr td:nth-child({n})") for n in (2, 3))
    assert measured == predicted == "74,883"
    page.screenshot(path=str(screenshot_dir / "lab-after-run.png"), full_page=True)

    with page.expect_download() as download_info:
        page.click("#lab-table a.download")
    path = tmp_path / "adapter.zip"
    download_info.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        archive.extractall(tmp_path)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"

    peft = pytest.importorskip("peft")
    from transformers import AutoModelForSequenceClassification

    from training.model import default_model_path

    base = AutoModelForSequenceClassification.from_pretrained(default_model_path(), num_labels=3, local_files_only=True)
    model = peft.PeftModel.from_pretrained(base, tmp_path / "adapter")
    trainable_lora = [n for n, _ in model.named_parameters() if "lora_A" in n]
    assert trainable_lora, "the downloaded adapter loaded no LoRA weights"
