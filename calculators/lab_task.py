"""Facts about the lab (data/lora_config and its default run), for the prose and the predictions.

The calculators cannot read the repository's data folder or run a tokenizer (they also run in
the browser), so the split sizes and the longest training example in SmolLM2 tokens are
recorded here; tests/calculators/test_lab_task.py and tests/training/test_task.py check them
against the JSONL files and the cached tokenizer, so they cannot drift. The lab's default
settings live here too: the API's defaults (app.lab.TrainRequest) and the chapter read them.
"""

from __future__ import annotations

from calculators import memory

LAB_TASK_EXAMPLES: dict[str, int] = {"train": 320, "test": 16}
# The longest training example (system prompt + request + answer + end of turn, in the chat
# template) in SmolLM2 tokens: the sequence length of the lab's widest batch.
LAB_TASK_MAX_TOKENS = 135
# The lab's default run (the API's names).
LAB_DEFAULTS: dict[str, float] = {"rank": 8, "alpha": 16, "steps": 30, "batch_size": 8, "lr": 3e-3, "seed": 0}


def lab_examples(split: str) -> int:
    """Examples in one split of the lab's task."""
    if split not in LAB_TASK_EXAMPLES:
        raise ValueError(f"split: must be one of {sorted(LAB_TASK_EXAMPLES)}, got {split!r}")
    return LAB_TASK_EXAMPLES[split]


def lab_default(field: str) -> float:
    """One of the lab's default settings."""
    if field not in LAB_DEFAULTS:
        raise ValueError(f"field: must be one of {sorted(LAB_DEFAULTS)}, got {field!r}")
    return LAB_DEFAULTS[field]


def lab_memory_estimate(model, method: str, r: int, target_modules, batch_size: int, seq_len: int,
                        on_gpu: bool = False) -> memory.MemoryEstimate:
    """The estimator at the lab's precision: bf16 autocast on a GPU (counted as a bf16 base),
    fp32 on the CPU; QLoRA's base in NF4. No gradient checkpointing, AdamW."""
    base_dtype = "nf4" if method == "qlora" else ("bf16" if on_gpu else "fp32")
    return memory.estimate_memory(
        model, method=method, r=r, target_modules=target_modules, base_dtype=base_dtype, batch_size=batch_size,
        seq_len=seq_len, gradient_checkpointing=False, compute_dtype="bf16" if on_gpu else "fp32",
    )


def accounted_bytes(estimate: memory.MemoryEstimate) -> int:
    """The estimator's terms that the lab's CPU accounting measures: weights (and quantization
    constants), adapter weights, gradients, optimizer state and the activations saved for
    backward. Leaves out what only an allocator sees (temporaries, the loss's logits buffers)."""
    return (estimate.weights_bytes + estimate.quant_constants_bytes + estimate.adapter_weights_bytes
            + estimate.gradients_bytes + estimate.optimizer_states_bytes + estimate.saved_activations_bytes)
