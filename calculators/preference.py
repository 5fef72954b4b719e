"""Preference tuning with adapters: what DPO and GRPO add to a supervised step's memory and compute.

DPO (Rafailov et al. 2023) scores a *chosen* and a *rejected* completion of each prompt under the
policy and under a frozen reference model, so every example is two sequences through the policy
(forward and backward) and two through the reference (forward only). GRPO (Shao et al. 2024)
samples a group of G completions per prompt, scores them with a reward, and trains on all G with
group-normalised advantages and a KL penalty to a reference; it drops PPO's value model.

What an adapter changes: the reference is the base model itself, so with LoRA or QLoRA it costs
no second copy of the weights: peft's `disable_adapter()` runs the same weights without the
adapter (TRL's DPOTrainer does exactly this for a peft model). Full fine-tuning must keep a frozen
bf16 copy of the original weights beside the trained ones.

Built on `memory.estimate_memory`; pure Python (runs under Pyodide).
"""

from __future__ import annotations

from dataclasses import dataclass

from calculators import memory
from calculators.architectures import Architecture, get_architecture

__all__ = ["ALGORITHMS", "PreferenceStep", "preference_step", "kv_cache_bytes"]

ALGORITHMS = ("sft", "dpo", "grpo")
_KV_BYTES = 2  # bf16 keys and values during generation
_PERSISTENT = ("weights", "quant_constants", "adapter_weights", "optimizer_states", "master_weights")


@dataclass(frozen=True)
class PreferenceStep:
    """Peak memory and forward-pass count of one step of SFT, DPO or GRPO on one prompt batch."""

    algorithm: str
    method: str
    sequences: int  # sequences through the policy per step
    train_bytes: int  # the training step's peak for those sequences (estimate_memory)
    reference_weights_bytes: int  # a second, frozen copy of the weights (full fine-tuning only)
    generation_bytes: int  # GRPO's sampling phase: persistent state + the group's KV cache (else 0)
    kv_cache_bytes: int
    forward_passes: float  # matmul work in forward passes of one sequence: policy + reference (+ sampling)

    @property
    def total_bytes(self) -> int:
        """The larger of the training and sampling phases, plus the reference weights held throughout."""
        return max(self.train_bytes, self.generation_bytes) + self.reference_weights_bytes


def kv_cache_bytes(model: str | Architecture, sequences: int, tokens: int) -> int:
    """Keys and values of every layer for `sequences` sequences of `tokens` tokens, in bf16."""
    arch = get_architecture(model)
    return 2 * arch.num_hidden_layers * arch.kv_dim * _KV_BYTES * sequences * tokens


def _policy_passes(method: str, gradient_checkpointing: bool) -> float:
    """Forward + backward of one sequence in forward-pass units: 3 with weight gradients, 2 without (+1 recompute)."""
    return (3.0 if method == "full" else 2.0) + (1.0 if gradient_checkpointing else 0.0)


def preference_step(model: str | Architecture, algorithm: str, method: str = "lora", r: int = 16,
                    target_modules: str = "all-linear", prompts: int = 1, seq_len: int = 1024,
                    group_size: int = 8, prompt_len: int = 256, gradient_checkpointing: bool = True,
                    optimizer: str = "adamw") -> PreferenceStep:
    """One step of `algorithm` ("sft", "dpo", "grpo") with `prompts` prompts of seq_len tokens per sequence.

    SFT trains one sequence per prompt; DPO two (chosen, rejected) and scores both under the
    reference; GRPO samples `group_size` completions of seq_len − prompt_len tokens, then trains on
    all of them and scores them under the reference. The reference's forward passes keep nothing for
    a backward pass, so they add compute, not saved activations.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if method not in ("full", "lora", "qlora"):
        raise ValueError(f"method: must be full, lora or qlora, got {method!r}")
    for name, value in (("prompts", prompts), ("group_size", group_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    if not 0 <= prompt_len < seq_len:
        raise ValueError(f"prompt_len: must be in [0, seq_len), got {prompt_len!r}")
    arch = get_architecture(model)
    per_prompt = {"sft": 1, "dpo": 2, "grpo": group_size}[algorithm]
    sequences = prompts * per_prompt
    estimate = memory.estimate_memory(arch, method=method, r=r, target_modules=target_modules, optimizer=optimizer,
                                      batch_size=sequences, seq_len=seq_len,
                                      gradient_checkpointing=gradient_checkpointing)
    reference = 0
    if algorithm != "sft" and method == "full":
        reference = memory.weight_bytes(arch.n_params, "bf16")
    kv = kv_cache_bytes(arch, sequences, seq_len) if algorithm == "grpo" else 0
    breakdown = estimate.breakdown()
    generation = sum(breakdown[part] for part in _PERSISTENT) + kv if algorithm == "grpo" else 0
    passes = sequences * _policy_passes(method, gradient_checkpointing)
    if algorithm != "sft":
        passes += sequences  # the reference scores every sequence once
    if algorithm == "grpo":
        passes += sequences  # sampling: one forward's worth of matmuls per sequence (token by token)
    return PreferenceStep(algorithm, method, sequences, estimate.total_bytes, reference, generation, kv, passes)
