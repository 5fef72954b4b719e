"""Facts about the lab (data/lora_config and its default run), for the prose and the predictions.

The calculators cannot read the repository's data folder or run a tokenizer (they also run in
the browser), so the split sizes and the longest training example in SmolLM2 tokens are
recorded here; tests/calculators/test_lab_task.py and tests/training/test_task.py check them
against the JSONL files and the cached tokenizer, so they cannot drift. The lab's default
settings live here too: the API's defaults (app.lab.TrainRequest) and the chapter read them.
"""

from __future__ import annotations

from calculators import memory
from calculators.architectures import Architecture, get_architecture

LAB_TASK_EXAMPLES: dict[str, int] = {"train": 320, "test": 16}
# The longest training example (system prompt + request + answer + end of turn, in the chat
# template) in SmolLM2 tokens: the sequence length of the lab's widest batch.
LAB_TASK_MAX_TOKENS = 135
# The longest answer + its end-of-turn token: the lab's loss sends only answer positions
# through the LM head (training.run.answer_loss), so this bounds the logits a step keeps.
LAB_TASK_MAX_ANSWER_TOKENS = 60
# The lab's default run (the API's names).
LAB_DEFAULTS: dict[str, float] = {"rank": 8, "alpha": 16, "steps": 20, "batch_size": 8, "lr": 4e-3, "seed": 0}


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
                        on_gpu: bool = False, autocast: bool = False) -> memory.MemoryEstimate:
    """The estimator at the lab's precision: bf16 autocast on a GPU (counted as a bf16 base); on
    the CPU fp32 weights, the steps under bf16 autocast when `autocast` (a CPU with bf16 units)
    or in fp32; QLoRA's base in NF4. No gradient checkpointing, AdamW."""
    if on_gpu:
        base_dtype, compute_dtype, mixed, kernel = "bf16", "bf16", None, None
    else:  # a CPU runs SDPA's flash kernel for every dtype
        base_dtype, compute_dtype, mixed, kernel = "fp32", ("bf16" if autocast else "fp32"), autocast, "flash"
    return memory.estimate_memory(
        model, method=method, r=r, target_modules=target_modules, base_dtype="nf4" if method == "qlora" else base_dtype,
        batch_size=batch_size, seq_len=seq_len, gradient_checkpointing=False, compute_dtype=compute_dtype, autocast=mixed,
        attention_kernel=kernel,
    )


def accounted_bytes(model: str | Architecture, method: str, r: int, target_modules, batch_size: int, seq_len: int,
                    autocast: bool = False) -> int:
    """The estimator's terms that the lab's CPU accounting measures: weights (and quantization
    constants), adapter weights, gradients, optimizer state, the activations saved for backward
    with autocast's 16-bit weight copies, and the fp32 logits of the answer positions (at most
    LAB_TASK_MAX_ANSWER_TOKENS per example: the lab's loss sends only those through the head).
    Leaves out what only an allocator sees (temporaries, the loss's other buffers).

    QLoRA is the lab's own NF4 layer (training/layers.py), not bitsandbytes': under CPU autocast
    it returns the compute dtype, as an fp32 base's linear does, and keeps only its packed codes.
    So its activations are LoRA's on the fp32 base and its one weight copy is the tied head's.
    """
    estimate = lab_memory_estimate(model, method, r, target_modules, batch_size, seq_len, autocast=autocast)
    saved, copies = estimate.saved_activations_bytes, estimate.weight_copies_bytes
    if method == "qlora" and autocast:
        as_lora = lab_memory_estimate(model, "lora", r, target_modules, batch_size, seq_len, autocast=True)
        saved, copies = as_lora.saved_activations_bytes, as_lora.head.weight_copies
    answer_logits = 4 * batch_size * min(LAB_TASK_MAX_ANSWER_TOKENS, seq_len) * get_architecture(model).vocab_size
    return (estimate.weights_bytes + estimate.quant_constants_bytes + estimate.adapter_weights_bytes
            + estimate.gradients_bytes + estimate.optimizer_states_bytes + saved + copies + answer_logits)
