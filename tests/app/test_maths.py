"""Maths typeset on the server: chapters arrive with KaTeX's HTML and MathML, from a cache that
a server without Node can use, and a formula nobody typeset is left for the browser."""

from __future__ import annotations

import shutil

import pytest
from bs4 import BeautifulSoup

from app.maths import MathTypesetter
from app.settings import PROJECT_ROOT

KATEX_JS = PROJECT_ROOT / "static" / "vendor" / "katex" / "katex.min.js"
needs_node = pytest.mark.skipif(shutil.which("node") is None or not KATEX_JS.is_file(), reason="needs node and KaTeX")


@pytest.mark.parametrize("label", ["lora", "qlora", "lora-family"])
def test_chapters_arrive_typeset(client, label):
    soup = BeautifulSoup(client.get(f"/chapters/{label}", headers={"accept": "text/html"}).text, "html.parser")
    formulas = soup.select(".math")
    assert len(formulas) > 5
    for formula in formulas:
        assert formula.get("data-rendered") == "server", formula.get_text()[:80]
        assert formula.select_one(".katex math annotation[encoding='application/x-tex']") is not None  # MathML for readers
    assert not soup.select(".katex-error")
    assert soup.select_one("script[src$='katex.min.js']") is None  # nothing left to typeset in the browser
    assert soup.select_one("link[href$='katex.min.css']") is not None


@needs_node
def test_cache_serves_a_server_without_node(tmp_path):
    page = ('<p><span class="math" data-display="inline">a &lt; b_{i}</span> and '
            '<div class="math" data-display="block">\\frac{\\alpha}{r}BA</div></p>')
    with_node = MathTypesetter(tmp_path / "cache.json", KATEX_JS, shutil.which("node")).typeset(page)
    assert (with_node.formulas, with_node.untypeset) == (2, 0)
    soup = BeautifulSoup(with_node.html, "html.parser")
    assert soup.select_one("span.math annotation").get_text() == "a < b_{i}"  # unescaped before typesetting
    assert soup.select_one("div.math .katex-display") is not None

    without_node = MathTypesetter(tmp_path / "cache.json", KATEX_JS, None).typeset(page)
    assert without_node.html == with_node.html and without_node.untypeset == 0


def test_without_node_or_cache_the_browser_typesets(tmp_path, make_app, client):
    page = '<span class="math" data-display="inline">x^2</span>'
    result = MathTypesetter(tmp_path / "empty.json", KATEX_JS, None).typeset(page)
    assert (result.html, result.untypeset) == (page, 1)

    app = make_app(maths_cache_path=tmp_path / "none.json", node_path=None)
    from fastapi.testclient import TestClient

    with TestClient(app) as bare:
        soup = BeautifulSoup(bare.get("/chapters/lora", headers={"accept": "text/html"}).text, "html.parser")
    assert soup.select(".math:not([data-rendered])")
    assert soup.select_one("script[src='/static/vendor/katex/katex.min.js']") is not None


@needs_node
def test_a_broken_node_leaves_the_tex(tmp_path):
    broken = MathTypesetter(tmp_path / "cache.json", KATEX_JS, "/bin/false")
    result = broken.typeset('<span class="math" data-display="inline">y</span>')
    assert result.untypeset == 1 and not (tmp_path / "cache.json").exists()
