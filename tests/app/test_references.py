"""The bibliography and its citations: every work cited resolves to its entry, every entry is
cited somewhere, and every cross-reference to a section lands on a heading that exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from app.bibliography import load_bibliography
from app.content import load_library
from app.rendering import make_templates
from app.settings import PROJECT_ROOT, Settings

FRONT = "---\ntitle: Test chapter\nlabel: test\nsummary: A chapter for the tests.\n---\n\n"


def test_every_entry_is_cited_and_every_citation_resolves(app):
    library = app.state.library()
    cited = {key for chapter in library.chapters for key in chapter.citations}
    assert set(library.bibliography) == cited, (set(library.bibliography) - cited, cited - set(library.bibliography))
    arxiv = [ref.arxiv for ref in library.bibliography.values() if ref.arxiv]
    assert len(arxiv) == len(set(arxiv)), "an arXiv id appears twice"
    assert all(ref.link for ref in library.bibliography.values())


def test_citations_link_to_their_entries(client, app):
    page = BeautifulSoup(client.get("/references").text, "html.parser")
    anchors = {li["id"] for li in page.select("li.reference")}
    assert anchors == set(app.state.library().bibliography)
    lora = page.select_one("li#hu2021lora")
    assert "Edward J. Hu" in lora.get_text() and lora.select_one("a[href='https://arxiv.org/abs/2106.09685']")
    assert "LoRA from first principles" in lora.select_one(".reference-cited").get_text()
    for chapter in app.state.library().chapters:
        soup = BeautifulSoup(chapter.html, "html.parser")
        for link in soup.select("a.cite"):
            assert link["href"].split("#", 1)[1] in anchors, (chapter.meta.label, link["href"])
    chapter2 = BeautifulSoup(client.get("/chapters/lora").text, "html.parser")
    assert chapter2.select_one("a.cite[href='/references#hu2021lora']").get_text() == "Hu et al. 2021"


def test_the_home_page_links_the_references(client):
    home = BeautifulSoup(client.get("/").text, "html.parser")
    assert home.select_one("main a[href='/references']") is not None


def test_an_unknown_citation_fails_the_build(tmp_path: Path):
    (tmp_path / "references.yaml").write_text(
        "hu2021lora:\n  authors: [Edward J. Hu]\n  year: 2021\n  title: LoRA\n  venue: ICLR\n  arxiv: '2106.09685'\n")
    (tmp_path / "01-test.md").write_text(FRONT + "As {cite}`hu2022lora` showed.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"01-test\.md.*'hu2022lora' is not in content/references\.yaml"):
        load_library(tmp_path, make_templates(Settings()).env)


def test_bibliography_entries_are_validated(tmp_path: Path):
    (tmp_path / "references.yaml").write_text("x2021:\n  authors: [A B]\n  year: 2021\n  title: T\n  venue: V\n"
                                              "  arxiv: 'not-an-id'\n")
    with pytest.raises(ValueError, match="arxiv"):
        load_bibliography(tmp_path)
    assert load_bibliography(PROJECT_ROOT / "content")["kalajdzievski2023rslora"].short == "Kalajdzievski 2023"
    assert load_bibliography(PROJECT_ROOT / "content")["li2021prefix"].short == "Li and Liang 2021"


def test_every_section_reference_lands_on_a_heading(client, app):
    ids: dict[str, set[str]] = {}
    for chapter in app.state.library().chapters:
        soup = BeautifulSoup(chapter.html, "html.parser")
        ids[chapter.meta.label] = {tag["id"] for tag in soup.select("[id]")}
    broken = []
    for chapter in app.state.library().chapters:
        for link in BeautifulSoup(chapter.html, "html.parser").select("a.xref[href*='#']"):
            label, section = link["href"].removeprefix("/chapters/").split("#", 1)
            if section not in ids[label]:
                broken.append((chapter.meta.label, link["href"]))
    assert not broken, broken


def test_a_reference_to_a_missing_section_fails_the_build(tmp_path: Path):
    (tmp_path / "01-test.md").write_text(FRONT + "## Real section\n\nSee {ref}`test#real-section` and "
                                         "{ref}`test#no-such-section`.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no section 'no-such-section'"):
        load_library(tmp_path, make_templates(Settings()).env)
    (tmp_path / "01-test.md").write_text(FRONT + "## Real section\n\nSee {ref}`test#real-section`.\n", encoding="utf-8")
    html = load_library(tmp_path, make_templates(Settings()).env).chapters[0].html
    assert "Test chapter § Real section" in html
