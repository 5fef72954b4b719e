"""Allocated memory over one training step, for drawing: forward, loss, backward, optimizer step.

The estimator (`calculators.memory.estimate_memory`) evaluates a few moments of a step
exactly (its `phases`); this module lays them on a timeline and fills in the layer-by-layer
walk between them. The forward pass adds each block's saved activations in turn, the loss
adds its fp32 buffers, the backward pass frees a block's activations as it creates that
block's gradients, the optimizer updates in place, and `zero_grad(set_to_none=True)` frees
the gradients. Between two of the estimator's moments the walk is linear in the block
index (every block has the same shape), so the timeline's peak is the estimate's peak.
Pure Python: runs under Pyodide.
"""

from __future__ import annotations

from dataclasses import dataclass

from calculators.memory import MemoryEstimate, PhaseMemory

__all__ = ["STAGES", "TimelinePoint", "StepTimeline", "step_timeline"]

STAGES = ("forward", "loss", "backward", "optimizer", "next step")
PERSISTENT = ("weights", "quant_constants", "adapter_weights", "optimizer_states", "master_weights")


@dataclass(frozen=True)
class TimelinePoint:
    """Allocated bytes at one moment, by kind; `position` runs from 0 (step starts) to 1."""

    position: float
    stage: str  # one of STAGES
    persistent_bytes: int  # weights, quantization constants, adapters, optimizer states, master weights
    gradients_bytes: int
    activations_bytes: int
    logits_and_loss_bytes: int
    temporary_bytes: int

    @property
    def total_bytes(self) -> int:
        return (self.persistent_bytes + self.gradients_bytes + self.activations_bytes + self.logits_and_loss_bytes
                + self.temporary_bytes)


@dataclass(frozen=True)
class StepTimeline:
    points: tuple[TimelinePoint, ...]
    peak_bytes: int  # = the estimate's total_bytes
    peak_phase: str
    n_layers: int
    stage_spans: tuple[tuple[str, float, float], ...]  # (stage, start, end) positions, for labelling


# Where each stage sits on the 0..1 axis: forward and backward get most of the width.
_FORWARD = (0.0, 0.40)
_LOSS = (0.40, 0.48)
_BACKWARD = (0.48, 0.86)
_OPTIMIZER = (0.86, 0.94)
_NEXT = (0.94, 1.0)


def _persistent(phase: PhaseMemory) -> int:
    return sum(getattr(phase, name) for name in PERSISTENT)


def _kept(phase: PhaseMemory) -> int:
    """What the forward keeps for the backward: saved activations, and autocast's 16-bit weight copies
    where the estimator reports them (mixed precision on fp32 weights)."""
    return phase.activations + getattr(phase, "weight_copies", 0)


# The estimator's moment after the blocks' backward, under the names it has had.
_BACKWARD_END = ("backward end", "backward, first layer")


def _point(position: float, stage: str, phase: PhaseMemory, gradients: float, activations: float, logits: float,
           temporary: float) -> TimelinePoint:
    return TimelinePoint(position, stage, _persistent(phase), round(gradients), round(activations), round(logits),
                         round(temporary))


def step_timeline(estimate: MemoryEstimate, n_layers: int, samples_per_pass: int = 8) -> StepTimeline:
    """The step of `estimate` as points on a 0..1 timeline (one per `samples_per_pass` blocks and each phase)."""
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers: must be a positive integer, got {n_layers!r}")
    if isinstance(samples_per_pass, bool) or not isinstance(samples_per_pass, int) or samples_per_pass < 1:
        raise ValueError(f"samples_per_pass: must be a positive integer, got {samples_per_pass!r}")
    phases = {p.name: p for p in estimate.phases}
    end_name = next((n for n in _BACKWARD_END if n in phases), _BACKWARD_END[0])
    try:
        loss, last, end, optim = (phases[n] for n in ("loss backward", "backward, last layer", end_name,
                                                      "optimizer step"))
    except KeyError as exc:
        raise ValueError(f"estimate: missing the phase {exc.args[0]!r}") from exc
    forward_last = phases.get("forward, last layer")
    grads_before = loss.gradients  # non-zero only with gradient accumulation
    stored = _kept(loss)
    steps = min(samples_per_pass, n_layers)
    points: list[TimelinePoint] = [_point(0.0, "forward", loss, grads_before, 0, 0, 0)]
    for k in range(1, steps + 1):
        share = k / steps
        position = _FORWARD[0] + share * (_FORWARD[1] - _FORWARD[0])
        temporary = forward_last.temporary if forward_last is not None and k == steps else 0
        points.append(_point(position, "forward", loss, grads_before, stored * share, 0, temporary))
    for position in (_LOSS[0] + 0.01, _LOSS[1] - 0.01):  # the loss buffers live through the loss's backward
        points.append(_point(position, "loss", loss, loss.gradients, _kept(loss), loss.logits_and_loss,
                             loss.temporary))
    points.append(_point(_BACKWARD[0], "backward", last, last.gradients, _kept(last), last.logits_and_loss,
                         last.temporary))
    for k in range(1, steps):
        share = k / steps  # blocks done, walking down from the last
        position = _BACKWARD[0] + share * (_BACKWARD[1] - _BACKWARD[0])
        points.append(_point(position, "backward", end,
                             last.gradients + share * (end.gradients - last.gradients),
                             _kept(last) + share * (_kept(end) - _kept(last)), 0,
                             last.temporary + share * (end.temporary - last.temporary)))
    points.append(_point(_BACKWARD[1], "backward", end, end.gradients, _kept(end), 0, end.temporary))
    points.append(_point(_OPTIMIZER[0] + 0.04, "optimizer", optim, optim.gradients, _kept(optim), 0,
                         optim.temporary))
    points.append(_point(_OPTIMIZER[1], "optimizer", optim, optim.gradients, _kept(optim), 0, optim.temporary))
    points.append(_point(_NEXT[0] + 0.01, "next step", optim, grads_before, 0, 0, 0))
    points.append(_point(_NEXT[1], "next step", optim, grads_before, 0, 0, 0))
    spans = (("forward", *_FORWARD), ("loss", *_LOSS), ("backward", *_BACKWARD), ("optimizer", *_OPTIMIZER),
             ("next step", *_NEXT))
    return StepTimeline(tuple(points), estimate.total_bytes, estimate.peak_phase, n_layers, spans)
