""""What can I train on my GPU?": validate the reader's GPU and model, call calculators.planner.

The model is a listed slug or a pasted config.json (calculators.config_json); the memory
budget is a listed GPU's usable memory or a typed size in GiB. The view shapes one card per
method and checkpointing choice, the batch-by-length table and its figure.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app.figures import plotly as figures
from app.errors import calculator_input
from app.instrument_views import COMPONENT_LABELS, model_options
from app.formatting import GIB, format_bytes, format_count_short, format_gpu_bytes, format_int
from app.queries import StrictQuery

CUSTOM_GPU = "custom"
PAGE_CONFIG_CHARS = 8_000  # the page sends the paste in its URL; the API takes up to calculators' limit
PLAN_LABELS = {"full": "Full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}
PLAN_COLOURS = {"full": figures.PALETTE[2], "lora": figures.PALETTE[0], "qlora": figures.PALETTE[1]}
TARGET_LABELS = {"all-linear": "all linear layers", "attention": "attention (q, k, v, o)", "q,v": "q and v"}
SEQ_CHOICES = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class GpuPlannerQuery(StrictQuery):
    gpu: str = Field("rtx-4090", max_length=32, description=f"GPU slug, or {CUSTOM_GPU!r} to use memory_gib")
    memory_gib: float = Field(24.0, gt=0, le=4096, description="GPU memory in GiB, used when gpu is 'custom'")
    model: str = Field("llama-3.1-8b", max_length=64, description="Architecture slug (ignored when config is given)")
    config: str = Field("", max_length=PAGE_CONFIG_CHARS, description="A pasted Hugging Face config.json")
    seq_len: int = Field(2048, ge=16, le=131072, description="Sequence length of interest")
    rank: int = Field(16, ge=1, le=1024, description="LoRA rank r")
    target_modules: Literal["all-linear", "attention", "q,v"] = "all-linear"


def gpu_options() -> list[tuple[str, str]]:
    from calculators.gpus import GPUS

    return [(g.slug, g.name) for g in GPUS] + [(CUSTOM_GPU, "Other: type its memory")]


def _budget(q: GpuPlannerQuery) -> tuple[int, str]:
    """Bytes the step may use, and how the page names the card."""
    from calculators import planner
    from calculators.gpus import get_gpu

    if q.gpu == CUSTOM_GPU:
        return int(q.memory_gib * GIB), f"a {q.memory_gib:g} GiB GPU"
    with calculator_input():
        gpu = get_gpu(q.gpu)
        return planner.gpu_budget_bytes(gpu.slug), gpu.name


def _architecture(q: GpuPlannerQuery) -> Any:
    from calculators.architectures import get_architecture
    from calculators.config_json import parse_config_json

    with calculator_input():
        if q.config.strip():
            return parse_config_json(q.config)
        return get_architecture(q.model)


def _plan_card(p: Any, budget_bytes: int, seq_len: int) -> dict[str, Any]:
    estimate = p.estimate
    batch = p.at_seq.max_batch_size
    over = estimate.total_with_context_bytes - budget_bytes
    return {
        "method": p.method,
        "title": PLAN_LABELS[p.method],
        "checkpointing": p.gradient_checkpointing,
        "fits": p.fits,
        "verdict": (f"batch {batch:,} × {seq_len:,} tokens" if batch else "does not fit"),
        "detail": (f"{format_int(batch * seq_len)} tokens per micro-batch, peak {format_gpu_bytes(estimate.total_with_context_bytes)}"
                   if batch else f"one sequence of {seq_len:,} tokens needs {format_gpu_bytes(estimate.total_with_context_bytes)}, "
                                 f"{format_gpu_bytes(over)} more than the card has"),
        "max_seq": f"{p.max_seq_len:,} tokens" if p.max_seq_len else "none",
        "trainable": format_count_short(p.trainable_params),
        "trainable_exact": format_int(p.trainable_params),
        "percent": f"{p.trainable_percent:.2f}%" if p.trainable_percent >= 0.01 else f"{p.trainable_percent:.3f}%",
        "adapter": format_bytes(p.adapter_bytes) if p.adapter_bytes else "— (saves the whole model)",
        "breakdown": [{"label": COMPONENT_LABELS[k], "value": format_gpu_bytes(v)} for k, v in estimate.breakdown().items() if v]
        + [{"label": "+ CUDA context", "value": format_gpu_bytes(estimate.cuda_context_bytes)}],
        "total": format_gpu_bytes(estimate.total_with_context_bytes),
        "at": f"batch {max(1, batch):,} × {seq_len:,} tokens, peak during {estimate.peak_phase}",
    }


def gpu_planner(q: GpuPlannerQuery) -> dict[str, Any]:
    """Per method (full, LoRA, QLoRA; with and without checkpointing): what fits on the reader's GPU."""
    from calculators import planner

    budget_bytes, gpu_name = _budget(q)
    arch = _architecture(q)
    notes: list[str] = []
    seq_len = q.seq_len
    longest = arch.max_position_embeddings
    if seq_len > longest:
        notes.append(f"{arch.display_name} reads at most {longest:,} tokens: showing {longest:,}.")
        seq_len = longest
    if q.config.strip():
        notes.append("Counting the pasted config.json; clear it to use the model list.")
    with calculator_input({"r": "rank", "budget_bytes": "memory_gib"}):
        plan = planner.plan_training(arch, budget_bytes, seq_len=seq_len, r=q.rank, target_modules=q.target_modules)
    cards = [_plan_card(p, budget_bytes, seq_len) for p in plan.plans]
    fitting = [c for c in cards if c["fits"]]
    methods = [{"method": m, "title": PLAN_LABELS[m], "variants": [c for c in cards if c["method"] == m]}
               for m in dict.fromkeys(c["method"] for c in cards)]
    ladder_lens = [point.seq_len for point in plan.plans[0].ladder]
    series = []
    for p in plan.plans:
        label = f"{PLAN_LABELS[p.method]}, {'with' if p.gradient_checkpointing else 'without'} checkpointing"
        series.append({
            "name": label, "x": [pt.seq_len for pt in p.ladder],
            "y": [pt.max_batch_size if pt.max_batch_size else None for pt in p.ladder],
            "color": PLAN_COLOURS[p.method], "dash": "solid" if p.gradient_checkpointing else "dash",
            "text": [f"{label}<br>{pt.max_batch_size:,} × {pt.seq_len:,} tokens" for pt in p.ladder],
        })
    largest = max([pt.max_batch_size for p in plan.plans for pt in p.ladder] + [1])
    batch_ticks = [2**k for k in range(largest.bit_length() + 1) if 2**k <= 2 * largest][::max(1, largest.bit_length() // 6)]
    best = max(plan.plans, key=lambda p: (p.at_seq.max_batch_size, p.method != "full"))
    return {
        "gpu_options": gpu_options(),
        "model_options": model_options(),
        "seq_choices": list(SEQ_CHOICES),
        "custom_gpu": q.gpu == CUSTOM_GPU,
        "pasted": bool(q.config.strip()),
        "seq_len": seq_len,
        "headline": {
            "gpu": gpu_name, "budget": format_gpu_bytes(budget_bytes), "model": arch.display_name,
            "params": format_count_short(arch.n_params),
            "best": (f"{PLAN_LABELS[best.method]}{' with checkpointing' if best.gradient_checkpointing else ''}: "
                     f"batch {best.at_seq.max_batch_size:,}") if best.fits else "nothing fits",
        },
        "announce": (f"{arch.display_name} on {gpu_name}: "
                     + (", ".join(f"{c['title']}{' (checkpointing)' if c['checkpointing'] else ''} {c['verdict']}" for c in fitting)
                        if fitting else f"nothing fits at {seq_len:,} tokens")),
        "architecture": [
            ("Family", arch.family), ("Parameters", format_int(arch.n_params)), ("Layers", format_int(arch.num_hidden_layers)),
            ("Hidden size", format_int(arch.hidden_size)),
            ("Attention heads", f"{arch.num_attention_heads} ({arch.num_key_value_heads} key/value)"),
            ("Vocabulary", format_int(arch.vocab_size)), ("Context", f"{arch.max_position_embeddings:,} tokens"),
        ],
        "methods": methods,
        "ladder": {
            "lens": ladder_lens,
            "rows": [{"label": f"{PLAN_LABELS[p.method]}{' + ckpt' if p.gradient_checkpointing else ''}",
                      "cells": [pt.max_batch_size for pt in p.ladder]} for p in plan.plans],
        },
        "assumptions": (f"LoRA r = {q.rank} on {TARGET_LABELS[q.target_modules]}, fp32 adapters; base in bf16 (NF4 for QLoRA); "
                        "AdamW; SDPA attention. Fits means the peak plus the CUDA context is at most what the card hands out; "
                        "allocator fragmentation (often 5–15 %) is not counted, so leave a margin."),
        "notes": notes,
        "figures": {
            "ladder": figures.lines(
                f"Largest micro-batch on {gpu_name}", series,
                {"title": {"text": "sequence length (tokens)"}, "type": "log", "tickvals": ladder_lens,
                 "ticktext": [f"{s // 1024}k" if s >= 1024 else str(s) for s in ladder_lens]},
                {"title": {"text": "largest micro-batch"}, "type": "log", "tickvals": batch_ticks,
                 "ticktext": [f"{b:,}" for b in batch_ticks]},
                height=360,
            ),
        },
    }

