"""The book's SVG figures: every figure draws valid, accessible, escaped SVG with a caption; every
chapter has figures; the numbers they show are the calculators'; live figures redraw over
htmx and without JavaScript; bad arguments fail the build or get a 422 naming the field."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from app.content import load_library
from app.figures import FIGURES
from app.figures.svg import Svg
from app.formatting import format_gpu_bytes, format_int
from app.rendering import make_templates
from app.settings import Settings
from calculators import memory, nf4, params

SVG_NS = "{http://www.w3.org/2000/svg}"
HTMX = {"HX-Request": "true"}
FRONT = "---\ntitle: Test chapter\nlabel: test\nsummary: A chapter for the tests.\n---\n\n"


def parse_svg(markup: str) -> ET.Element:
    """The SVG as XML: it must be well-formed on its own, not only as HTML."""
    root = ET.fromstring(str(markup))
    assert root.tag == f"{SVG_NS}svg"
    return root


def svg_texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG_NS}text")]


def assert_accessible_svg(root: ET.Element) -> None:
    assert root.get("role") == "img"
    assert root.get("aria-label", "").strip(), "an SVG figure needs an accessible name"
    title = root.find(f"{SVG_NS}title")
    assert title is not None and title.text == root.get("aria-label")
    view_box = [float(v) for v in root.get("viewBox", "").split()]
    assert len(view_box) == 4 and view_box[2] in (640, 360) and view_box[3] > 40
    for element in root.iter():
        assert element.tag != f"{SVG_NS}script", "no scripts in figures (the CSP forbids inline scripts)"
        assert "id" not in element.attrib, "no ids: a page may show a figure twice"
        assert not any(name.startswith("on") for name in element.attrib), "no event handlers"
        assert "style" not in element.attrib, "colours come from classes, so both themes work"


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_draws_valid_accessible_svg_with_a_caption(name):
    spec = FIGURES[name]
    art = spec.render(spec.parse({}))
    for markup in (art.wide, art.narrow):
        if markup is None:
            continue
        root = parse_svg(markup)
        assert_accessible_svg(root)
        assert any(text.strip() for text in svg_texts(root)), "a figure without a word of text"
    assert len(art.caption) > 80, "the caption must explain the figure"
    assert spec.title and spec.chapter


def test_svg_text_is_escaped():
    svg = Svg(640, 100, 'A <title> & "quotes"', description="<desc> & more")
    svg.text(10, 20, '<script>alert("x")</script> & <b>')
    svg.rect(0, 0, 10, 10, "frozen", tip="</title><script>")
    root = parse_svg(svg.markup())
    assert root.get("aria-label") == 'A <title> & "quotes"'
    assert svg_texts(root) == ['<script>alert("x")</script> & <b>']
    assert not [e for e in root.iter() if e.tag in (f"{SVG_NS}script", f"{SVG_NS}b")]
    assert root.find(f"{SVG_NS}desc").text == "<desc> & more"


def test_svg_refuses_non_finite_coordinates():
    svg = Svg(640, 100, "t")
    with pytest.raises(ValueError, match="coordinate"):
        svg.rect(float("nan"), 0, 1, 1, "frozen")


# ---------------------------------------------------------------------------- in the chapters


@pytest.fixture(scope="module")
def library():
    settings = Settings()
    return load_library(settings.content_dir, make_templates(settings).env)


def test_every_chapter_has_at_least_two_figures_each_with_name_and_caption(library):
    for chapter in library.chapters:
        soup = BeautifulSoup(chapter.html, "html.parser")
        figures = soup.select("figure.fig")
        assert len(figures) >= 2, f"{chapter.meta.label} has {len(figures)} figures"
        assert [f["data-figure"] for f in figures] == list(chapter.figures)
        for number, figure in enumerate(figures, start=1):
            caption = figure.select_one("figcaption")
            assert caption.select_one(".fig-label").get_text() == f"Figure {chapter.meta.number}.{number}"
            assert len(caption.get_text(strip=True)) > 80
            for svg in figure.select("svg"):
                assert svg.get("role") == "img" and svg.get("aria-label")


def test_every_registered_figure_appears_in_a_chapter(library):
    used = {name for chapter in library.chapters for name in chapter.figures}
    assert used == set(FIGURES), f"unused: {set(FIGURES) - used}"


def test_live_figures_bring_htmx_to_their_chapter(client):
    soup = BeautifulSoup(client.get("/chapters/qlora").text, "html.parser")
    assert soup.select_one("script[src='/static/vendor/htmx/htmx.min.js']") is not None
    form = soup.select_one("figure[data-figure=nf4-blocks] form.fig-controls")
    assert form["action"] == "/figures/nf4-blocks" and form["method"] == "get"  # works without JavaScript
    assert form["hx-get"] == "/figures/nf4-blocks"
    assert form.select_one("noscript button[type=submit]") is not None
    assert soup.select_one("link[href='/static/css/figures.css']") is not None


def render(tmp_path: Path, body: str) -> BeautifulSoup:
    (tmp_path / "01-test.md").write_text(FRONT + body, encoding="utf-8")
    chapters = load_library(tmp_path, make_templates(Settings()).env).chapters
    return BeautifulSoup(chapters[0].html, "html.parser")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("```{figure} no-such-figure\n```\n", "unknown figure 'no-such-figure'"),
        ("```{figure} lora-shapes\ncolour: red\n```\n", "colour"),
        ("```{figure} lora-shapes\nrank: 0\n```\n", "rank"),
        ("```{figure} lora-shapes\nrank: 5000\n```\n", "rank"),
        ("```{figure} lora-shapes\nmodule: lm_head_x\n```\n", "module"),
        ("```{figure} memory-breakdown\nmodel: gpt-9\n```\n", "model: unknown model 'gpt-9'"),
        ("```{figure} lora-shapes\n- a list\n```\n", "body must be 'key: value' lines"),
        ("```{figure} lora-shapes extra words\n```\n", "names one figure"),
    ],
)
def test_a_bad_figure_directive_fails_the_build_naming_file_and_figure(tmp_path, body, message):
    with pytest.raises(ValueError) as excinfo:
        render(tmp_path, body)
    text = str(excinfo.value)
    assert "01-test.md:" in text and message in text


def test_figure_directive_renders_numbered_figure_with_arguments(tmp_path):
    soup = render(tmp_path, "Text.\n\n```{figure} lora-shapes\nmodel: llama-3-8b\nmodule: k_proj\nrank: 16\n```\n")
    figure = soup.select_one("figure.fig.fig-live")
    assert figure["id"] == "fig-1-1"
    assert figure.select_one(".fig-label").get_text() == "Figure 1.1"
    expected = params.lora_module_params(4096, 1024, 16)
    assert f"{format_int(expected)} parameters" in figure.select_one(".fig-readout").get_text()
    assert figure.select_one("input[name=rank][value='16']").has_attr("checked")
    assert figure.select_one("input[type=hidden][name=model]")["value"] == "llama-3-8b"


# ---------------------------------------------------------------------------- the numbers are the calculators'


def _texts(name: str, **args) -> list[str]:
    spec = FIGURES[name]
    return svg_texts(parse_svg(spec.render(spec.parse(args)).wide))


def test_transformer_block_shows_gqa_shapes_and_peft_counts():
    texts = _texts("transformer-block", model="llama-3-8b", target_modules="q_proj,v_proj", rank=8)
    assert "4,096 → 1,024" in texts  # k_proj and v_proj are 4× narrower under GQA
    assert f"+{format_int(params.lora_module_params(4096, 1024, 8))} LoRA" in texts
    counted = params.count_trainable("llama-3-8b", "lora", r=8, target_modules="q_proj,v_proj")
    assert any(format_int(counted.trainable) in t for t in texts)
    assert texts.count("frozen") == 5 + 1  # k, o, gate, up, down, and the legend


def test_memory_breakdown_shows_the_estimators_totals():
    texts = _texts("memory-breakdown", model="llama-2-7b", rank=16, gradient_checkpointing=True)
    for method in ("full", "lora", "qlora"):
        estimate = memory.estimate_memory("llama-2-7b", method=method, r=16, target_modules="all-linear",
                                          seq_len=2048, gradient_checkpointing=True)
        assert any(format_gpu_bytes(estimate.total_with_context_bytes) in t for t in texts), method


def test_nf4_blocks_shows_bits_per_parameter_from_the_calculator():
    for blocksize, double_quant in ((64, False), (64, True), (256, True)):
        texts = _texts("nf4-blocks", blocksize=blocksize, double_quant=double_quant)
        bits = nf4.bits_per_param(blocksize, double_quant=double_quant)
        assert f"Bits per parameter: 4 + {bits:.3f} = {4 + bits:.3f}" in texts


def test_nf4_levels_ticks_are_the_sixteen_levels():
    spec = FIGURES["nf4-levels"]
    root = parse_svg(spec.render(spec.parse({})).wide)
    ticks = sorted(float(line.get("x1")) for line in root.iter(f"{SVG_NS}line") if line.get("class") == "level")
    assert len(ticks) == 16
    left, right = ticks[0], ticks[-1]
    for tick, level in zip(ticks, nf4.nf4_levels()):  # x is linear in the level, ±1 at the ends
        assert (tick - left) / (right - left) == pytest.approx((level + 1) / 2, abs=0.002)


# ---------------------------------------------------------------------------- live figures over HTTP


def _fragment(client, name: str, **query) -> BeautifulSoup:
    response = client.get(f"/figures/{name}", params=query, headers=HTMX)
    assert response.status_code == 200, response.text
    assert "<html" not in response.text and "<form" not in response.text and "<figcaption" not in response.text
    assert "HX-Request" in response.headers["vary"]
    return BeautifulSoup(response.text, "html.parser")


def _b_width(soup: BeautifulSoup) -> float:
    return float(soup.select_one(".fig-wide svg rect.fb")["width"])


def test_lora_shapes_fragment_follows_the_rank(client):
    small = _fragment(client, "lora-shapes", model="llama-2-7b", module="q_proj", rank=64)
    large = _fragment(client, "lora-shapes", model="llama-2-7b", module="q_proj", rank=256)
    assert "rank 256" in large.select_one(".fig-wide svg")["aria-label"]
    assert _b_width(large) == pytest.approx(4 * _b_width(small), rel=0.01)  # B's width is r, to scale
    expected = params.lora_module_params(4096, 4096, 256)
    assert f"{format_int(expected)} parameters" in large.select_one(".fig-readout").get_text()


def test_nf4_blocks_fragment_follows_the_block_size(client):
    soup = _fragment(client, "nf4-blocks", blocksize=256, double_quant="false")
    bits = nf4.bits_per_param(256, double_quant=False)
    assert f"{4 + bits:.3f} bits per parameter" in soup.select_one(".fig-readout").get_text()
    assert "fp32 constants" in soup.select_one(".fig-readout").get_text()


def test_figure_page_works_without_javascript(client):
    response = client.get("/figures/lora-shapes?model=llama-2-7b&module=down_proj&rank=64&alpha=16")
    assert response.status_code == 200
    soup = BeautifulSoup(response.text, "html.parser")
    assert soup.select_one("input[name=rank][value='64']").has_attr("checked")
    assert soup.select_one("select[name=module] option[selected]")["value"] == "down_proj"
    assert "11,008" in soup.select_one(".fig-readout").get_text()
    assert soup.select_one("a[href='/chapters/lora']") is not None


@pytest.mark.parametrize(
    ("query", "field"),
    [("rank=0", "rank"), ("rank=5000", "rank"), ("rank=eight", "rank"), ("colour=red", "colour"),
     ("module=nope", "module"), ("model=gpt-9", "model")],
)
def test_bad_figure_arguments_get_a_422_naming_the_field(client, query, field):
    response = client.get(f"/figures/lora-shapes?{query}", headers=HTMX)
    assert response.status_code == 422
    assert field in response.text and "role=\"alert\"" in response.text
    page = client.get(f"/figures/lora-shapes?{query}", headers={"accept": "text/html"})
    assert page.status_code == 422 and field in page.text


def test_unknown_figure_is_a_404(client):
    assert client.get("/figures/no-such-figure", headers={"accept": "text/html"}).status_code == 404


def test_gallery_shows_every_figure_and_the_home_page_links_it(client):
    home = BeautifulSoup(client.get("/").text, "html.parser")
    assert home.select_one(".tools a.tool-card[href='/figures']") is not None
    soup = BeautifulSoup(client.get("/figures").text, "html.parser")
    assert sorted(f["data-figure"] for f in soup.select("figure.fig")) == sorted(FIGURES)
    assert not re.search(r"\bid=\"fig-[^\"]+\"[^>]*\bid=", client.get("/figures").text)


# ---------------------------------------------------------------------------- chapters 10-13


def test_adaptation_ladder_shows_kv_cache_and_training_state():
    from calculators import preference
    from calculators.architectures import get_architecture

    texts = _texts("adaptation-ladder", model="llama-3-8b", rank=16, prompt_tokens=1500, retrieved_tokens=4000)
    arch = get_architecture("llama-3-8b")
    assert format_gpu_bytes(preference.kv_cache_bytes(arch, 1, 1500)) in texts
    assert format_gpu_bytes(preference.kv_cache_bytes(arch, 1, 4000)) in texts
    per = memory.full_ft_bytes_per_param()
    assert format_gpu_bytes(arch.n_params * per.total) in texts  # full fine-tuning's state
    lora = params.count_trainable(arch, "lora", r=16, target_modules="all-linear")
    assert format_gpu_bytes(memory.weight_bytes(arch.n_params, "bf16") + lora.trainable * per.total) in texts


def test_preference_memory_shows_each_steps_peak_and_the_reference_only_for_full_fine_tuning():
    from calculators import preference

    spec = FIGURES["preference-memory"]
    root = parse_svg(spec.render(spec.parse({})).wide)
    texts = svg_texts(root)
    for algorithm in ("sft", "dpo", "grpo"):
        for method in ("full", "lora", "qlora"):
            step = preference.preference_step("llama-3-8b", algorithm, method, r=16, seq_len=1024, group_size=8)
            assert format_gpu_bytes(step.total_bytes) in texts, (algorithm, method)
    references = [r for r in root.iter(f"{SVG_NS}rect") if r.get("class") == "hot" and r.find(f"{SVG_NS}title") is not None]
    assert len(references) == 2  # DPO and GRPO under full fine-tuning; none with an adapter


def test_selective_layers_fragment_follows_the_fraction(client):
    from calculators import selective

    for fraction in (0.125, 0.5):
        soup = _fragment(client, "selective-layers", fraction=fraction, model="llama-3-8b", rank=16)
        chosen = selective.selective_training("llama-3-8b", fraction)
        assert format_int(chosen.trainable) in soup.select_one(".fig-readout").get_text()
        trained = [r for r in soup.select(".fig-wide svg rect.train") if r.select_one("title")]
        assert trained and all(f"{chosen.layers_per_kind} of 32" in r.select_one("title").get_text() for r in trained)


def test_serving_fleet_fragment_follows_the_rank(client):
    from calculators import serving

    soup = _fragment(client, "serving-fleet", rank=64, model="llama-3-8b", gpu="h100-80gb")
    one = serving.serving_memory("llama-3-8b", 1, 64)
    readout = soup.select_one(".fig-readout").get_text()
    assert format_gpu_bytes(one.adapter_bytes) in readout
    assert f"{(80 * 2**30 - one.base_bytes) // one.adapter_bytes:,} adapters" in readout
    texts = [t.get_text() for t in soup.select(".fig-wide svg text")]
    assert format_gpu_bytes(serving.serving_memory("llama-3-8b", 1000, 64).shared_base_bytes) in texts
    assert f"+{100 * serving.decode_read_overhead('llama-3-8b', 64, 64):.1f}%" in texts


def test_memory_levers_show_the_estimators_totals():
    texts = " ".join(_texts("memory-levers", model="llama-2-7b", rank=16, seq_len=2048))
    for method, ckpt in (("full", False), ("lora", False), ("lora", True), ("qlora", True)):
        estimate = memory.estimate_memory("llama-2-7b", method=method, r=16, target_modules="all-linear",
                                          batch_size=1, seq_len=2048, gradient_checkpointing=ckpt)
        assert format_gpu_bytes(estimate.total_bytes) in texts, (method, ckpt)


def test_lora_at_a_glance_counts_and_points_to_chapters():
    texts = _texts("lora-at-a-glance", model="llama-2-7b", module="q_proj", rank=16, alpha=32)
    joined = " ".join(texts)
    assert format_int(params.lora_module_params(4096, 4096, 16)) in joined
    assert format_int(params.count_trainable("llama-2-7b", "lora", r=16, target_modules="all-linear").trainable) in joined
    assert "α/r = 32/16 = 2" in joined
    assert "ch. 2" in texts and "ch. 6" in texts  # the LoRA chapter and the family's


def test_usual_figures_sit_at_their_ratio_to_the_computed_ones():
    import math

    from app.figures.corrections import claims

    spec = FIGURES["usual-vs-computed"]
    root = parse_svg(spec.render(spec.parse({})).wide)
    dots = [float(c.get("cx")) for c in root.iter(f"{SVG_NS}circle")]
    rows = claims()
    assert len(dots) == len(rows)
    axis = [float(line.get("x1")) for line in root.iter(f"{SVG_NS}line") if line.get("class") == "axis"]
    one = axis[0]  # the "right" line, ratio 1
    for dot, claim in zip(dots, rows):
        assert (dot < one) == (claim.ratio < 1), claim.quote
    ratios = [c.ratio for c in rows]
    # the log scale: equal ratios of ratios are equal distances
    span = (dots[0] - one) / math.log10(ratios[0])
    for dot, ratio in zip(dots[1:], ratios[1:]):
        assert dot - one == pytest.approx(span * math.log10(ratio), abs=0.05)  # coordinates are written to 0.01
    by_quote = {c.quote: c for c in rows}
    assert by_quote["Full FT of a 7B model needs 56 GB"].usual == 56e9
    assert by_quote["Full FT of a 7B model needs 56 GB"].computed == memory.full_ft_bytes_per_param().total * 6_738_415_616


def test_full_ft_repair_ends_at_the_computed_training_state():
    texts = _texts("full-ft-repair")
    per = memory.full_ft_bytes_per_param()
    assert texts.count(format_gpu_bytes(6_738_415_616 * per.total)) == 1
    assert format_gpu_bytes(56e9) in texts and format_gpu_bytes(112e9) in texts


def test_a_live_figure_links_to_its_own_page_with_its_settings(client):
    soup = BeautifulSoup(client.get("/chapters/lora").text, "html.parser")
    figure = soup.select_one("figure[data-figure=lora-shapes]")
    assert figure["data-url-mode"] == "embed" and figure["id"] == "fig-2-2"
    link = figure.select_one("a.fig-page-link")
    assert link["href"] == "/figures/lora-shapes?rank=8&module=q_proj&model=llama-2-7b&alpha=16"
    assert soup.select_one("script[src='/static/js/figures.js']") is not None
    page = BeautifulSoup(client.get(link["href"]).text, "html.parser")  # the same drawing on its own page
    own = page.select_one("figure[data-figure=lora-shapes]")
    assert own["data-url-mode"] == "page" and own.select_one("a.fig-page-link") is None
    assert own.select_one(".fig-readout").get_text() == figure.select_one(".fig-readout").get_text()
    assert page.select_one("script[src='/static/js/figures.js']") is not None
    still = BeautifulSoup(client.get("/chapters/why-peft").text, "html.parser")  # no live figure, no script
    assert still.select_one("script[src='/static/js/figures.js']") is None
    assert not still.select("figure[data-url-mode]")
