"""Layer-selective full training (Spectrum, Hartford et al. 2024): train a fraction of the layers, freeze the rest.

Spectrum ranks every linear module by a signal-to-noise ratio of its weight spectrum, computed
before training, and unfreezes the top fraction of each module kind (e.g. the 25% of `q_proj`
layers with the highest SNR). Those modules train in full, with ordinary optimizer state; the
others are frozen. No adapter, nothing to merge.

Counted here: the trainable parameters for a given fraction, and the per-parameter training state
of mixed-precision AdamW on them (bf16 weights for everything, plus bf16 gradients, fp32 master
weights and fp32 Adam moments for the trained part), against LoRA's. Which layers are chosen does
not change the count for a given fraction, only which ones. Pure Python (runs under Pyodide).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from calculators.architectures import Architecture, get_architecture
from calculators.memory import full_ft_bytes_per_param

__all__ = ["SelectiveTraining", "selective_training"]


@dataclass(frozen=True)
class SelectiveTraining:
    """Trainable count and training state (weights, gradients, master copy, optimizer; no activations)."""

    fraction: float
    layers_per_kind: int  # how many of each module kind are unfrozen
    trainable: int
    percent: float  # of the model's parameters
    state_bytes: int  # all weights in bf16 + gradients, master copy and Adam moments of the trained ones


def selective_training(model: str | Architecture, fraction: float) -> SelectiveTraining:
    """Unfreeze ⌈fraction × layers⌉ modules of every linear kind in the blocks (embeddings and head stay frozen)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction: must be in (0, 1], got {fraction!r}")
    arch = get_architecture(model)
    per_kind = math.ceil(fraction * arch.num_hidden_layers)
    kinds = [m for m in arch.linear_modules() if m.group in ("attention", "mlp")]
    # m.count is layers × copies per layer; a chosen layer brings all copies of that kind.
    trainable = sum(m.in_features * m.out_features * (m.count // arch.num_hidden_layers) * per_kind for m in kinds)
    per_param = full_ft_bytes_per_param()
    extra = per_param["grads"] + per_param["master"] + per_param["optimizer"]
    state = int(arch.n_params * per_param["weights"] + trainable * extra)
    return SelectiveTraining(float(fraction), per_kind, trainable, 100.0 * trainable / arch.n_params, state)
