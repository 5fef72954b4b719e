"""The training recipes `calculators.memory` models, built for real, and what they keep in memory.

Each recipe is what a reader runs with transformers 5, peft 0.21 and bitsandbytes 0.50
(random weights of a given `Architecture`'s shape, no downloads):

* `lora` — the model loaded in bf16, `get_peft_model(LoraConfig(...))` (fp32 adapters);
* `qlora` — loaded through `BitsAndBytesConfig(load_in_4bit, nf4, double quant, bf16 compute)`,
  then `prepare_model_for_kbit_training(model, use_gradient_checkpointing=ckpt)` as peft's
  docs call it, then `get_peft_model`;
* `qlora_noprep` — the same without `prepare_model_for_kbit_training`;
* `lora_autocast`, `qlora_autocast` — LoRA / QLoRA with every step under `torch.autocast(bf16)`,
  as transformers' Trainer runs them with `bf16=True`;
* `full` — fp32 weights, every step under `torch.autocast(bf16)` (torch AMP, Trainer bf16=True);
* `full_bf16` — bf16 weights, no autocast.

Checkpointing other than QLoRA's: `gradient_checkpointing_enable({"use_reentrant": False})`.
Measurement (`saved_tensor_bytes`, `kept_after_forward_bytes`, `step_peak_bytes`) runs on any
device; the CPU profiler stands in for `torch.cuda.max_memory_allocated` on the CPU.
"""

from __future__ import annotations

import contextlib
import gc
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from calculators.architectures import Architecture

__all__ = [
    "RECIPES",
    "RecipeSpec",
    "hf_config",
    "save_random_model",
    "build_model",
    "autocast_for",
    "estimate_kwargs",
    "SavedTensors",
    "saved_tensor_bytes",
    "kept_after_forward_bytes",
    "measured_kept_bytes",
    "StepPeak",
    "step_peak_bytes",
    "make_optimizer",
]


@dataclass(frozen=True)
class RecipeSpec:
    name: str
    method: str  # estimate_memory's method
    load_dtype: torch.dtype
    quantized: bool = False
    prepare_kbit: bool = False
    autocast: bool = False
    adapters: bool = True


RECIPES: dict[str, RecipeSpec] = {
    "lora": RecipeSpec("lora", "lora", torch.bfloat16),
    "qlora": RecipeSpec("qlora", "qlora", torch.bfloat16, quantized=True, prepare_kbit=True),
    "qlora_noprep": RecipeSpec("qlora_noprep", "qlora", torch.bfloat16, quantized=True, prepare_kbit=False),
    "lora_autocast": RecipeSpec("lora_autocast", "lora", torch.bfloat16, autocast=True),
    "qlora_autocast": RecipeSpec("qlora_autocast", "qlora", torch.bfloat16, quantized=True, prepare_kbit=True,
                                 autocast=True),
    "full": RecipeSpec("full", "full", torch.float32, autocast=True, adapters=False),
    "full_bf16": RecipeSpec("full_bf16", "full", torch.bfloat16, adapters=False),
}


def estimate_kwargs(recipe: str, r: int, targets: str, gradient_checkpointing: bool) -> dict[str, Any]:
    """estimate_memory's arguments for this recipe."""
    spec = RECIPES[recipe]
    kwargs: dict[str, Any] = {"method": spec.method, "gradient_checkpointing": gradient_checkpointing, "r": r,
                              "target_modules": targets, "lora_dropout": 0.0}
    if spec.quantized:
        kwargs.update(base_dtype="nf4", prepare_kbit=spec.prepare_kbit, compute_dtype="bf16", double_quant=True)
    elif spec.method == "full":
        kwargs.update(base_dtype="fp32" if spec.load_dtype == torch.float32 else "bf16", autocast=spec.autocast)
    else:
        kwargs.update(base_dtype="bf16")
    if spec.adapters:
        kwargs["autocast"] = spec.autocast
    return kwargs


def hf_config(arch: Architecture, attn_implementation: str = "sdpa"):
    """A transformers config with the architecture's shape (Llama / Qwen2 / Mistral families)."""
    import transformers

    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
           "mistral": transformers.MistralConfig}.get(arch.family)
    if cls is None:
        raise ValueError(f"model: recipes are built for llama, qwen2 and mistral shapes, not {arch.family}")
    return cls(
        hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers, num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads, head_dim=arch.resolved_head_dim, vocab_size=arch.vocab_size,
        max_position_embeddings=arch.max_position_embeddings, tie_word_embeddings=arch.tie_word_embeddings,
        use_cache=False, attn_implementation=attn_implementation,
    )


def save_random_model(arch: Architecture, directory: Path, seed: int = 0) -> Path:
    """A random-init model of this shape saved in bf16, so from_pretrained can quantize it like a hub model."""
    from transformers import AutoModelForCausalLM

    path = Path(directory) / arch.slug
    if (path / "config.json").exists():
        return path
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(arch), dtype=torch.bfloat16)
    model.save_pretrained(path)
    del model
    gc.collect()
    return path


def build_model(model_dir: Path, recipe: str, gradient_checkpointing: bool, r: int = 16, lora_alpha: int = 32,
                targets: str = "all-linear", device: str = "cpu", attn_implementation: str = "sdpa"):
    """Load and prepare a model exactly as the recipe does; returns it in train mode."""
    import peft
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    spec = RECIPES[recipe]
    kwargs: dict[str, Any] = {"dtype": spec.load_dtype, "attn_implementation": attn_implementation,
                              "device_map": {"": device}}
    if spec.quantized:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        model.config.use_cache = False
        if spec.prepare_kbit:
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        elif gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if spec.adapters:
            model = peft.get_peft_model(model, peft.LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=targets,
                                                               lora_dropout=0.0, task_type="CAUSAL_LM"))
    model.train()
    return model


@contextlib.contextmanager
def _kernel(sdpa_backend: str | None):
    """Force one SDPA backend ("math", "flash", "efficient"), or leave PyTorch's choice."""
    if sdpa_backend is None:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}[sdpa_backend]
    with sdpa_kernel(backend):
        yield


def autocast_for(recipe: str, device: str = "cpu"):
    """The recipe's autocast context (a no-op context for recipes without one)."""
    if RECIPES[recipe].autocast:
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model, name: str):
    """The optimizer transformers builds for `TrainingArguments.optim = name` (lr 1e-4, weight decay 0)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adamw_torch_fused":
        return torch.optim.AdamW(params, lr=1e-4, fused=True)
    if name == "adamw_torch":
        return torch.optim.AdamW(params, lr=1e-4, foreach=True)  # what AdamW() picks on CUDA
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-4)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=1e-4, scale_parameter=False, relative_step=False)
    if name in ("adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit"):
        import bitsandbytes as bnb

        return bnb.optim.AdamW(params, lr=1e-4, optim_bits=32 if "32bit" in name else 8,
                               is_paged=name.startswith("paged"))
    raise ValueError(f"optimizer: no builder for {name!r}")


# ---------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class SavedTensors:
    """Every storage autograd saved during one forward pass, counted once (parameters and buffers excluded)."""

    total_bytes: int
    tensors: tuple[tuple[str, tuple[int, ...], int], ...]  # (dtype, shape, storage bytes)


def _model_storages(model) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}


def saved_tensor_bytes(model, input_ids: torch.Tensor, recipe: str, sdpa_backend: str | None = None) -> SavedTensors:
    """Run the forward pass (with labels) under `saved_tensors_hooks`; sum the saved storages once each."""
    skip = _model_storages(model)
    kept: dict[int, tuple[str, tuple[int, ...], int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and ptr not in kept:
            kept[ptr] = (str(t.dtype).removeprefix("torch."), tuple(t.shape), storage.nbytes())
        return t

    device = input_ids.device.type
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast_for(recipe, device), _kernel(sdpa_backend):
        loss = model(input_ids=input_ids, labels=input_ids).loss
    del loss
    return SavedTensors(sum(v[2] for v in kept.values()), tuple(kept.values()))


@dataclass(frozen=True)
class _Allocations:
    """The profiler's running total of CPU bytes allocated, and the spans of the `phase:` markers."""

    series: tuple[tuple[float, int], ...]  # (timestamp µs, bytes allocated − freed since profiling began)
    marks: dict[str, tuple[float, float]]

    def peak_in(self, mark: str) -> int:
        """The most allocated while the marked span ran (what was allocated when it began included)."""
        start, end = self.marks[mark]
        before = [total for ts, total in self.series if ts < start]
        inside = [total for ts, total in self.series if start <= ts <= end]
        return max(before[-1:] + inside, default=0)

    @property
    def last(self) -> int:
        return self.series[-1][1] if self.series else 0


def _profile_allocations(run) -> _Allocations:
    """Run `run()` under torch.profiler(profile_memory=True); collect every CPU allocation's running total."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text(encoding="utf-8"))["traceEvents"]
    series, marks = [], {}
    for event in events:
        if event.get("name") == "[memory]" and event["args"].get("Device Type") == 0:
            series.append((event["ts"], event["args"]["Bytes"]))  # + allocated, − freed
        elif event.get("ph") == "X" and str(event.get("name", "")).startswith("phase:"):
            marks[event["name"]] = (event["ts"], event["ts"] + event.get("dur", 0))
    running, total = [], 0
    for ts, nbytes in sorted(series):
        total += nbytes
        running.append((ts, total))
    return _Allocations(tuple(running), marks)


def kept_after_forward_bytes(model, input_ids: torch.Tensor, recipe: str, sdpa_backend: str | None = None) -> int:
    """CPU bytes still allocated after the forward pass (output dropped, loss kept): what the backward needs.

    Under gradient checkpointing this includes each checkpointed layer's snapshot of the CPU RNG
    state (`torch.get_rng_state()`, host memory even when training on a GPU).
    """
    kept: list[torch.Tensor] = []

    def forward() -> None:
        with autocast_for(recipe, "cpu"), _kernel(sdpa_backend):
            kept.append(model(input_ids=input_ids, labels=input_ids).loss)

    allocations = _profile_allocations(forward)
    kept.clear()
    return allocations.last


def measured_kept_bytes(model, input_ids: torch.Tensor, recipe: str, gradient_checkpointing: bool,
                        sdpa_backend: str | None = None) -> int:
    """What the forward leaves for the backward: autograd's saved storages (each once) without
    checkpointing; with it (checkpoint inputs are held outside autograd's hooks) the CPU profiler's
    allocation total after the forward, less the CPU RNG snapshot each checkpointed layer takes
    (host memory on a GPU too). Either way the kept loss scalar's 4 bytes are included."""
    if not gradient_checkpointing:
        return saved_tensor_bytes(model, input_ids, recipe, sdpa_backend).total_bytes
    layers = model.config.num_hidden_layers
    return kept_after_forward_bytes(model, input_ids, recipe, sdpa_backend) - layers * torch.get_rng_state().numel()


@dataclass(frozen=True)
class StepPeak:
    """Peak CPU bytes allocated above the persistent state during one training step, and where."""

    peak_bytes: int
    forward_bytes: int  # peak while the forward (and loss) ran
    backward_bytes: int
    step_bytes: int  # during optimizer.step()


def step_peak_bytes(model, optimizer, input_ids: torch.Tensor, recipe: str, sdpa_backend: str | None = None) -> StepPeak:
    """Profile one steady-state step (states exist, grads freed) and report its peaks above the start."""
    from torch.profiler import record_function

    def step() -> None:
        with record_function("phase:forward"), autocast_for(recipe, "cpu"), _kernel(sdpa_backend):
            loss = model(input_ids=input_ids, labels=input_ids).loss
        with record_function("phase:backward"), _kernel(sdpa_backend):
            loss.backward()
        del loss
        with record_function("phase:step"):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    allocations = _profile_allocations(step)
    forward, backward, opt_step = (allocations.peak_in(f"phase:{name}") for name in ("forward", "backward", "step"))
    return StepPeak(max(forward, backward, opt_step), forward, backward, opt_step)
