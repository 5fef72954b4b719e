"""Optimizers as transformers' `TrainingArguments.optim` names them: state bytes and step temporaries.

What each name builds (transformers 5, `trainer_optimizer.py`) and what it keeps:

* `adamw_torch` — `torch.optim.AdamW()`, which on CUDA picks its *foreach* implementation:
  two states (m, v) shaped and typed like each parameter, and during `step()` one more
  param-sized list, `exp_avg_sq_sqrt = torch._foreach_sqrt(v)` for every parameter at once
  (`torch/optim/adam.py`, `_multi_tensor_adam`).
* `adamw_torch_fused` — `AdamW(fused=True)`, the Trainer's default from torch 2.8 on: the same
  states, updated in place by one kernel, no temporaries.
* `adamw_bnb_8bit` / `paged_adamw_8bit` — bitsandbytes' `AdamW(optim_bits=8)`: m and v as 8-bit
  codes with one fp32 absmax per block of 256 (Dettmers et al. 2022, "8-bit Optimizers via
  Block-wise Quantization"); tensors under 4,096 elements keep 32-bit states
  (`min_8bit_size`). Updated in place.
* `paged_adamw_32bit` — bitsandbytes' AdamW with fp32 states.
  Paged variants put the states of tensors with at least 100,000 elements (`Optimizer8bit.
  get_state_buffer`) in CUDA unified memory (`cudaMallocManaged`): on the device while the
  step runs, evictable to CPU RAM under pressure, and invisible to
  `torch.cuda.max_memory_allocated()` because PyTorch's allocator never sees them.
* `adafactor` — transformers' `Adafactor(scale_parameter=False, relative_step=False)`, no first
  moment (beta1=None): a matrix keeps one row and one column of second-moment statistics
  (Shazeer & Stern 2018, "Adafactor", §3), a vector keeps a full one; the step loops over
  parameters, building up to three fp32 temporaries the size of the parameter it updates (plus
  fp32 copies of a 16-bit parameter and its gradient).
* `sgd` — `torch.optim.SGD`: no state, or one momentum buffer per parameter.

Pure Python: runs under Pyodide.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "OPTIMIZERS",
    "OPTIMIZER_ALIASES",
    "OPTIMIZER_LABELS",
    "BNB_BLOCKSIZE",
    "BNB_MIN_8BIT_SIZE",
    "BNB_PAGED_MIN_SIZE",
    "ParamTensor",
    "canonical_optimizer",
    "is_paged",
    "state_bytes",
    "paged_state_bytes",
    "step_temporary_bytes",
    "state_bytes_per_param",
]

OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
              "adafactor", "sgd")
# Names the book used before it followed transformers, and transformers' own alias.
OPTIMIZER_ALIASES = {
    "adamw": "adamw_torch_fused",
    "adamw8bit": "adamw_bnb_8bit",
    "adamw_8bit": "adamw_bnb_8bit",
    "paged_adamw": "paged_adamw_32bit",
    "paged_adamw8bit": "paged_adamw_8bit",
}
OPTIMIZER_LABELS = {  # what the configurator shows: the names a reader passes to TrainingArguments(optim=...)
    "adamw_torch_fused": "adamw_torch_fused (AdamW, fused)",
    "adamw_torch": "adamw_torch (AdamW, foreach)",
    "adamw_bnb_8bit": "adamw_bnb_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "paged_adamw_32bit": "paged_adamw_32bit",
    "adafactor": "adafactor",
    "sgd": "sgd",
}
BNB_BLOCKSIZE = 256  # values per fp32 absmax of an 8-bit state
BNB_MIN_8BIT_SIZE = 4096  # smaller tensors keep fp32 states
BNB_PAGED_MIN_SIZE = 100_000  # smaller tensors' states stay in ordinary device memory


@dataclass(frozen=True)
class ParamTensor:
    """`count` trainable tensors of one shape: `rows` × `cols`, or a vector of `rows` when cols is 0."""

    rows: int
    cols: int
    count: int

    @property
    def numel(self) -> int:
        return self.rows * (self.cols or 1)


def canonical_optimizer(name: str) -> str:
    """transformers' spelling of an optimizer name (old names accepted); ValueError names `optimizer`."""
    canonical = OPTIMIZER_ALIASES.get(name, name) if isinstance(name, str) else name
    if canonical not in OPTIMIZERS:
        raise ValueError(f"optimizer: must be one of {', '.join(OPTIMIZERS)} "
                         f"(or the aliases {', '.join(OPTIMIZER_ALIASES)}), got {name!r}")
    return canonical


def is_paged(optimizer: str) -> bool:
    return canonical_optimizer(optimizer).startswith("paged")


def _bnb_8bit_bytes(numel: int) -> int:
    """Two 8-bit states with one fp32 absmax per 256 values each; fp32 below min_8bit_size."""
    if numel < BNB_MIN_8BIT_SIZE:
        return 8 * numel
    return 2 * (numel + 4 * -(-numel // BNB_BLOCKSIZE))


def _tensor_state_bytes(optimizer: str, t: ParamTensor, param_bytes: int, momentum: float) -> int:
    n = t.numel
    if optimizer in ("adamw_torch", "adamw_torch_fused"):
        return 2 * n * param_bytes  # zeros_like(p): the parameter's dtype
    if optimizer in ("adamw_bnb_8bit", "paged_adamw_8bit"):
        return _bnb_8bit_bytes(n)
    if optimizer == "paged_adamw_32bit":
        return 8 * n
    if optimizer == "adafactor":
        return 4 * (t.rows + t.cols if t.cols else n)  # factored second moment, fp32 (the step upcasts the gradient)
    return n * param_bytes if momentum > 0 else 0  # sgd


def state_bytes(optimizer: str, tensors: Iterable[ParamTensor], param_bytes: int, momentum: float = 0.0) -> int:
    """Every state tensor the optimizer keeps for these parameters (scalar step counters left out);
    8-bit AdamW adds the two 256-entry fp32 quantization maps its 8-bit states share."""
    name = canonical_optimizer(optimizer)
    tensors = list(tensors)
    total = sum(t.count * _tensor_state_bytes(name, t, param_bytes, momentum) for t in tensors)
    if name in ("adamw_bnb_8bit", "paged_adamw_8bit") and any(t.numel >= BNB_MIN_8BIT_SIZE for t in tensors):
        total += 2 * 256 * 4
    return total


def paged_state_bytes(optimizer: str, tensors: Iterable[ParamTensor], param_bytes: int) -> int:
    """The part of `state_bytes` bitsandbytes places in CUDA unified memory (0 unless paged)."""
    name = canonical_optimizer(optimizer)
    if not name.startswith("paged"):
        return 0
    return sum(t.count * _tensor_state_bytes(name, t, param_bytes, 0.0) for t in tensors if t.numel >= BNB_PAGED_MIN_SIZE)


def step_temporary_bytes(optimizer: str, tensors: Sequence[ParamTensor], param_bytes: int) -> int:
    """Memory `optimizer.step()` allocates on top of parameters, gradients and states.

    adamw_torch (foreach): sqrt(v) for every parameter at once, in the states' dtype.
    adafactor: its per-parameter loop holds three fp32 tensors the size of the parameter it
    updates (grad², then the rank-1 estimate of v while the update forms), plus fp32 copies of
    the parameter and its gradient when the parameter is 16-bit: the largest parameter sets the
    peak. Fused AdamW, bitsandbytes' CUDA kernels and SGD update in place: 0.
    """
    name = canonical_optimizer(optimizer)
    if name == "adamw_torch":
        return sum(t.count * t.numel for t in tensors) * param_bytes
    if name == "adafactor" and tensors:
        largest = max(t.numel for t in tensors)
        copies = 2 if param_bytes < 4 else 0
        return (3 + copies) * 4 * largest
    return 0


def state_bytes_per_param(optimizer: str, param_bytes: int = 4, momentum: float = 0.0) -> float:
    """State per parameter of a large matrix (8-bit AdamW: with its block constants; Adafactor: ≈ 0)."""
    name = canonical_optimizer(optimizer)
    if name in ("adamw_bnb_8bit", "paged_adamw_8bit"):
        return 2 * (1 + 4 / BNB_BLOCKSIZE)
    if name == "adafactor":
        return 0.0
    return float(_tensor_state_bytes(name, ParamTensor(1, 0, 1), param_bytes, momentum))
