"""Hostile input: every string a reader sends and a page shows is escaped, paths cannot
climb out of their folders, bodies are bounded, and the headers are on every response."""

from __future__ import annotations

import pytest

from app.security import CONTENT_SECURITY_POLICY, MAX_BODY_BYTES

HTML = {"accept": "text/html"}
HTMX = {"HX-Request": "true"}
PAYLOADS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "javascript:alert(1)"]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/instruments/configurator", "model"),
        ("/instruments/configurator", "target_modules"),
        ("/instruments/will-it-fit", "model"),
        ("/instruments/nf4-viewer", "distribution"),
    ],
)
def test_reader_strings_are_escaped_in_pages_and_fragments(client, path, field, payload):
    for headers in (HTML, HTMX):
        response = client.get(path, params={field: payload}, headers=headers)
        assert response.status_code in (200, 422)
        if "<" in payload or '"' in payload:
            assert payload not in response.text  # never verbatim
        assert "<script>alert" not in response.text and "<img src=x" not in response.text
        assert 'href="javascript:' not in response.text and 'src="javascript:' not in response.text


def test_api_errors_echo_input_only_as_json(client):
    response = client.get("/api/v1/params", params={"model": PAYLOADS[0]})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    "path",
    [
        "/static/../app/main.py",
        "/static/%2e%2e/app/main.py",
        "/static/..%2fapp%2fmain.py",
        "/static/vendor/../../pyproject.toml",
        "/chapters/..%2f..%2fpyproject.toml",
        "/chapters/../app/main.py",
        "/chapters/%2e%2e%2fREADME",
        "/instruments/..%2f..%2fapp",
    ],
)
def test_path_traversal_finds_nothing(client, path):
    response = client.get(path, headers=HTML)
    assert response.status_code == 404, (path, response.status_code)
    assert "import" not in response.text and "[project]" not in response.text


def test_security_headers_on_pages_static_api_and_errors(client):
    for path in ("/", "/chapters/lora", "/static/css/book.css", "/api/v1/nf4/levels", "/no/such/page",
                 "/api/v1/params?rank=0"):
        headers = client.get(path, headers=HTML).headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
    assert "script-src 'self' 'wasm-unsafe-eval'" in CONTENT_SECURITY_POLICY  # no 'unsafe-eval', no inline
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY.split("script-src")[1].split(";")[0]


def test_no_inline_script_in_any_page(client, app):
    from bs4 import BeautifulSoup

    paths = ["/", "/instruments", "/lab", "/docs"] + [f"/chapters/{c.meta.label}" for c in app.state.library().chapters]
    paths += [f"/instruments/{name}" for name in ("configurator", "will-it-fit", "nf4-viewer", "svd-rank", "scaling")]
    for path in paths:
        soup = BeautifulSoup(client.get(path, headers=HTML).text, "html.parser")
        for script in soup.find_all("script"):
            assert script.get("src") or script.get("type") == "application/json", (path, str(script)[:80])
        for tag in soup.find_all(True):
            assert not any(attr.startswith("on") for attr in tag.attrs), (path, tag.name)


def test_oversized_bodies_are_refused_with_413(client):
    big = b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}"
    response = client.post("/api/v1/train", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "body" in response.json()["detail"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024

    streamed = client.post("/api/v1/train/predict", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_training_request_fields_are_bounded_and_never_code(client):
    """The server never evaluates what a client sends: a module name must be an identifier."""
    for name in ("__import__('os').system('id')", "query;rm -rf /", "a" * 100):
        response = client.post("/api/v1/train/predict", json={"target_modules": [name]})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][-1] == "target_modules"
