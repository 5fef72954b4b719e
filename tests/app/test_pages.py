"""Route table for the reader-facing pages: status, a selector, and what it must hold."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup

HTML = {"accept": "text/html"}


@pytest.mark.parametrize(
    ("path", "headers", "status", "selector", "expected"),
    [
        ("/", HTML, 200, "h1", "Fine-tune big models"),
        ("/", HTML, 200, "#chapters li a[href='/chapters/lora']", "LoRA from first principles"),
        ("/chapters/lora", HTML, 200, "article.chapter h1", "LoRA from first principles"),
        ("/chapters/lora", HTML, 200, "a[rel=next]", "Rank and where to attach"),
        ("/chapters/lora", HTML, 200, "a[rel=prev]", "Why parameter-efficient fine-tuning"),
        ("/chapters/why-peft", HTML, 200, ".chapter-nav a[rel=next]", "LoRA"),
        ("/chapters/no-such-chapter", HTML, 404, ".error-page h1", "not in the book"),
        ("/no/such/page", HTML, 404, ".error-page h1", "not in the book"),
    ],
)
def test_page_routes(client, path, headers, status, selector, expected):
    response = client.get(path, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    soup = BeautifulSoup(response.text, "html.parser")
    element = soup.select_one(selector)
    assert element is not None, f"{selector} missing on {path}"
    assert expected in element.get_text(" ", strip=True)


def test_unknown_api_path_is_json_404(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_healthz_reports_the_chapters(client, app):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "chapters": len(app.state.library().chapters)}


def test_every_chapter_renders_with_contents_and_navigation(client, app):
    chapters = app.state.library().chapters
    assert len(chapters) >= 9
    for i, chapter in enumerate(chapters):
        response = client.get(f"/chapters/{chapter.meta.label}", headers=HTML)
        assert response.status_code == 200, chapter.meta.label
        soup = BeautifulSoup(response.text, "html.parser")
        toc_targets = [a["href"][1:] for a in soup.select(".toc a")]
        assert toc_targets, f"{chapter.meta.label} has no table of contents"
        for anchor in toc_targets:
            assert soup.find(id=anchor) is not None, f"{chapter.meta.label}: toc link #{anchor} has no target"
        assert bool(soup.select_one("a[rel=prev]")) == (i > 0)
        assert bool(soup.select_one("a[rel=next]")) == (i < len(chapters) - 1)
        assert soup.select_one("link[href='/static/vendor/katex/katex.min.css']") is not None


def test_no_page_references_another_host(client, app):
    paths = ["/"] + [f"/chapters/{c.meta.label}" for c in app.state.library().chapters]
    for path in paths:
        soup = BeautifulSoup(client.get(path, headers=HTML).text, "html.parser")
        for tag, attribute in (("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src")):
            for element in soup.find_all(tag):
                url = element.get(attribute, "")
                assert not url.startswith(("http:", "https:", "//")), f"{path} loads {url}"


def test_static_vendor_assets_are_served(client):
    for path in (
        "/static/vendor/katex/katex.min.js",
        "/static/vendor/katex/katex.min.css",
        "/static/vendor/htmx/htmx.min.js",
        "/static/vendor/plotly/plotly.min.js",
        "/static/css/book.css",
    ):
        assert client.get(path).status_code == 200, path


def test_big_libraries_go_out_precompressed_and_cacheable(client):
    gzip = client.get("/static/vendor/plotly/plotly.min.js", headers={"accept-encoding": "gzip"})
    plain = client.get("/static/vendor/plotly/plotly.min.js", headers={"accept-encoding": "identity"})
    assert gzip.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert gzip.headers["content-type"].startswith("text/javascript")
    assert gzip.content == plain.content  # the same library, decoded
    assert int(gzip.headers["content-length"]) < len(plain.content) / 2
    assert "max-age" in gzip.headers["cache-control"]
    wasm = client.get("/static/vendor/pyodide/pyodide.asm.wasm", headers={"accept-encoding": "gzip"})
    assert wasm.headers["content-type"] == "application/wasm"  # streaming compilation needs it
    again = client.get("/static/vendor/plotly/plotly.min.js",
                       headers={"accept-encoding": "gzip", "if-none-match": gzip.headers["etag"]})
    assert again.status_code == 304


def test_pages_are_compressed_and_our_assets_revalidate(client):
    page = client.get("/chapters/lora", headers={"accept-encoding": "gzip", **HTML})
    assert page.headers["content-encoding"] == "gzip"
    css = client.get("/static/css/book.css")
    assert css.headers["cache-control"] == "no-cache" and "etag" in css.headers
