"""The lab's training run: LoRA / QLoRA / DoRA on a real model, one metrics record per step.

`train()` is a generator so the web worker can stream each `StepMetrics` as a server-sent event
and cancel between steps; it ends with one `RunSummary` (accuracy before/after, the adapter).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from training.data import TextClassificationData, encode, eval_batches, load_reviews, train_batches
from training.export import adapter_config, save_adapter
from training.inject import METHODS, Injection, inject_adapters
from training.model import load_model

# peft's default LoRA targets per architecture (the attention query and value projections).
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
}


@dataclass(frozen=True)
class TrainConfig:
    """One run's hyper-parameters; `target_modules=()` means the architecture's default targets."""

    method: str = "lora"
    r: int = 8
    lora_alpha: float = 16.0
    target_modules: tuple[str, ...] = ()
    lr: float = 2e-3
    steps: int = 150
    batch_size: int = 16
    seq_len: int = 48
    seed: int = 0
    lora_dropout: float = 0.0
    use_rslora: bool = False
    warmup_steps: int = 10
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        checks = {
            "r": (self.r, 1, 1024),
            "steps": (self.steps, 1, 100_000),
            "batch_size": (self.batch_size, 1, 1024),
            "seq_len": (self.seq_len, 4, 8192),
            "warmup_steps": (self.warmup_steps, 0, 100_000),
        }
        for name, (value, low, high) in checks.items():
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name}: expected an integer in [{low}, {high}], got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {self.seed!r}")
        if not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            raise ValueError(f"lora_alpha: expected a positive number, got {self.lora_alpha!r}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise ValueError(f"lr: expected a number in (0, 1], got {self.lr!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout: expected a number in [0, 1), got {self.lora_dropout!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay: expected a non-negative number, got {self.weight_decay!r}")
        if not isinstance(self.target_modules, tuple) or not all(
            isinstance(t, str) and t for t in self.target_modules
        ):
            raise ValueError(f"target_modules: expected a tuple of module names, got {self.target_modules!r}")


@dataclass(frozen=True)
class StepMetrics:
    """One optimizer step. `peak_memory_bytes`: see `peak_memory_kind` in the RunSummary."""

    step: int
    loss: float
    lr: float
    tokens_per_s: float  # tokens processed (batch_size · seq_len, padding included) per second of this step
    elapsed_s: float  # since the start of training (after the before-accuracy)
    peak_memory_bytes: int


@dataclass(frozen=True)
class RunSummary:
    """The end of a run (also after a cancel, with `cancelled=True`)."""

    accuracy_before: float
    accuracy_after: float
    trainable_params: int
    total_params: int
    adapter_dir: Path
    steps_completed: int
    cancelled: bool
    wall_s: float
    method: str
    target_modules: tuple[str, ...]
    label_names: tuple[str, ...]
    base_model: str
    device: str
    # "cuda_max_memory_allocated": torch.cuda.max_memory_allocated over the step.
    # "cpu_tensor_accounting": bytes of parameters + buffers + gradients + optimizer state + the
    # tensors autograd saved for backward (counted by torch.autograd.graph.saved_tensors_hooks,
    # each storage once) at the end of the forward pass: what a GPU would have to hold, not the
    # process RSS (which includes the Python heap and allocator caches).
    peak_memory_kind: str


def resolve_targets(config: TrainConfig, model_type: str) -> tuple[str, ...]:
    if config.target_modules:
        return config.target_modules
    if model_type not in DEFAULT_TARGETS:
        raise ValueError(f"target_modules: no default for model type {model_type!r}; name the modules")
    return DEFAULT_TARGETS[model_type]


def make_optimizer(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters; linear warmup to `lr`, then linear decay to 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, foreach=False)

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        return max(0.0, (config.steps - step) / max(1, config.steps - config.warmup_steps))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _SavedTensorBytes:
    """Counts the bytes autograd saves for backward (each storage once, parameters excluded)."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.seen: set[int] = set()
        self.bytes = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self.exclude and key not in self.seen:
            self.seen.add(key)
            self.bytes += storage.nbytes()
        return tensor

    @staticmethod
    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor


def _state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Parameters + buffers + gradients + optimizer state, in bytes."""
    total = sum(t.numel() * t.element_size() for t in model.parameters())
    total += sum(t.numel() * t.element_size() for t in model.buffers())
    total += sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    for state in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


def train_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    autocast_dtype: torch.dtype | None = None,
    saved: _SavedTensorBytes | None = None,
) -> float:
    """One forward/backward/AdamW step; returns the (cross-entropy) loss."""
    device_type = batch["input_ids"].device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        if saved is not None:
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                loss = model(**batch).loss
        else:
            loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


@torch.no_grad()
def accuracy(model: nn.Module, encoded: dict[str, torch.Tensor], batch_size: int, device: torch.device) -> float:
    """Fraction of held-out examples whose argmax logit is the label."""
    was_training = model.training
    model.eval()
    correct = 0
    for batch in eval_batches(encoded, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits  # (batch, num_labels)
        correct += int((logits.argmax(dim=-1) == labels).sum())
    model.train(was_training)
    return correct / encoded["labels"].shape[0]


def prepare(config: TrainConfig, model_source: str | Path | None, data: TextClassificationData, device: torch.device):
    """Load the base, inject adapters (seeded), move to device: (loaded, injection, targets)."""
    torch.manual_seed(config.seed)
    loaded = load_model(data.num_labels, seed=config.seed, model_path=model_source)
    targets = resolve_targets(config, loaded.model_type)
    compute_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(config.seed)  # lora_A's Kaiming init draws from here
    injection = inject_adapters(
        loaded.model,
        config.method,
        targets,
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        use_rslora=config.use_rslora,
        modules_to_save=(loaded.head_name,),
        compute_dtype=compute_dtype,
    )
    loaded.model.to(device)
    return loaded, injection, targets


def train(
    config: TrainConfig,
    model_source: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    output_dir: str | Path | None = None,
    data: TextClassificationData | None = None,
    device: str | None = None,
) -> Iterator[StepMetrics | RunSummary]:
    """Fine-tune `model_source` (default: see training.model) on the reviews task.

    Yields one StepMetrics per step, then one RunSummary; `should_stop()` is checked between
    steps. The adapter is written in peft's format to `output_dir` (a fresh temp dir if None).
    """
    started = time.perf_counter()
    data = data or load_reviews()
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_cuda = torch_device.type == "cuda"
    loaded, injection, targets = prepare(config, model_source, data, torch_device)
    model = loaded.model
    train_set = encode(loaded.tokenizer, data.train_texts, data.train_labels, config.seq_len)
    test_set = encode(loaded.tokenizer, data.test_texts, data.test_labels, config.seq_len)
    if config.batch_size > train_set["labels"].shape[0]:
        raise ValueError(f"batch_size: {config.batch_size} exceeds the {train_set['labels'].shape[0]} training examples")

    accuracy_before = accuracy(model, test_set, 64, torch_device)
    optimizer, scheduler = make_optimizer(model, config)
    autocast_dtype = torch.bfloat16 if on_cuda else None
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    param_ptrs |= {b.untyped_storage().data_ptr() for b in model.buffers()}

    model.train()
    torch.manual_seed(config.seed)  # dropout masks
    train_started = time.perf_counter()
    steps_completed, cancelled = 0, False
    for step, batch in enumerate(train_batches(train_set, config.batch_size, config.steps, config.seed), start=1):
        if should_stop is not None and should_stop():
            cancelled = True
            break
        batch = {k: v.to(torch_device) for k, v in batch.items()}
        lr_now = scheduler.get_last_lr()[0]  # the learning rate this step uses
        step_started = time.perf_counter()
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(torch_device)
            loss = train_step(model, batch, optimizer, scheduler, autocast_dtype)
            torch.cuda.synchronize(torch_device)
            peak = torch.cuda.max_memory_allocated(torch_device)
        else:
            saved = _SavedTensorBytes(param_ptrs)
            loss = train_step(model, batch, optimizer, scheduler, None, saved)
            # grads are freed by zero_grad, so count them (same size as the trainable params) explicitly
            grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
            peak = _state_bytes(model, optimizer) + grad_bytes + saved.bytes
        step_s = time.perf_counter() - step_started
        steps_completed = step
        yield StepMetrics(
            step=step,
            loss=loss,
            lr=lr_now,
            tokens_per_s=batch["input_ids"].numel() / step_s,
            elapsed_s=time.perf_counter() - train_started,
            peak_memory_bytes=int(peak),
        )

    accuracy_after = accuracy(model, test_set, 64, torch_device)
    adapter_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="loralab-adapter-"))
    save_adapter(
        model,
        adapter_dir,
        adapter_config(
            r=config.r,
            lora_alpha=config.lora_alpha,
            target_modules=targets,
            lora_dropout=config.lora_dropout,
            use_rslora=config.use_rslora,
            use_dora=config.method == "dora",
            modules_to_save=injection.modules_to_save,
            base_model_name_or_path=loaded.source,
        ),
        injection.modules_to_save,
    )
    yield RunSummary(
        accuracy_before=accuracy_before,
        accuracy_after=accuracy_after,
        trainable_params=injection.trainable_params,
        total_params=injection.total_params,
        adapter_dir=adapter_dir,
        steps_completed=steps_completed,
        cancelled=cancelled,
        wall_s=time.perf_counter() - started,
        method=config.method,
        target_modules=targets,
        label_names=data.label_names,
        base_model=loaded.source,
        device=str(torch_device),
        peak_memory_kind="cuda_max_memory_allocated" if on_cuda else "cpu_tensor_accounting",
    )


def config_fields() -> tuple[str, ...]:
    """The names of TrainConfig's fields (for the API's validation and docs)."""
    return tuple(f.name for f in fields(TrainConfig))
