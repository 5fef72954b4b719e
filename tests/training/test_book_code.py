"""The book's from-scratch layers (chapters 2 and 6), executed as a reader would run them, and checked
against training/layers.py: same weights in, same outputs and the same merged weight out.

Each block is registered in tests/app/test_content_python_blocks.py (EXECUTED_BY) with the test here that
loads it; cells (```{cell}) run in tests/app/test_cells_execute.py.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.content_blocks import python_block  # noqa: E402


def _run(*sources: str) -> dict:
    """Execute chapter blocks in order in one namespace, as a reader pasting them one after the other."""
    namespace: dict = {"__name__": "__main__"}
    for i, source in enumerate(sources, start=1):
        exec(compile(source, f"book block {i}", "exec"), namespace)  # noqa: S102 (our own book)
    return namespace


def test_lora_blocks_run_their_sanity_checks(capsys):
    """Chapter 2: the LoRALinear class, then the four checks (B = 0, trainable count, gradients, merge)."""
    _run(python_block("02-lora.md", 1), python_block("02-lora.md", 2))
    assert "unchanged at init" in capsys.readouterr().out


def test_dora_block_runs_its_sanity_checks(capsys):
    """Chapter 6: DoRALinear with its checks (magnitude shape, unchanged at init, count, gradients)."""
    _run(python_block("06-lora-family.md", 1))
    assert "magnitude" in capsys.readouterr().out


def _namespace(chapter: str) -> dict:
    namespace: dict = {"__name__": "book"}
    exec(python_block(chapter, 1), namespace)  # noqa: S102 (the class definitions only; see the tests above)
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
