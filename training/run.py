"""The lab's training run: supervised fine-tuning of a causal LM with LoRA, QLoRA or DoRA.

`train()` is a generator, so the web worker can stream every record as a server-sent event and
cancel between steps. It yields, in order: `Phase` records while it loads and evaluates, one
`StepMetrics` per optimizer step, a `Sample` (the current greedy answer to one held-out
request) every `sample_every` steps, and one `RunSummary` at the end (also after a cancel).
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from training.baseline import baseline_key, read_baseline, write_baseline
from training.data import IGNORE_INDEX, encode_examples, eval_batches, train_batches
from training.export import adapter_config, save_adapter
from training.generate import greedy_answers
from training.inject import METHODS, Injection, inject_adapters
from training.model import LoadedModel, load_base, load_model
from training.task import SAMPLE_INDEX, ChatTask, exact_match, load_task

# peft's default LoRA targets per architecture (the attention query and value projections).
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
}


PRECISIONS = ("auto", "fp32", "bf16")


def autocast_dtype_for(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the training steps (None: no autocast, the weights' own fp32).

    bf16 halves the bytes each matrix product reads and, on hardware with bf16 units, roughly
    doubles its speed; on a CPU without them, bf16 is emulated and slower, so "auto" keeps fp32.
    """
    if precision == "fp32":
        return None
    if precision == "bf16" or device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def weights_dtype_for(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the base weights are held in (QLoRA: its compute dtype): bf16 on a GPU, as peft
    recipes load them, unless fp32 is asked for; fp32 on a CPU (answers there stay exact)."""
    return torch.bfloat16 if device.type == "cuda" and precision != "fp32" else torch.float32


@dataclass(frozen=True)
class TrainConfig:
    """One run's hyper-parameters; `target_modules=()` means the architecture's default targets."""

    method: str = "lora"
    r: int = 8
    lora_alpha: float = 16.0
    target_modules: tuple[str, ...] = ()
    lr: float = 3e-3
    steps: int = 40
    batch_size: int = 8
    max_seq_len: int = 192  # tokens per example (prompt + answer); the task's longest is well below
    seed: int = 0
    lora_dropout: float = 0.0
    use_rslora: bool = False
    warmup_steps: int = 3
    weight_decay: float = 0.0
    sample_every: int = 5  # steps between streamed answers to the sample request; 0: never
    max_new_tokens: int = 64  # bound on every generated answer
    # "auto": bf16 autocast for the training steps where the hardware computes bf16 natively (a
    # CUDA GPU; a CPU with AVX512-BF16 or AMX), else fp32. Answers are always generated as the
    # weights are stored (fp32 on a CPU), so peft reproduces them exactly.
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        checks = {
            "r": (self.r, 1, 1024),
            "steps": (self.steps, 1, 100_000),
            "batch_size": (self.batch_size, 1, 1024),
            "max_seq_len": (self.max_seq_len, 8, 8192),
            "warmup_steps": (self.warmup_steps, 0, 100_000),
            "sample_every": (self.sample_every, 0, 100_000),
            "max_new_tokens": (self.max_new_tokens, 1, 1024),
        }
        for name, (value, low, high) in checks.items():
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name}: expected an integer in [{low}, {high}], got {value!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
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
class Phase:
    """Work outside the optimizer steps (loading, evaluating, saving), with its progress."""

    phase: str  # "load" | "before" | "after" | "save"
    message: str
    done: int
    total: int
    elapsed_s: float  # since the run started
    evaluation_s: float | None = None  # a reused base-model evaluation: what computing it took


@dataclass(frozen=True)
class StepMetrics:
    """One optimizer step. `peak_memory_bytes`: see `peak_memory_kind` in the RunSummary."""

    step: int
    loss: float  # mean cross-entropy over the batch's answer tokens
    lr: float
    tokens: int  # tokens of the batch's examples, padding excluded
    tokens_per_s: float  # `tokens` / `step_s`
    step_s: float
    elapsed_s: float  # since the first step started
    peak_memory_bytes: int


@dataclass(frozen=True)
class Sample:
    """The model's current greedy answer to the sample held-out request."""

    step: int
    prompt: str
    answer: str
    expected: str
    exact: bool


@dataclass(frozen=True)
class RunSummary:
    """The end of a run (also after a cancel, with `cancelled=True`). No server paths."""

    base_model: str
    method: str
    target_modules: tuple[str, ...]
    r: int
    lora_alpha: float
    trainable_params: int
    total_params: int
    steps_completed: int
    cancelled: bool
    wall_s: float
    train_s: float
    tokens_per_s: float  # all answer+prompt tokens trained on / train_s
    max_batch_tokens: int  # the longest (padded) sequence of any batch: what memory was sized by
    peak_memory_bytes: int
    # "cuda_max_memory_allocated": torch.cuda.max_memory_allocated over the step.
    # "cpu_tensor_accounting": bytes of parameters + buffers + gradients + optimizer state + the
    # tensors autograd saved for backward (counted by torch.autograd.graph.saved_tensors_hooks,
    # each storage once) at the end of the forward pass: what a GPU would have to hold, not the
    # process RSS (which includes the Python heap and allocator caches).
    peak_memory_kind: str
    device: str
    autocast: str  # the training steps' autocast dtype ("bf16"), or "off" (the weights' own dtype)
    held_out: int
    exact_match_before: float
    exact_match_after: float
    answer_loss_before: float  # mean cross-entropy over the held-out answers' tokens
    answer_loss_after: float
    samples: tuple[dict[str, str], ...]  # {"prompt", "expected", "before", "after"} per held-out request


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


def answer_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens (labels != IGNORE_INDEX).

    `model` is a transformers causal LM. Only the answer positions go through the LM head:
    the loss is the same as `model(**batch, labels=...).loss`, without the (batch, seq, vocab)
    logits of the prompt positions that the loss ignores anyway.
    """
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]  # (batch, seq - 1): token t+1 is predicted at position t
    keep = targets != IGNORE_INDEX
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])  # (answer tokens, vocab)
    return F.cross_entropy(logits.float(), targets[keep])


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
    """One forward/backward/AdamW step on the answer tokens; returns the loss."""
    device_type = batch["input_ids"].device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        if saved is not None:
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                loss = answer_loss(model, batch)
        else:
            loss = answer_loss(model, batch)
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


@torch.no_grad()
def held_out_loss(model: nn.Module, encoded, pad_token_id: int, device: torch.device, batch_size: int = 16) -> float:
    """Mean cross-entropy over every held-out answer token (token-weighted across batches)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in eval_batches(encoded, batch_size, pad_token_id):
        batch = {k: v.to(device) for k, v in batch.items()}
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(answer_loss(model, batch)) * n
        count += n
    model.train(was_training)
    return total / count


def prepare(config: TrainConfig, model_dir: str | Path, device: torch.device) -> tuple[LoadedModel, Injection, tuple[str, ...]]:
    """A private copy of the base with adapters injected (A drawn from `config.seed`), on `device`."""
    loaded = load_model(model_dir)
    targets = resolve_targets(config, loaded.model_type)
    compute_dtype = weights_dtype_for(config.precision, device)
    torch.manual_seed(config.seed)  # lora_A's Kaiming init draws from here
    injection = inject_adapters(
        loaded.model,
        config.method,
        targets,
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        use_rslora=config.use_rslora,
        compute_dtype=compute_dtype,
    )
    loaded.model.to(device)
    return loaded, injection, targets


def train(
    config: TrainConfig,
    model_dir: str | Path,
    should_stop: Callable[[], bool] | None = None,
    output_dir: str | Path | None = None,
    task: ChatTask | None = None,
    device: str | None = None,
    baseline_dir: str | Path | None = None,
) -> Iterator[Phase | StepMetrics | Sample | RunSummary]:
    """Fine-tune the causal LM in `model_dir` on `task` (default: the lab's LoraConfig task).

    `should_stop()` is checked between steps. The adapter is written in peft's format to
    `output_dir` (a fresh temporary folder if None). `baseline_dir` keeps the base model's
    held-out evaluation between runs (training/baseline.py); None evaluates every time.
    """
    started = time.perf_counter()

    def phase(name: str, message: str, done: int = 0, total: int = 1, evaluation_s: float | None = None) -> Phase:
        return Phase(name, message, done, total, time.perf_counter() - started, evaluation_s)

    task = task or load_task()
    torch_device = resolve_device(device)
    on_cuda = torch_device.type == "cuda"
    yield phase("load", f"Loading the base model and injecting {config.method} adapters")
    loaded, injection, targets = prepare(config, model_dir, torch_device)
    model, tokenizer = loaded.model, loaded.tokenizer
    pad_id = tokenizer.pad_token_id
    train_set = encode_examples(tokenizer, task.system_prompt, task.train, config.max_seq_len)
    test_set = encode_examples(tokenizer, task.system_prompt, task.test, config.max_seq_len)
    batches = train_batches(train_set, config.batch_size, config.steps, config.seed, pad_id)  # checks batch_size
    yield phase("load", "Model ready", 1, 1)

    key = _baseline_key(config, model_dir, task, torch_device)
    before = yield from _baseline(model, tokenizer, task, test_set, config, torch_device, baseline_dir, key, phase)
    sample = task.test[SAMPLE_INDEX]
    first = before["answers"][SAMPLE_INDEX]
    yield Sample(0, sample.prompt, first, sample.answer, exact_match(first, sample.answer))

    optimizer, scheduler = make_optimizer(model, config)
    autocast_dtype = autocast_dtype_for(config.precision, torch_device)
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    param_ptrs |= {b.untyped_storage().data_ptr() for b in model.buffers()}

    model.train()
    torch.manual_seed(config.seed)  # dropout masks
    train_started = time.perf_counter()
    steps_completed, cancelled, tokens_total, max_batch_tokens, peaks = 0, False, 0, 0, []
    for step, batch in enumerate(batches, start=1):
        if should_stop is not None and should_stop():
            cancelled = True
            break
        batch = {k: v.to(torch_device) for k, v in batch.items()}
        tokens = int(batch["attention_mask"].sum())
        lr_now = scheduler.get_last_lr()[0]  # the learning rate this step uses
        step_started = time.perf_counter()
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(torch_device)
            loss = train_step(model, batch, optimizer, scheduler, autocast_dtype)
            torch.cuda.synchronize(torch_device)
            peak = torch.cuda.max_memory_allocated(torch_device)
        else:
            saved = _SavedTensorBytes(param_ptrs)
            loss = train_step(model, batch, optimizer, scheduler, autocast_dtype, saved)
            # grads are freed by zero_grad, so count them (same size as the trainable params) explicitly
            grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
            peak = _state_bytes(model, optimizer) + grad_bytes + saved.bytes
        step_s = time.perf_counter() - step_started
        steps_completed, tokens_total = step, tokens_total + tokens
        max_batch_tokens = max(max_batch_tokens, batch["input_ids"].shape[1])
        peaks.append(int(peak))
        yield StepMetrics(step, loss, lr_now, tokens, tokens / step_s, step_s, time.perf_counter() - train_started, int(peak))
        if config.sample_every and step % config.sample_every == 0 and step < config.steps:
            answer = greedy_answers(model, tokenizer, task.system_prompt, [sample.prompt], config.max_new_tokens)[0]
            yield Sample(step, sample.prompt, answer, sample.answer, exact_match(answer, sample.answer))
    train_s = time.perf_counter() - train_started

    after = yield from _evaluate(model, tokenizer, task, test_set, config, torch_device, "after", phase)
    yield phase("save", "Saving the adapter in peft's format")
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
            modules_to_save=(),
            base_model_name_or_path=loaded.base_model,
            task_type="CAUSAL_LM",
        ),
    )
    yield RunSummary(
        base_model=loaded.base_model,
        method=config.method,
        target_modules=targets,
        r=config.r,
        lora_alpha=config.lora_alpha,
        trainable_params=injection.trainable_params,
        total_params=injection.total_params,
        steps_completed=steps_completed,
        cancelled=cancelled,
        wall_s=time.perf_counter() - started,
        train_s=train_s,
        tokens_per_s=tokens_total / train_s if train_s > 0 else 0.0,
        max_batch_tokens=max_batch_tokens,
        peak_memory_bytes=max(peaks, default=0),
        peak_memory_kind="cuda_max_memory_allocated" if on_cuda else "cpu_tensor_accounting",
        device=str(torch_device),
        autocast="bf16" if autocast_dtype is not None else "off",
        held_out=len(task.test),
        exact_match_before=before["exact_match"],
        exact_match_after=after["exact_match"],
        answer_loss_before=before["loss"],
        answer_loss_after=after["loss"],
        samples=tuple(
            {"prompt": e.prompt, "expected": e.answer, "before": b, "after": a}
            for e, b, a in zip(task.test, before["answers"], after["answers"])
        ),
    )


def resolve_device(device: str | None = None) -> torch.device:
    """The device asked for, else CUDA when there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _baseline_key(config: TrainConfig, model_dir: str | Path, task: ChatTask, device: torch.device) -> str:
    return baseline_key(model_dir, task, config.method, config.max_new_tokens, config.max_seq_len, device,
                        weights_dtype_for(config.precision, device))


def _baseline(model, tokenizer, task: ChatTask, test_set, config: TrainConfig, device: torch.device,
              baseline_dir: str | Path | None, key: str, phase):
    """The model's held-out evaluation before training: the one kept under `key`
    (training/baseline.py), else evaluated now (with progress), timed and kept."""
    before = read_baseline(baseline_dir, key)
    if before is not None:
        yield phase("before", f"The base model's answers to the {len(task.test)} held-out requests "
                    "(the same for every run: at step 0 an adapter adds exactly nothing)", 1, 1,
                    evaluation_s=before["evaluation_s"])
        return before
    started = time.perf_counter()
    before = yield from _evaluate(model, tokenizer, task, test_set, config, device, "before", phase)
    before["evaluation_s"] = time.perf_counter() - started
    write_baseline(baseline_dir, key, before)
    return before


def warm_up(config: TrainConfig, model_dir: str | Path, task: ChatTask, baseline_dir: str | Path | None,
            device: str | None = None) -> bool:
    """What a run does first, done ahead while nobody waits: load the base model and, unless
    kept already, evaluate it on the held-out requests for `config`'s method (training/baseline.py).
    True when it evaluated."""
    torch_device = resolve_device(device)
    key = _baseline_key(config, model_dir, task, torch_device)
    if read_baseline(baseline_dir, key) is not None:
        load_base(str(model_dir))
        return False
    loaded, _, _ = prepare(config, model_dir, torch_device)
    test_set = encode_examples(loaded.tokenizer, task.system_prompt, task.test, config.max_seq_len)
    for _ in _baseline(loaded.model, loaded.tokenizer, task, test_set, config, torch_device, baseline_dir, key,
                       lambda *args, **kwargs: None):
        pass  # the progress is nobody's to see
    return True


EVAL_BATCH = 32  # held-out requests answered in one generate() call (the lab has 16)


def _generate_with_progress(model, tokenizer, system_prompt: str, prompts, max_new_tokens: int):
    """greedy_answers in a thread of its own, yielding the tokens generated so far every half
    second (a generator cannot yield from inside generate()); returns the answers."""
    done = [0]
    result: dict = {}

    def count() -> None:
        done[0] += 1

    def work() -> None:
        try:
            result["answers"] = greedy_answers(model, tokenizer, system_prompt, prompts, max_new_tokens, EVAL_BATCH, count)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=work, name="loralab-answers", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
        if thread.is_alive():
            yield done[0]
    if "error" in result:
        raise result["error"]
    return result["answers"]


def _evaluate(model, tokenizer, task: ChatTask, test_set, config: TrainConfig, device, name: str, phase):
    """Greedy answers to every held-out request, exact match, held-out loss. Progress counts
    generated tokens against the bound (answers that end sooner finish the phase early)."""
    word = "before" if name == "before" else "after"
    prompts = [example.prompt for example in task.test]
    rounds = math.ceil(len(prompts) / EVAL_BATCH)
    total = config.max_new_tokens * rounds
    message = f"Answering the {len(prompts)} held-out requests {word} training, token by token"
    yield phase(name, message, 0, total)
    generating = _generate_with_progress(model, tokenizer, task.system_prompt, prompts, config.max_new_tokens)
    reported = 0
    while True:
        try:
            tokens = min(next(generating), total - 1)
        except StopIteration as finished:
            answers = finished.value
            break
        if tokens > reported:
            reported = tokens
            yield phase(name, message, tokens, total)
    yield phase(name, f"Answered the held-out requests {word} training", total, total)
    hits = [exact_match(a, e.answer) for a, e in zip(answers, task.test)]
    return {
        "answers": answers,
        "exact_match": sum(hits) / len(hits),
        "loss": held_out_loss(model, test_set, tokenizer.pad_token_id, device),
    }


def config_fields() -> tuple[str, ...]:
    """The names of TrainConfig's fields (for the API's validation and docs)."""
    return tuple(f.name for f in fields(TrainConfig))
