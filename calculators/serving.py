"""Serving many LoRA adapters on one base: merged copies per task against unmerged, batched adapters.

Two ways to serve N fine-tunes of one base model:

* **merge per task**: W = W0 + s·B·A folded into each copy. Every request runs at exactly the base
  model's cost, but each task that must stay resident is a full copy of the weights.
* **unmerged, batched** (Punica, Chen et al. 2023; S-LoRA, Sheng et al. 2023): one copy of W0 and
  N small (A, B) pairs; a batch that mixes requests for k distinct adapters runs W0·x once for all
  of them and each request's own B·A·x beside it.

Costs computed here, all from the architecture:

* memory: N × base weights against base weights + N × adapter;
* prefill compute: extra multiply-adds of the adapters, Σ r(in+out) against Σ in·out of the model's
  linear layers (the LM head included), per token;
* decode traffic: generation at small batch is bound by memory bandwidth: each step reads every
  weight once. Unmerged adapters add the bytes of each distinct adapter in the batch. Kernel launch
  overhead is not modelled; it is what batched kernels (Punica's SGMV) exist to remove;
* swapping: time to move one adapter, or one merged model, over a host–device link.

Pure Python (runs under Pyodide).
"""

from __future__ import annotations

from dataclasses import dataclass

from calculators.architectures import Architecture, get_architecture
from calculators.params import DTYPE_BYTES, count_trainable

__all__ = [
    "PCIE4_X16_BYTES_PER_S",
    "ServingMemory",
    "serving_memory",
    "prefill_flop_overhead",
    "decode_read_overhead",
    "transfer_seconds",
]

# PCIe 4.0 x16: 16 GT/s per lane × 16 lanes with 128b/130b encoding, one direction (PCI-SIG spec).
PCIE4_X16_BYTES_PER_S = 16e9 * 16 * (128 / 130) / 8


def _bytes_per_element(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype: must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    return DTYPE_BYTES[dtype]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class ServingMemory:
    """Weights resident on the server for N tasks, merged per task against one base plus N adapters."""

    n_adapters: int
    base_bytes: int  # one copy of the model's weights
    adapter_bytes: int  # one adapter's A and B
    merged_bytes: int  # N merged copies, one per task
    shared_base_bytes: int  # one base + N unmerged adapters

    @property
    def adapters_per_base_copy(self) -> int:
        """How many adapters take the memory of one more copy of the base."""
        return self.base_bytes // self.adapter_bytes


def serving_memory(model: str | Architecture, n_adapters: int, r: int, target_modules: str = "all-linear",
                   base_dtype: str = "bf16", adapter_dtype: str = "bf16") -> ServingMemory:
    """Weights for N tasks: N merged models, or one base with N adapters (KV cache and activations excluded)."""
    arch = get_architecture(model)
    _positive_int("n_adapters", n_adapters)
    base = arch.n_params * _bytes_per_element(base_dtype)
    adapter = count_trainable(arch, "lora", r=r, target_modules=target_modules, dtype=adapter_dtype).adapter_bytes
    return ServingMemory(n_adapters, base, adapter, n_adapters * base, base + n_adapters * adapter)


def prefill_flop_overhead(model: str | Architecture, r: int, target_modules: str = "all-linear") -> float:
    """Extra matmul work of an unmerged adapter per token, as a fraction of all the model's linear layers.

    Σ r(in + out) over the adapted modules / Σ in·out over every linear layer, LM head included
    (attention's QKᵀ and softmax are not linear layers and are left out: they only make it smaller).
    """
    arch = get_architecture(model)
    counted = count_trainable(arch, "lora", r=r, target_modules=target_modules)
    dense = sum(m.in_features * m.out_features * m.count for m in arch.linear_modules())
    dense += sum(m.in_features * m.out_features * m.count for m in arch.expert_modules())
    return counted.trainable / dense


def decode_read_overhead(model: str | Architecture, r: int, distinct_adapters: int, target_modules: str = "all-linear",
                         base_dtype: str = "bf16", adapter_dtype: str = "bf16") -> float:
    """Extra bytes one memory-bound decode step reads for a batch mixing k distinct adapters, over the base's."""
    _positive_int("distinct_adapters", distinct_adapters)
    mem = serving_memory(model, 1, r, target_modules, base_dtype, adapter_dtype)
    return distinct_adapters * mem.adapter_bytes / mem.base_bytes


def transfer_seconds(n_bytes: float, link_bytes_per_s: float = PCIE4_X16_BYTES_PER_S) -> float:
    """Time to move n_bytes over a link at its nominal rate (a lower bound: no protocol overhead)."""
    if n_bytes < 0 or link_bytes_per_s <= 0:
        raise ValueError(f"n_bytes, link_bytes_per_s: must be ≥ 0 and > 0, got {n_bytes!r}, {link_bytes_per_s!r}")
    return n_bytes / link_bytes_per_s
