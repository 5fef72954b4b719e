"""What can I train on my GPU: every answer is the largest that fits, checked against the estimator itself."""

from __future__ import annotations

import math

import pytest

from calculators import memory, planner
from calculators.architectures import ARCHITECTURES
from calculators.gpus import GIB, get_gpu


def fits(model: str, method: str, checkpointing: bool, batch_size: int, seq_len: int, budget: int) -> bool:
    estimate = memory.estimate_memory(model, method=method, r=16, target_modules="all-linear", batch_size=batch_size,
                                      seq_len=seq_len, gradient_checkpointing=checkpointing)
    return estimate.total_with_context_bytes <= budget


@pytest.mark.parametrize(("values", "budget", "expected"), [
    ([5, 7, 9, 11, 13], 10, 3),          # affine: the guess is right
    ([5, 7, 9, 11, 13], 13, 5),          # everything fits
    ([5, 7, 9, 11, 13], 4, 0),           # nothing fits
    ([5, 6, 20, 21, 22], 20, 3),         # a jump the line does not predict
    ([1, 1, 1, 1, 50], 1, 4),            # flat, then a wall
    ([3, 9, 10, 10, 10], 10, 5),         # concave
    ([1, 2, 4, 8, 16, 32, 64, 128], 40, 6),  # convex (eager attention's seq²)
])
def test_largest_fitting_equals_brute_force(values, budget, expected):
    calls: list[int] = []

    def total(n: int) -> int:
        calls.append(n)
        return values[n - 1]

    assert planner.largest_fitting(total, budget, len(values)) == expected
    brute = max((n for n in range(1, len(values) + 1) if values[n - 1] <= budget), default=0)
    assert expected == brute
    assert len(calls) == len(set(calls)), "an estimate was evaluated twice"


def test_an_affine_total_takes_four_evaluations():
    calls: list[int] = []

    def total(n: int) -> int:
        calls.append(n)
        return 1000 + 37 * n

    assert planner.largest_fitting(total, 1000 + 37 * 1234 + 5, 4096) == 1234
    assert len(calls) == 4


@pytest.mark.parametrize(("model", "gpu"), [("llama-3.1-8b", "rtx-4090"), ("llama-3.1-70b", "h100-80gb"),
                                            ("smollm2-360m", "t4"), ("qwen2.5-1.5b", "l4")])
def test_every_answer_fits_and_one_more_does_not(model, gpu):
    budget = planner.gpu_budget_bytes(gpu)
    plan = planner.plan_training(model, budget, seq_len=2048)
    assert len(plan.plans) == 6
    for p in plan.plans:
        for point in p.ladder:
            b = point.max_batch_size
            if b:
                assert fits(model, p.method, p.gradient_checkpointing, b, point.seq_len, budget)
            assert not fits(model, p.method, p.gradient_checkpointing, b + 1, point.seq_len, budget)
        if p.max_seq_len:
            assert fits(model, p.method, p.gradient_checkpointing, 1, p.max_seq_len, budget)
        if p.max_seq_len < ARCHITECTURES[model].max_position_embeddings:  # else: the model's context is the limit
            assert not fits(model, p.method, p.gradient_checkpointing, 1, p.max_seq_len + 1, budget)
        assert p.estimate.batch_size == max(1, p.at_seq.max_batch_size) and p.estimate.seq_len == 2048


def test_llama_8b_on_a_24gb_card():
    """The answer people look for: full fine-tuning does not fit, QLoRA fits more than LoRA, checkpointing helps."""
    plan = planner.plan_training("llama-3.1-8b", planner.gpu_budget_bytes("rtx-4090"), seq_len=2048)
    full, lora, qlora = (plan.plan(m, True) for m in ("full", "lora", "qlora"))
    assert not full.fits and full.max_seq_len == 0
    assert lora.fits and qlora.at_seq.max_batch_size > lora.at_seq.max_batch_size
    assert qlora.max_seq_len > lora.max_seq_len > plan.plan("lora", False).max_seq_len
    assert plan.plan("qlora", False).at_seq.max_batch_size < qlora.at_seq.max_batch_size
    # trainable parameters are peft's: r = 16 on every block linear of Llama-3.1-8B
    assert lora.trainable_params == qlora.trainable_params == 16 * 32 * (
        (4096 + 4096) + (4096 + 1024) * 2 + (4096 + 4096) + (4096 + 14336) * 2 + (14336 + 4096))
    assert lora.adapter_bytes == 4 * lora.trainable_params and full.adapter_bytes == 0
    assert full.trainable_params == plan.n_params


def test_ladder_is_monotone_and_stops_at_the_models_context():
    plan = planner.plan_training("smollm2-135m", planner.gpu_budget_bytes("t4"), seq_len=1024)
    for p in plan.plans:
        assert [pt.seq_len for pt in p.ladder] == [256, 512, 1024, 2048, 4096, 8192]  # max_position_embeddings 8192
        batches = [pt.max_batch_size for pt in p.ladder]
        assert batches == sorted(batches, reverse=True)
        assert p.best is not None and p.best.tokens == max(pt.tokens for pt in p.ladder)


def test_a_typed_budget_in_bytes():
    small = planner.plan_training("llama-3.2-1b", 8 * GIB, seq_len=1024, methods=("qlora",))
    large = planner.plan_training("llama-3.2-1b", 16 * GIB, seq_len=1024, methods=("qlora",))
    assert 0 < small.plans[0].at_seq.max_batch_size < large.plans[0].at_seq.max_batch_size
    assert planner.gpu_budget_bytes("h100-80gb") == get_gpu("h100-80gb").usable_bytes


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"budget_bytes": 0}, "budget_bytes"),
    ({"seq_len": 0}, "seq_len"),
    ({"seq_len": 200_000}, "seq_len"),
    ({"methods": ("dora",)}, "method"),
    ({"r": 0}, "r"),
])
def test_bad_input_names_the_field(kwargs, field):
    arguments = {"model": "llama-3.2-1b", "budget_bytes": 24 * GIB, **kwargs}
    with pytest.raises(ValueError, match=rf"^{field}:"):
        planner.plan_training(**arguments)


def test_a_huge_budget_stops_at_the_batch_bound():
    plan = planner.plan_training("smollm2-135m", 10**15, seq_len=256, methods=("lora",))
    assert plan.plans[0].at_seq.max_batch_size == planner.MAX_BATCH_SIZE
    assert plan.plans[0].max_seq_len == 8192
    assert math.isclose(plan.budget_bytes, 10**15)
