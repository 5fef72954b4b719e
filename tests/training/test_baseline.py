"""The base model's held-out evaluation is computed once and reused, and reusing it is exact.

training/baseline.py rests on one claim: at step 0 an adapter adds exactly nothing, so the model
a run evaluates before training answers as its base does, whatever the rank, targets or seed.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.baseline import baseline_key  # noqa: E402
from training.generate import greedy_answers  # noqa: E402
from training.model import load_base  # noqa: E402
from training.run import Phase, RunSummary, TrainConfig, prepare, train, warm_up  # noqa: E402

SHORT = {"steps": 1, "batch_size": 2, "max_new_tokens": 10, "sample_every": 0, "precision": "fp32"}


@pytest.mark.parametrize(("method", "targets", "r"), [("lora", ("q_proj", "v_proj"), 8),
                                                      ("lora", ("down_proj", "o_proj", "k_proj"), 3),
                                                      ("dora", ("q_proj", "v_proj", "up_proj"), 5)])
def test_at_step_zero_an_adapted_model_answers_exactly_as_its_base(lab_model_dir, small_task, method, targets, r):
    base, tokenizer = load_base(str(lab_model_dir))
    config = TrainConfig(method=method, r=r, target_modules=targets, seed=11)
    adapted = prepare(config, lab_model_dir, torch.device("cpu"))[0].model
    prompts = [e.prompt for e in small_task.test]
    ids = tokenizer(prompts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(adapted(ids).logits, base(ids).logits)  # bit for bit, not merely close
    assert greedy_answers(adapted, tokenizer, small_task.system_prompt, prompts, 12) == \
        greedy_answers(base, tokenizer, small_task.system_prompt, prompts, 12)


def _before_phases(records) -> list[str]:
    return [r.message for r in records if isinstance(r, Phase) and r.phase == "before"]


def test_the_second_run_reads_the_first_runs_baseline(lab_model_dir, small_task, tmp_path):
    first = list(train(TrainConfig(**SHORT), lab_model_dir, task=small_task, device="cpu", baseline_dir=tmp_path))
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert len(_before_phases(first)) >= 2 and "Answering" in _before_phases(first)[0]  # evaluated, with progress
    other_settings = SHORT | {"r": 2, "target_modules": ("o_proj",), "seed": 3, "lr": 1e-2}
    second = list(train(TrainConfig(**other_settings), lab_model_dir, task=small_task, device="cpu",
                        baseline_dir=tmp_path))
    assert "the same for every run" in _before_phases(second)[0] and len(_before_phases(second)) == 1
    a, b = first[-1], second[-1]
    assert isinstance(a, RunSummary) and isinstance(b, RunSummary)
    assert (b.exact_match_before, b.answer_loss_before) == (a.exact_match_before, a.answer_loss_before)
    assert [s["before"] for s in b.samples] == [s["before"] for s in a.samples]
    # QLoRA's base is NF4 and DoRA is kept apart: other keys, evaluated afresh; the bound on answers too
    cpu = torch.device("cpu")
    keys = {baseline_key(lab_model_dir, small_task, method, tokens, 192, cpu, torch.float32)
            for method, tokens in (("lora", 10), ("qlora", 10), ("dora", 10), ("lora", 11))}
    assert len(keys) == 4


def test_warm_up_stores_what_a_run_would_compute(lab_model_dir, small_task, tmp_path):
    config = TrainConfig(**SHORT)
    assert warm_up(config, lab_model_dir, small_task, tmp_path, device="cpu") is True
    assert warm_up(config, lab_model_dir, small_task, tmp_path, device="cpu") is False  # kept: nothing to do
    fresh = list(train(config, lab_model_dir, task=small_task, device="cpu"))[-1]  # no folder: evaluates
    kept = list(train(config, lab_model_dir, task=small_task, device="cpu", baseline_dir=tmp_path))[-1]
    assert kept.samples == fresh.samples and kept.answer_loss_before == fresh.answer_loss_before


def test_an_unwritable_folder_only_means_evaluating_again(lab_model_dir, small_task, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    summary = list(train(TrainConfig(**SHORT), lab_model_dir, task=small_task, device="cpu",
                         baseline_dir=blocked / "baselines"))[-1]
    assert summary.held_out == 2 and not summary.cancelled
