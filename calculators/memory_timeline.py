"""Allocated memory over one training step, for drawing: forward, loss, backward, optimizer step.

The estimator (`calculators.memory.estimate_memory`) evaluates a few moments of a step
exactly (its `phases`); this module lays them on a timeline and fills in the layer-by-layer
walk between them. The forward pass adds each block's saved activations in turn, the loss
adds its fp32 buffers, the backward pass frees a block's activations as it creates that
block's gradients, the optimizer updates in place (autocast's 16-bit weight copies, alive
from the forward pass until their block's backward, are drawn as temporary), and `zero_grad(set_to_none=True)` frees
the gradients. Between two of the estimator's moments the walk is linear in the block
index (every block has the same shape), so the timeline's peak is the estimate's peak.
Pure Python: runs under Pyodide.
"""

from __future__ import annotations

from dataclasses import dataclass

from calculators.memory import COMPONENTS, MemoryEstimate, PhaseMemory

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


def _point(position: float, stage: str, phase: PhaseMemory, gradients: float, activations: float, logits: float,
           temporary: float) -> TimelinePoint:
    return TimelinePoint(position, stage, _persistent(phase), round(gradients), round(activations), round(logits),
                         round(temporary))


def _at(position: float, stage: str, phase: PhaseMemory) -> TimelinePoint:
    """One of the estimator's moments, exactly; autocast's 16-bit weight copies count as temporary."""
    return _point(position, stage, phase, phase.gradients, phase.activations, phase.logits_and_loss,
                  phase.temporary + phase.weight_copies)


def _between(position: float, stage: str, a: PhaseMemory, b: PhaseMemory, share: float) -> TimelinePoint:
    """A block-by-block walk from moment a (share 0) to moment b (share 1), linear in the block index."""
    def mix(part: str) -> float:
        return getattr(a, part) + share * (getattr(b, part) - getattr(a, part))

    return _point(position, stage, b, mix("gradients"), mix("activations"), mix("logits_and_loss"),
                  mix("temporary") + mix("weight_copies"))


def step_timeline(estimate: MemoryEstimate, n_layers: int, samples_per_pass: int = 8) -> StepTimeline:
    """The step of `estimate` as points on a 0..1 timeline (one per `samples_per_pass` blocks and each phase)."""
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers: must be a positive integer, got {n_layers!r}")
    if isinstance(samples_per_pass, bool) or not isinstance(samples_per_pass, int) or samples_per_pass < 1:
        raise ValueError(f"samples_per_pass: must be a positive integer, got {samples_per_pass!r}")
    phases = {p.name: p for p in estimate.phases}
    try:
        loss_fwd, loss, last, first, optim = (phases[n] for n in (
            "loss forward", "loss backward", "backward, last layer", "backward, first layer", "optimizer step"))
    except KeyError as exc:
        raise ValueError(f"estimate: missing the phase {exc.args[0]!r}") from exc
    forward_last = phases.get("forward, last layer")
    grads_before = loss.gradients  # non-zero only with gradient accumulation
    start = _point(0.0, "forward", loss, grads_before, 0, 0, 0)
    start_phase = PhaseMemory("step start", **{**{c: 0 for c in COMPONENTS}, **{c: getattr(loss, c) for c in PERSISTENT},
                                               "gradients": grads_before})
    # The forward pass walks towards the moment its last block runs (or, without such a moment, the loss).
    forward_end = forward_last or loss_fwd
    steps = min(samples_per_pass, n_layers)
    points: list[TimelinePoint] = [start]
    for k in range(1, steps + 1):
        position = _FORWARD[0] + k / steps * (_FORWARD[1] - _FORWARD[0])
        points.append(_at(position, "forward", forward_end) if k == steps
                      else _between(position, "forward", start_phase, forward_end, k / steps))
    points.append(_at(_LOSS[0] + 0.01, "loss", loss_fwd))
    points.append(_at(_LOSS[1] - 0.01, "loss", loss))
    points.append(_at(_BACKWARD[0], "backward", last))
    for k in range(1, steps):  # blocks done, walking down from the last
        position = _BACKWARD[0] + k / steps * (_BACKWARD[1] - _BACKWARD[0])
        points.append(_between(position, "backward", last, first, k / steps))
    points.append(_at(_BACKWARD[1], "backward", first))
    points.append(_at(_OPTIMIZER[0] + 0.04, "optimizer", optim))
    points.append(_at(_OPTIMIZER[1], "optimizer", optim))
    points.append(_point(_NEXT[0] + 0.01, "next step", optim, grads_before, 0, 0, 0))
    points.append(_point(_NEXT[1], "next step", optim, grads_before, 0, 0, 0))
    spans = (("forward", *_FORWARD), ("loss", *_LOSS), ("backward", *_BACKWARD), ("optimizer", *_OPTIMIZER),
             ("next step", *_NEXT))
    return StepTimeline(tuple(points), estimate.total_bytes, estimate.peak_phase, n_layers, spans)
