"""The chapter pipeline: directives render the calculators' values, arguments are escaped,
and a broken chapter fails the build with the file and the directive named."""

from __future__ import annotations

from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from app.content import load_library
from app.rendering import make_templates
from app.settings import Settings
from calculators import params

FRONT = "---\ntitle: Test chapter\nlabel: test\nsummary: A chapter for the tests.\n---\n\n"


def render(tmp_path: Path, body: str) -> BeautifulSoup:
    (tmp_path / "01-test.md").write_text(FRONT + body, encoding="utf-8")
    library = load_library(tmp_path, make_templates(Settings()).env)
    return BeautifulSoup(library.chapters[0].html, "html.parser")


def test_live_number_renders_the_calculators_value(tmp_path):
    soup = render(tmp_path, "LoRA trains {num}`lora_trainable model=llama-2-7b r=8 targets=all-linear` parameters.\n")
    number = soup.select_one("span.live-number")
    expected = params.count_trainable("llama-2-7b", "lora", r=8, target_modules="all-linear").trainable
    assert number.get_text() == f"{expected:,}" == "19,988,480"
    assert number["data-quantity"] == "lora_trainable"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{num}`no_such_quantity`\n", "unknown quantity 'no_such_quantity'"),
        ("{num}`model_params model=gpt-9`\n", "model: unknown model 'gpt-9'"),
        ("{num}`lora_trainable model=llama-2-7b r=eight targets=q,v`\n", "r:"),
        ("{num}`model_params model=gpt2 colour=red`\n", "unknown argument(s) ['colour']"),
        ("{ref}`no-such-chapter`\n", "names no chapter label"),
        ("{oops}`x`\n", "unknown role"),
        ("```{instrument} no-such-instrument\n```\n", "unknown instrument 'no-such-instrument'"),
        ("```{instrument} configurator\nrank: 0\n```\n", "rank"),
        ("```{quiz}\nquestion: Why?\n```\n", "a quiz needs 'question' and 'answer'"),
        ("```{mystery}\nbody\n```\n", "unknown directive {mystery}"),
    ],
)
def test_a_broken_directive_fails_the_build_naming_file_and_directive(tmp_path, body, message):
    with pytest.raises(ValueError) as excinfo:
        render(tmp_path, body)
    assert "01-test.md" in str(excinfo.value)
    assert message in str(excinfo.value)


def test_directive_arguments_cannot_inject_markup(tmp_path):
    soup = render(tmp_path, '```{note} <img src=x onerror="alert(1)">\nBody.\n```\n\n'
                            "{num}`lora_scaling alpha=16 r=8 rslora=false`\n")
    assert soup.find("img") is None
    assert '<img src=x onerror="alert(1)">' in soup.select_one(".callout-title").get_text()
    assert soup.select_one("span.live-number").get_text() == "2"


def test_quiz_renders_question_choices_and_answer(tmp_path):
    soup = render(tmp_path, "```{quiz}\nquestion: What is $r(d_{in}+d_{out})$ for r=8, 4096×4096?\n"
                            "choices: ['65,536', '{num}`module_lora_params model=llama-2-7b module=q_proj r=8`']\n"
                            "answer: 1\nexplanation: Two thin matrices.\n```\n")
    quiz = soup.select_one(".quiz")
    assert quiz is not None
    assert [li.get_text() for li in quiz.select(".quiz-choices li")] == ["65,536", "65,536"]
    answer = quiz.select_one("details.quiz-answer").get_text(" ", strip=True)
    assert "Answer: B. 65,536" in answer and "Two thin matrices." in answer
    assert quiz.select_one(".quiz-question .math") is not None


def test_the_book_states_the_computed_figures_not_the_myths(client):
    """Chapter 2 corrects the "350M, 5%" myth with the calculators' figures."""
    soup = BeautifulSoup(client.get("/chapters/lora").text, "html.parser")
    numbers = {span.get_text() for span in soup.select("span.live-number")}
    assert {"19,988,480", "4,194,304", "16,777,216"} <= numbers
    assert any(n.startswith("0.30") and n.endswith("%") for n in numbers), numbers
    gqa = BeautifulSoup(client.get("/chapters/rank-and-targets").text, "html.parser")
    assert "3,407,872" in {span.get_text() for span in gqa.select("span.live-number")}


def test_every_chapter_is_substantial(app):
    chapters = app.state.library().chapters
    assert [c.meta.label for c in chapters] == [
        "why-peft", "lora", "rank-and-targets", "memory", "qlora", "lora-family", "other-peft", "practice", "lab",
        "fine-tuning-in-context", "serving", "review", "tutorial-numbers"]
    for chapter in chapters:
        assert chapter.n_words > 1500, (chapter.meta.label, chapter.n_words)
        assert any(entry.title == "Summary" for entry in chapter.toc), chapter.meta.label
        assert any(entry.title == "Exercises" for entry in chapter.toc), chapter.meta.label
