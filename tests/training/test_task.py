"""The lab's task data: built by our script, held-out requests really held out, loss on answers only."""

from __future__ import annotations

import importlib.util
import json

import pytest

torch = pytest.importorskip("torch")

from calculators.lab_task import LAB_TASK_MAX_ANSWER_TOKENS, LAB_TASK_MAX_TOKENS  # noqa: E402
from training.data import IGNORE_INDEX, collate, encode_examples  # noqa: E402
from training.model import load_base  # noqa: E402
from training.task import DATA_DIR, load_task  # noqa: E402


def _builder():
    spec = importlib.util.spec_from_file_location("lora_config_build", DATA_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_files_are_what_the_build_script_writes():
    train, test = _builder().build()
    for name, rows in (("train", train), ("test", test)):
        shipped = [json.loads(line) for line in (DATA_DIR / f"{name}.jsonl").read_text().splitlines()]
        assert shipped == rows, name


def test_held_out_requests_use_unseen_frames_and_unseen_settings():
    build = _builder()
    task = load_task()
    assert len(task.train) == 320 and len(task.test) == 16
    train_answers = {e.answer for e in task.train}
    assert not {e.answer for e in task.test} & train_answers  # no held-out setting combination is trained on
    assert not set(build.TEST_FRAMES) & set(build.TRAIN_FRAMES)
    openings = {frame.split("{")[0] for frame in build.TEST_FRAMES if frame.split("{")[0]}
    assert not any(e.prompt.startswith(tuple(openings)) for e in task.train)
    # the answers are the calculators' target presets, written as peft keyword arguments
    assert 'target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]' in " ".join(train_answers)


def test_labels_cover_the_answer_and_the_end_of_turn_only(lab_model_dir):
    _, tokenizer = load_base(str(lab_model_dir))
    task = load_task()
    encoded = encode_examples(tokenizer, task.system_prompt, task.train, max_len=192)
    first = encoded[0]
    answer_ids = [label for label in first.labels if label != IGNORE_INDEX]
    assert tokenizer.decode(answer_ids) == task.train[0].answer + tokenizer.eos_token
    prompt_ids = first.input_ids[: len(first.input_ids) - len(answer_ids)]
    assert all(label == IGNORE_INDEX for label in first.labels[: len(prompt_ids)])
    assert tokenizer.decode(prompt_ids).endswith("<|im_start|>assistant\n")
    assert task.system_prompt in tokenizer.decode(prompt_ids) and task.train[0].prompt in tokenizer.decode(prompt_ids)
    # the calculators' recorded widest example (the predicted sequence length) is the real one
    assert max(len(e.input_ids) for e in encoded) == LAB_TASK_MAX_TOKENS
    # and the longest answer (+ end of turn): the positions the lab's loss sends through the head
    held_out = encode_examples(tokenizer, task.system_prompt, task.test, max_len=192)
    assert max(e.answer_tokens for e in (*encoded, *held_out)) == LAB_TASK_MAX_ANSWER_TOKENS
    batch = collate(encoded[:3], tokenizer.pad_token_id)
    lengths = [len(e.input_ids) for e in encoded[:3]]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths


def test_too_short_a_max_len_names_the_field(lab_model_dir):
    _, tokenizer = load_base(str(lab_model_dir))
    task = load_task()
    with pytest.raises(ValueError, match="^max_seq_len:"):
        encode_examples(tokenizer, task.system_prompt, task.train[:1], max_len=16)
