"""The step timeline: it passes through the estimator's moments exactly, so its peak is the
estimate's peak; activations grow through the forward pass and are gone by the optimizer step."""

from __future__ import annotations

import pytest

from calculators import memory
from calculators.memory_timeline import STAGES, step_timeline


@pytest.mark.parametrize(("method", "ckpt"), [("lora", False), ("lora", True), ("full", False), ("qlora", True)])
def test_the_timeline_peaks_at_the_estimate(method, ckpt):
    estimate = memory.estimate_memory("llama-2-7b", method=method, r=16, target_modules="all-linear",
                                      seq_len=2048, gradient_checkpointing=ckpt)
    timeline = step_timeline(estimate, 32)
    assert max(p.total_bytes for p in timeline.points) == estimate.total_bytes == timeline.peak_bytes
    assert timeline.peak_phase == estimate.peak_phase
    for phase in estimate.phases:  # each of the estimator's moments is a point of the timeline
        assert any(p.total_bytes == phase.total_bytes for p in timeline.points), phase.name


def test_the_walk_through_a_lora_step():
    estimate = memory.estimate_memory("llama-2-7b", method="lora", r=16, target_modules="all-linear", seq_len=2048)
    points = step_timeline(estimate, 32).points
    positions = [p.position for p in points]
    assert positions == sorted(positions) and positions[0] == 0.0 and positions[-1] == 1.0
    assert {p.stage for p in points} == set(STAGES)
    forward = [p.activations_bytes for p in points if p.stage == "forward"]
    assert forward == sorted(forward) and forward[0] == 0  # activations pile up layer by layer
    phases = {phase.name: phase for phase in estimate.phases}
    # every block's by the last block of the forward pass, and the head's too by the loss
    assert forward[-1] == phases.get("forward, last layer", phases["loss forward"]).activations
    loss = [p for p in points if p.stage == "loss"]
    assert loss[0].activations_bytes == phases["loss forward"].activations > forward[-1] * 0.99
    assert all(p.logits_and_loss_bytes > 0 for p in loss)
    backward = [p.activations_bytes for p in points if p.stage == "backward"]
    assert backward == sorted(backward, reverse=True)  # freed block by block
    last = points[-1]
    assert last.activations_bytes == last.gradients_bytes == 0  # zero_grad(set_to_none=True)
    assert last.persistent_bytes == estimate.weights_bytes + estimate.adapter_weights_bytes + estimate.optimizer_states_bytes


def test_bad_arguments_name_the_field():
    estimate = memory.estimate_memory("gpt2", method="lora", r=8, target_modules="c_attn", seq_len=128)
    with pytest.raises(ValueError, match="n_layers"):
        step_timeline(estimate, 0)
    with pytest.raises(ValueError, match="samples_per_pass"):
        step_timeline(estimate, 12, samples_per_pass=0)

