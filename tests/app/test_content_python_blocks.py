"""Every ```python block in content/ is executed by a test, with the pinned libraries.

A reader copies these blocks into their own environment, so a block that no longer works with
the libraries the book pins (transformers, peft) is a bug in the book. Each block is
registered below with the test that runs it; a block the book says needs a GPU or a large
model runs here on CPU at toy size. Cells (```{cell}) are run by test_cells_execute.py.
"""

from __future__ import annotations

import re

import pytest

from app.settings import PROJECT_ROOT
from tests.content_blocks import python_block, python_blocks

# Each block, and the test that executes it (file::function).
EXECUTED_BY = {
    ("02-lora.md", 1): "tests/training/test_book_code.py::test_lora_blocks_run_their_sanity_checks",
    ("02-lora.md", 2): "tests/training/test_book_code.py::test_lora_blocks_run_their_sanity_checks",
    ("06-lora-family.md", 1): "tests/training/test_book_code.py::test_dora_block_runs_its_sanity_checks",
    ("08-practice.md", 1): "tests/app/test_content_python_blocks.py::test_practice_loss_masking_block_learns_only_the_answer",
}
# Blocks whose test another part of issue 17 writes (the lab's peft loading example): they must
# move to EXECUTED_BY, with that test, once it exists.
AWAITING_A_TEST = {("09-lab.md", 1): "loading the lab's adapter with peft (the lab's tests)"}


def test_every_python_block_is_executed_by_a_named_test():
    blocks = python_blocks()
    unregistered = set(blocks) - set(EXECUTED_BY) - set(AWAITING_A_TEST)
    assert not unregistered, f"register a test that executes each of {sorted(unregistered)}"
    assert not set(EXECUTED_BY) - set(blocks), "a registered block no longer exists"
    for (chapter, n), test in EXECUTED_BY.items():
        path, _, function = test.partition("::")
        source = (PROJECT_ROOT / path).read_text()
        assert re.search(rf"^def {function}\(", source, re.M), f"{test} does not exist"
        assert f'python_block("{chapter}", {n})' in source, f"{test} does not load {chapter} block {n}"


def test_blocks_awaiting_a_test_are_not_yet_executed_anywhere():
    """Once a test loads an awaiting block, it belongs in EXECUTED_BY, named."""
    tests = "\n".join(p.read_text() for p in (PROJECT_ROOT / "tests").rglob("test_*.py"))
    for chapter, n in AWAITING_A_TEST:
        assert (chapter, n) in python_blocks(), f"{chapter} block {n} is gone: drop it from AWAITING_A_TEST"
        assert f'python_block("{chapter}", {n})' not in tests, f"move {chapter} block {n} to EXECUTED_BY"


# ChatML, the template of the lab's base model family (SmolLM2-Instruct): role markers and an
# end-of-turn token after every message; the generation prompt opens the assistant's turn.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def toy_chat_tokenizer():
    """A real transformers fast tokenizer with a ChatML template over a toy word-level vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "user assistant What is the capital of France ? Paris .".split()
    vocab = {word: i for i, word in enumerate(["<unk>", "<|im_start|>", "<|im_end|>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"]
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def test_practice_loss_masking_block_learns_only_the_answer():
    """Chapter 8's recipe: labels are -100 over the prompt and the token ids over the answer and its end of turn."""
    tokenizer = toy_chat_tokenizer()
    messages = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital."},
    ]
    namespace = {"tokenizer": tokenizer, "messages": messages}
    exec(compile(python_block("08-practice.md", 1), "<08-practice.md python block 1>", "exec"), namespace)
    ids, prompt_ids, labels = namespace["ids"], namespace["prompt_ids"], namespace["labels"]

    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids), type(ids)
    assert ids[: len(prompt_ids)] == prompt_ids  # the prompt with its generation prompt is a prefix
    assert len(labels) == len(ids)
    assert labels[: len(prompt_ids)] == [-100] * len(prompt_ids)
    learned = tokenizer.convert_ids_to_tokens([label for label in labels if label != -100])
    assert learned == ["Paris", "is", "the", "capital", ".", "<|im_end|>"]  # the answer, and the model learns to stop
