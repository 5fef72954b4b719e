"""The book's one unit convention: memory in binary units (GiB, MiB), in prose and instruments alike."""

from __future__ import annotations

import re

from bs4 import BeautifulSoup

from app.formatting import format_bytes, format_value
from calculators import quantities

DECIMAL_MEMORY = re.compile(r"\b\d[\d,.]*\s?(?:GB|MB|kB|TB)\b")


def test_bytes_default_to_binary_units():
    assert format_bytes(2 * 16_777_216) == "32.0 MiB"
    assert format_value(quantities.evaluate("gpu_memory_bytes", {"gpu": "h100-80gb"}).value, "bytes") == "80.0 GiB"
    assert format_value(quantities.evaluate("weights_bytes", {"model": "llama-2-7b", "dtype": "bf16"}).value,
                        "bytes") == "12.6 GiB"
    assert format_bytes(10**9, "gb") == "1.0 GB"  # decimal only when asked for by name


def test_no_chapter_prints_a_decimal_memory_figure(client, app):
    """Every computed byte count in every chapter is shown in GiB/MiB/KiB. The one exception is a tutorial's own
    figure quoted as it was stated (`nominal_bytes`, in the appendix), which is decimal on purpose."""
    for chapter in app.state.library().chapters:
        soup = BeautifulSoup(client.get(f"/chapters/{chapter.meta.label}").text, "html.parser")
        shown = [span.get_text() for span in soup.select("span.live-number")
                 if span["data-quantity"] != "nominal_bytes"]
        assert not [s for s in shown if DECIMAL_MEMORY.search(s)], chapter.meta.label
