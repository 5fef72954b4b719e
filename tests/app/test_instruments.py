"""Instruments over HTTP: each standalone page and htmx fragment shows the calculators' values,
bad settings get a 422 naming the field, and the chapters embed what the registry holds."""

from __future__ import annotations

import json

import pytest
from bs4 import BeautifulSoup

from app.formatting import format_int
from app.instrument_registry import INSTRUMENTS
from calculators import memory, params

HTMX = {"HX-Request": "true"}
HTML = {"accept": "text/html"}


def _soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def _headline(soup: BeautifulSoup, key: str) -> str:
    element = soup.select_one(f"[data-value={key}]")
    assert element is not None, f"headline {key} missing"
    return element.get_text(strip=True)


@pytest.mark.parametrize("name", sorted(INSTRUMENTS))
def test_standalone_page_has_form_result_and_figures(client, name):
    response = client.get(f"/instruments/{name}", headers=HTML)
    assert response.status_code == 200
    soup = _soup(response)
    form = soup.select_one("form.instrument-form")
    assert form["action"] == f"/instruments/{name}" and form["method"] == "get"  # works without JavaScript
    # on its own page the URL and the history follow the settings (static/js/instruments.js)
    assert form.find_parent("section")["data-url-mode"] == "page"
    figures = soup.select(".instrument-result .plot script.figure-data")
    assert figures, "no figure"
    for figure in figures:
        spec = json.loads(figure.string)
        assert spec["data"], "a figure without traces"
    assert soup.select_one("script[src='/static/js/instruments.js']") is not None
    assert not soup.select("[role=alert]"), "the default settings must not show an error"


@pytest.mark.parametrize("name", sorted(INSTRUMENTS))
def test_htmx_request_gets_only_the_result(client, name):
    response = client.get(f"/instruments/{name}", headers=HTMX)
    assert response.status_code == 200
    assert "<html" not in response.text and "<form" not in response.text
    assert 'class="plot' in response.text
    assert "HX-Request" in response.headers["vary"]


def test_configurator_reproduces_the_classic_table(client):
    """Llama-2-7B, r=16 on q,k,v,o: 16,777,216 trainable parameters (4 × 32 × 16 × 8192)."""
    response = client.get(
        "/instruments/configurator",
        params={"model": "llama-2-7b", "rank": 16, "target_modules": "q_proj,k_proj,v_proj,o_proj"}, headers=HTMX,
    )
    soup = _soup(response)
    assert _headline(soup, "trainable") == "16,777,216"
    rows = {tr.select("td")[0].get_text(strip=True): tr.select("td")[3].get_text(strip=True)
            for tr in soup.select("[data-table=modules] tbody tr")}
    assert rows == {f"self_attn.{m}_proj": "4,194,304" for m in "qkvo"}


@pytest.mark.parametrize(
    ("query", "method", "targets"),
    [
        ({"model": "llama-3-8b", "rank": 8, "target_modules": "all-linear"}, "lora", "all-linear"),
        ({"model": "llama-3-8b", "rank": 8, "target_modules": ["q_proj", "v_proj"]}, "lora", "q_proj,v_proj"),
        ({"model": "mistral-7b", "rank": 32, "method": "dora", "target_modules": "attention"}, "dora", "attention"),
        ({"model": "gpt2", "rank": 4, "target_modules": "c_attn"}, "lora", "c_attn"),
    ],
)
def test_configurator_counts_equal_the_calculator(client, query, method, targets):
    soup = _soup(client.get("/instruments/configurator", params=query, headers=HTMX))
    expected = params.count_trainable(query["model"], method, r=query["rank"], target_modules=targets)
    assert _headline(soup, "trainable") == format_int(expected.trainable)


def test_configurator_memory_total_equals_the_estimator(client):
    query = {"model": "llama-2-7b", "method": "qlora", "rank": 16, "target_modules": "all-linear",
             "seq_len": 2048, "batch_size": 1, "gradient_checkpointing": "true", "dropout": 0}
    soup = _soup(client.get("/instruments/configurator", params=query, headers=HTMX))
    estimate = memory.estimate_memory("llama-2-7b", method="qlora", r=16, target_modules="all-linear",
                                      base_dtype="nf4", seq_len=2048, gradient_checkpointing=True)
    assert _headline(soup, "total") == f"{estimate.total_with_context_bytes / 2**30:,.1f} GiB"
    fits = [td.get_text(" ", strip=True) for td in soup.select("[data-table=gpus] tbody td:nth-of-type(1)")]
    assert fits == ["✓ fits"] * 4  # 6 GiB fits even a 24 GB card


def test_full_fine_tuning_of_a_70b_model_fits_no_card(client):
    soup = _soup(client.get("/instruments/configurator", params={"model": "llama-2-70b", "method": "full"}, headers=HTMX))
    cells = [td.get_text(" ", strip=True) for td in soup.select("[data-table=gpus] tbody td:nth-of-type(1)")]
    assert cells == ["✗ no"] * 4
    assert _headline(soup, "fit") == "none listed"


def test_switching_family_keeps_valid_modules_and_says_so(client):
    """Llama's names mean nothing to GPT-2: the result falls back to GPT-2's q,v preset and tells the reader."""
    soup = _soup(client.get("/instruments/configurator",
                            params={"model": "gpt2", "target_modules": ["q_proj", "v_proj"]}, headers=HTMX))
    choices = json.loads(soup.select_one("script.target-choices").string)
    assert choices["selected"] == ["c_attn"] and "c_fc" in choices["names"]
    notes = soup.select_one(".result-note").get_text(" ", strip=True)
    assert "no module named q_proj, v_proj" in notes


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("configurator", {"rank": 0}, "rank"),
        ("configurator", {"model": "no-such-model"}, "model"),
        ("configurator", {"method": "magic"}, "method"),
        ("configurator", {"model": "phi-3-mini", "method": "ia3"}, "method"),
        ("configurator", {"seq_len": "long"}, "seq_len"),
        ("configurator", {"unexpected": 1}, "unexpected"),
        ("will-it-fit", {"model": "nope"}, "model"),
        ("will-it-fit", {"rank": 100000}, "rank"),
        ("nf4-viewer", {"blocksize": 8}, "blocksize"),
        ("svd-rank", {"noise": -1}, "noise"),
        ("scaling", {"alpha": 0}, "alpha"),
    ],
)
def test_bad_settings_get_a_422_naming_the_field(client, path, query, field):
    fragment = client.get(f"/instruments/{path}", params=query, headers=HTMX)
    assert fragment.status_code == 422
    alert = _soup(fragment).select_one(".result-error[role=alert]")
    assert alert is not None and field in alert.get_text(" ", strip=True)
    page = client.get(f"/instruments/{path}", params=query, headers=HTML)
    assert page.status_code == 422 and field in page.text


def test_will_it_fit_marks_the_selected_model(client):
    soup = _soup(client.get("/instruments/will-it-fit", params={"model": "llama-2-13b"}, headers=HTMX))
    selected = soup.select("[data-table=fit] tr.total")
    assert [row.select_one("td").get_text(strip=True) for row in selected] == ["Llama-2 13B"]
    figure = json.loads(soup.select_one("[data-figure=fit] script").string)
    assert [trace["name"] for trace in figure["data"]] == ["Full fine-tuning", "LoRA", "QLoRA", "Llama-2 13B"]
    curves = memory.memory_vs_model_size(r=16, seq_len=2048, gradient_checkpointing=True)
    xs, ys = curves.series("qlora")
    assert figure["data"][2]["x"] == list(xs)
    assert figure["data"][2]["y"] == pytest.approx([y / 2**30 for y in ys])
    assert "Base weights" in figure["data"][2]["text"][0]  # hover carries the breakdown
    gpu_labels = [note["text"] for note in figure["layout"]["annotations"]]
    assert gpu_labels == ["RTX 4090 24 GB", "RTX A6000 48 GB", "H100 80 GB", "H200 141 GB"]


def test_chapter_embeds_carry_a_permalink_to_the_full_page(client):
    soup = _soup(client.get("/chapters/lora", headers=HTML))
    embed = soup.select_one("[data-instrument=configurator]")
    link = embed.select_one(".instrument-header a")["href"]
    assert link.startswith("/instruments/configurator?") and "rank=16" in link
    assert _headline(embed, "trainable") == "16,777,216"
    followed = _soup(client.get(link, headers=HTML))
    assert _headline(followed, "trainable") == "16,777,216"


def test_every_registered_instrument_is_embedded_and_plotly_is_lazy(client, app):
    embedded: dict[str, list[str]] = {}
    for chapter in app.state.library().chapters:
        soup = _soup(client.get(f"/chapters/{chapter.meta.label}", headers=HTML))
        names = [el["data-instrument"] for el in soup.select(".instrument[data-instrument]")]
        for name in names:
            embedded.setdefault(name, []).append(chapter.meta.label)
        assert "plotly" not in str(soup.select("script[src]")), "Plotly must load on demand only"
        has_js = soup.select_one("script[src='/static/js/instruments.js']") is not None
        assert has_js == bool(names or soup.select_one("[data-lab]")), chapter.meta.label
    assert set(embedded) == set(INSTRUMENTS)
    for name, spec in INSTRUMENTS.items():
        assert {label for label, _ in spec.chapters} <= set(embedded[name]), name


def test_nf4_viewer_overhead_is_the_chapters_figure(client):
    """One calculator behind both: the viewer's table and the QLoRA chapter's live numbers."""
    from app.formatting import format_value
    from calculators import quantities

    table = _soup(client.get("/instruments/nf4-viewer", params={"model": "llama-2-70b", "blocksize": 64}, headers=HTMX))
    sizes = [tr.select("td")[2].get_text(strip=True) for tr in table.select("[data-table=overhead] tbody tr")]
    chapter = _soup(client.get("/chapters/qlora", headers=HTML))
    shown = {el["title"]: el.get_text(strip=True) for el in chapter.select(".live-number[data-quantity=nf4_model_bytes]")}
    for double, size in ((False, sizes[1]), (True, sizes[2])):
        expected = format_value(quantities.evaluate("nf4_model_bytes", {"model": "llama-2-70b", "double": str(double).lower()}).value, "bytes")
        assert size == expected
        assert shown[f"computed by calculators: nf4_model_bytes model=llama-2-70b double={str(double).lower()}"] == expected


def test_scaling_demo_follows_every_control(client):
    soup = _soup(client.get("/instruments/scaling", params={"alpha": 32, "rank": 64, "lr": 0.0005, "loraplus_lr_ratio": 8},
                            headers=HTMX))
    assert _headline(soup, "lora-scale") == f"{32 / 64:.4g}" and _headline(soup, "rslora-scale") == f"{32 / 8:.4g}"
    assert _headline(soup, "lr-b") == f"{0.0005 * 8:.3g}"
    for name in ("scale", "update-size"):
        traces = json.loads(soup.select_one(f"[data-figure={name}] script").string)["data"]
        assert len(traces) == 2 and traces[0]["y"] != traces[1]["y"], f"{name}: two curves coincide"
    update = json.loads(soup.select_one("[data-figure=update-size] script").string)["data"]
    assert update[1]["y"] == pytest.approx([32.0] * len(update[1]["y"]))  # rsLoRA: flat at α
    note = soup.select_one(".result-note").get_text()
    assert "solid" not in note and "dashed" not in note  # the caption names only what is drawn


@pytest.mark.parametrize(("method", "enabled", "hidden"), [
    ("full", set(), {"num_virtual_tokens"}),
    ("prefix", {"num_virtual_tokens"}, set()),
    ("prompt", {"num_virtual_tokens"}, set()),
    ("ia3", set(), {"num_virtual_tokens"}),
    ("lora", {"rank", "alpha", "rslora", "dropout", "target_modules"}, {"num_virtual_tokens"}),
    ("qlora", {"rank", "alpha", "rslora", "dropout", "target_modules", "prepare_kbit"}, {"num_virtual_tokens"}),
])
def test_configurator_controls_follow_the_method(client, method, enabled, hidden):
    soup = _soup(client.get("/instruments/configurator", params={"method": method}, headers=HTML))
    form = soup.select_one("form.instrument-form")
    for fieldset in form.select("fieldset[data-when]"):
        names = {el["name"] for el in fieldset.select("[name]")}
        applies = bool(names & enabled)
        assert fieldset.has_attr("disabled") == (not applies), names
        assert fieldset.has_attr("hidden") == bool(names & hidden), names
    base = form.select_one("select[name=base_dtype]")
    chosen = base.select_one("option[selected]")["value"]
    allowed = [o["value"] for o in base.select("option") if not o.has_attr("disabled")]
    assert chosen in allowed
    assert (chosen == "nf4") == (method == "qlora")
    if method == "full":
        assert "int8" not in allowed and "nf4" not in allowed
    result = soup.select_one(".instrument-result")
    has_modules = result.select_one("[data-figure=modules]") is not None
    assert has_modules == (method in ("lora", "qlora", "dora", "ia3"))  # never an empty chart
    if method in ("full", "prefix", "prompt"):
        counted = params.count_trainable("llama-2-7b", method, num_virtual_tokens=20)
        assert format_int(counted.trainable) in result.select_one("[data-value=trained]").get_text()


@pytest.mark.parametrize("name", sorted(INSTRUMENTS))
def test_a_remembered_fragment_is_what_the_template_renders(client, app, name):
    """Repeated settings are served from the fragment cache: byte for byte the template's own
    `result` block, rendered the ordinary way, and the same on the second request."""
    from starlette.requests import Request

    spec = INSTRUMENTS[name]
    query = spec.query_model()
    first = client.get(f"/instruments/{name}", headers={"HX-Request": "true"})
    second = client.get(f"/instruments/{name}", headers={"HX-Request": "true"})
    assert first.status_code == second.status_code == 200 and first.text == second.text
    assert "HX-Request" in second.headers["vary"]
    request = Request({"type": "http", "method": "GET", "path": f"/instruments/{name}", "headers": [], "query_string": b"",
                       "app": app, "router": app.router})
    plain = app.state.templates.TemplateResponse(request, spec.template, spec.context(query, embed_id=name, standalone=True),
                                                 block_name="result")
    assert first.text == plain.body.decode()
