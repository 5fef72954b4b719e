"""How close is calculators.memory to torch.cuda.max_memory_allocated? Predicted vs measured.

The grid (default 36 points): {smollm-135m, qwen2.5-0.5b, tinyllama-1.1b} shapes × {full, lora,
qlora} × gradient checkpointing {off, on} × seq {512, 2048}, batch 4, each point in a fresh
Python process (no allocator state carried over), built exactly as a reader would
(training/memory_recipes.py, random weights of the architecture's shape, saved once and loaded
with `from_pretrained`):

* full — fp32 weights, every step under bf16 autocast (torch AMP, Trainer bf16=True);
* lora — the model in bf16, peft `LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")`;
* qlora — `BitsAndBytesConfig(load_in_4bit, nf4, double quant, bf16 compute)`, then
  `prepare_model_for_kbit_training(model, use_gradient_checkpointing=ckpt)`, then the same LoRA;
* `--methods` also takes full_bf16, qlora_noprep, lora_autocast, qlora_autocast;
* optimizer `--optim` (TrainingArguments.optim name, default adamw_torch_fused); loop:
  `loss = model(input_ids, labels=input_ids).loss; loss.backward(); step(); zero_grad(set_to_none=True)`.

Measured: `torch.cuda.max_memory_allocated()` over `--steps` steady-state steps (after one warm-up
step creates the optimizer states; `reset_peak_memory_stats()` in between), against
`estimate_memory(...).total_bytes - paged_optimizer_bytes` (paged states live outside PyTorch's
allocator). Also recorded: allocated after loading (vs weights + constants + adapters),
max_memory_reserved, and the CUDA context. Error = (predicted − measured) / measured.

    python bench/memory_accuracy.py --out bench/results/memory_accuracy.json   # a CUDA machine
    python bench/memory_accuracy.py --dry-run                                  # predictions only
    python bench/memory_accuracy.py --cpu-toy                                  # the whole harness on the CPU, toy model

`--cpu-toy` runs every point in its own process on a tiny Llama-shaped model on the CPU, with the
CPU profiler's running allocation total standing in for max_memory_allocated and the estimator
told the CPU's attention kernel (flash for every dtype): a check of the harness, not a GPU result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calculators.architectures import Architecture, get_architecture  # noqa: E402
from calculators.memory import MemoryEstimate, estimate_memory  # noqa: E402
from calculators.optimizers import canonical_optimizer  # noqa: E402

GIB = 2**30
R, ALPHA, TARGETS = 16, 32, "all-linear"
DEFAULT_MODELS = "smollm-135m,qwen2.5-0.5b,tinyllama-1.1b"
DEFAULT_METHODS = "full,lora,qlora"
TOY = Architecture("toy-gqa", "Toy GQA Llama", "llama", "llama", "LlamaForCausalLM", hidden_size=64,
                   intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   vocab_size=96, max_position_embeddings=4096, tie_word_embeddings=False)


@dataclass(frozen=True)
class Point:
    model: str
    recipe: str
    gradient_checkpointing: bool
    seq_len: int
    batch_size: int
    optimizer: str

    @property
    def label(self) -> str:
        ckpt = "on" if self.gradient_checkpointing else "off"
        return f"{self.model} {self.recipe} ckpt={ckpt} {self.batch_size}×{self.seq_len}"


@dataclass
class Row:
    model: str
    recipe: str
    gradient_checkpointing: bool
    batch_size: int
    seq_len: int
    optimizer: str
    predicted_bytes: int  # what max_memory_allocated should show: total − paged optimizer states
    predicted_phase: str
    predicted_kernel: str
    predicted_after_load_bytes: int
    measured_bytes: int | None = None
    measured_after_load_bytes: int | None = None
    measured_reserved_bytes: int | None = None
    error_percent: float | None = None
    seconds: float | None = None
    note: str = ""


def architecture(name: str) -> Architecture:
    return TOY if name == TOY.slug else get_architecture(name)


def predict(point: Point, cpu: bool = False) -> MemoryEstimate:
    """The estimator with the exact settings the measurement uses (the CPU runs flash for every dtype)."""
    from training.memory_recipes import estimate_kwargs

    kwargs = estimate_kwargs(point.recipe, R, TARGETS, point.gradient_checkpointing)
    return estimate_memory(architecture(point.model), batch_size=point.batch_size, seq_len=point.seq_len,
                           optimizer=point.optimizer, attention_kernel="flash" if cpu else None, **kwargs)


def grid(models: list[str], recipes: list[str], seq_lens: list[int], batch_size: int, optimizer: str) -> list[Point]:
    return [Point(m, recipe, ckpt, s, batch_size, optimizer)
            for m in models for recipe in recipes for ckpt in (False, True) for s in seq_lens]


# ---------------------------------------------------------------------------- one point, in its own process


def measure_cuda(point: Point, model_dir: Path, steps: int) -> dict:
    """max_memory_allocated over `steps` steady-state steps, allocated after loading, max reserved."""
    import torch

    from training import memory_recipes as recipes

    torch.cuda.init()
    torch.ones(1, device="cuda") @ torch.ones(1, 1, device="cuda")  # cuBLAS handle
    free, total = torch.cuda.mem_get_info()
    context = total - free - torch.cuda.memory_reserved()
    model = recipes.build_model(model_dir, point.recipe, point.gradient_checkpointing, r=R, lora_alpha=ALPHA,
                                targets=TARGETS, device="cuda")
    torch.cuda.synchronize()
    after_load = torch.cuda.memory_allocated()
    optimizer = recipes.make_optimizer(model, point.optimizer)
    generator = torch.Generator(device="cuda").manual_seed(0)
    vocab = model.config.vocab_size

    def step() -> None:
        ids = torch.randint(0, vocab, (point.batch_size, point.seq_len), device="cuda", generator=generator)
        with recipes.autocast_for(point.recipe, "cuda"):
            loss = model(input_ids=ids, labels=ids).loss  # the output (and its logits) dropped, as in Trainer
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # creates the optimizer states
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return {"peak": torch.cuda.max_memory_allocated(), "after_load": after_load,
            "reserved": torch.cuda.max_memory_reserved(), "context": context}


def measure_cpu(point: Point, model_dir: Path, steps: int) -> dict:
    """The same recipe on the CPU: persistent state (counted from the objects) + the profiled step peak."""
    import torch

    from training import memory_recipes as recipes

    model = recipes.build_model(model_dir, point.recipe, point.gradient_checkpointing, r=R, lora_alpha=ALPHA,
                                targets=TARGETS)
    optimizer = recipes.make_optimizer(model, point.optimizer)
    ids = torch.randint(0, model.config.vocab_size, (point.batch_size, point.seq_len),
                        generator=torch.Generator().manual_seed(0))
    peaks = [recipes.step_peak_bytes(model, optimizer, ids, point.recipe).peak_bytes for _ in range(steps + 1)][1:]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in list(model.parameters()) + list(model.buffers())}
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:
            for t in (state.absmax, state.code) + ((state.state2.absmax, state.state2.code, state.offset) if state.nested else ()):
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    after_load = sum(storages.values())
    states = {v.untyped_storage().data_ptr(): v.untyped_storage().nbytes()
              for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v) and v.numel() > 1}
    rng = torch.get_rng_state().numel() * model.config.num_hidden_layers if point.gradient_checkpointing else 0
    return {"peak": after_load + sum(states.values()) + max(peaks) - rng, "after_load": after_load,
            "reserved": None, "context": 0}


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def run_point(args: argparse.Namespace) -> int:
    """Child process: measure one point, print one JSON line."""
    _quiet_transformers()
    point = Point(**json.loads(args.point))
    measure = measure_cpu if args.cpu_toy else measure_cuda
    try:
        result = measure(point, Path(args.model_dir), args.steps)
    except Exception as exc:  # reported in the row; the parent carries on
        name = type(exc).__name__
        result = {"error": "OOM" if "OutOfMemory" in name else f"{name}: {exc}"[:160]}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------- report


def markdown(rows: list[Row], unit: str = "GiB") -> str:
    scale = GIB if unit == "GiB" else 2**10
    show = (lambda n: "—" if n is None else f"{n / scale:,.2f}")
    lines = [
        f"| model | recipe | ckpt | batch×seq | optim | predicted {unit} | measured {unit} | error | predicted peak at | kernel | after load pred / meas {unit} | note |",
        "|---|---|---|---|---|---:|---:|---:|---|---|---:|---|",
    ]
    for r in rows:
        err = "—" if r.error_percent is None else f"{r.error_percent:+.1f} %"
        lines.append(
            f"| {r.model} | {r.recipe} | {'on' if r.gradient_checkpointing else 'off'} | {r.batch_size}×{r.seq_len} | "
            f"{r.optimizer} | {show(r.predicted_bytes)} | {show(r.measured_bytes)} | {err} | {r.predicted_phase} | "
            f"{r.predicted_kernel} | {show(r.predicted_after_load_bytes)} / {show(r.measured_after_load_bytes)} | {r.note} |"
        )
    errors = [abs(r.error_percent) for r in rows if r.error_percent is not None]
    if errors:
        lines.append("")
        within = sum(1 for r in rows if r.error_percent is not None and r.measured_bytes is not None
                     and abs(r.predicted_bytes - r.measured_bytes) <= max(0.10 * r.measured_bytes, GIB))
        lines.append(f"Mean |error| {sum(errors) / len(errors):.1f} %, max {max(errors):.1f} % over {len(errors)} points; "
                     f"{within} of {len(errors)} within ±10 % or ±1 GiB.")
    return "\n".join(lines)


def environment(cpu: bool) -> dict:
    import bitsandbytes
    import peft
    import torch
    import transformers

    env = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
           "bitsandbytes": bitsandbytes.__version__, "python": platform.python_version()}
    if not cpu:
        env.update(device=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   device_total_bytes=torch.cuda.get_device_properties(0).total_memory)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the predictions only (no GPU, nothing trained)")
    parser.add_argument("--cpu-toy", action="store_true", help="run the harness on the CPU with a toy model")
    parser.add_argument("--out", type=Path, help="write the rows and environment as JSON here (and .md beside it)")
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="recipes of training/memory_recipes.py")
    parser.add_argument("--seq-lens", default="512,2048")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--optim", default="adamw_torch_fused", help="a TrainingArguments.optim name")
    parser.add_argument("--steps", type=int, default=2, help="steady-state steps measured after the warm-up step")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per point")
    parser.add_argument("--point", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.point:
        return run_point(args)
    if args.steps < 1:
        parser.error("--steps: at least 1")
    optimizer = canonical_optimizer(args.optim)
    if args.cpu_toy:
        models, seq_lens, batch = [TOY.slug], [64, 256], 2
    else:
        models = [get_architecture(m).slug for m in args.models.split(",")]
        seq_lens, batch = [int(s) for s in args.seq_lens.split(",")], args.batch_size
    points = grid(models, args.methods.split(","), seq_lens, batch, optimizer)

    rows = []
    for p in points:
        est = predict(p, cpu=args.cpu_toy)
        rows.append(Row(p.model, p.recipe, p.gradient_checkpointing, p.batch_size, p.seq_len, p.optimizer,
                        est.total_bytes - est.paged_optimizer_bytes, est.peak_phase, est.attention_kernel,
                        est.weights_bytes + est.quant_constants_bytes + est.adapter_weights_bytes))
    meta: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv)}

    if args.dry_run:
        meta["mode"] = "dry-run (predictions only)"
    else:
        if not args.cpu_toy:
            import torch

            if not torch.cuda.is_available():
                print("No CUDA device: use --dry-run for the predictions, or --cpu-toy to check the harness.", file=sys.stderr)
                return 2
        meta.update(environment(args.cpu_toy), mode="cpu-toy (CPU profiler, toy model)" if args.cpu_toy else "cuda")
        _quiet_transformers()
        with tempfile.TemporaryDirectory(prefix="memory-accuracy-") as tmp:
            from training.memory_recipes import save_random_model

            dirs = {m: save_random_model(architecture(m), Path(tmp)) for m in models}
            for p, row in zip(points, rows):
                start = time.perf_counter()
                command = [sys.executable, __file__, "--point", json.dumps(asdict(p)), "--model-dir", str(dirs[p.model]),
                           "--steps", str(args.steps)] + (["--cpu-toy"] if args.cpu_toy else [])
                try:
                    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
                    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
                    result = json.loads(line[7:]) if line else {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:160]}
                except subprocess.TimeoutExpired:
                    result = {"error": f"timed out after {args.timeout} s"}
                if "error" in result:
                    row.note = result["error"]
                else:
                    row.measured_bytes, row.measured_after_load_bytes = result["peak"], result["after_load"]
                    row.measured_reserved_bytes = result["reserved"]
                    meta.setdefault("cuda_context_bytes_measured", result["context"])
                    row.error_percent = 100.0 * (row.predicted_bytes - row.measured_bytes) / row.measured_bytes
                row.seconds = round(time.perf_counter() - start, 1)
                unit, scale = ("KiB", 2**10) if args.cpu_toy else ("GiB", GIB)
                shown = [("—" if n is None else f"{n / scale:,.2f}") for n in (row.predicted_bytes, row.measured_bytes)]
                print(f"{p.label}: predicted {shown[0]} {unit}, measured {shown[1]} {unit} {row.note}", flush=True)

    table = markdown(rows, unit="KiB" if args.cpu_toy else "GiB")
    print()
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
        print(f"\nwrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
