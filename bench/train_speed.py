"""Training speed and memory: our LoRA/QLoRA layers vs peft (+ bitsandbytes) on a TinyLlama shape.

On a CUDA machine: a TinyLlama-shaped causal LM (~1.1B, random init: hidden 2048, intermediate
5632, 22 layers, 32 heads, 4 kv heads, vocab 32000) at batch 8 x 512 tokens, r=16 on all seven
linear kinds, AdamW, bf16 autocast; with and without gradient checkpointing. Prints a markdown
table of tokens/s and torch.cuda.max_memory_allocated.

    python bench/train_speed.py             # the real thing (CUDA)
    python bench/train_speed.py --dry-run   # a tiny model on CPU in seconds (checks the harness)
    python bench/train_speed.py --cpu       # ours vs peft on the CPU, SmolLM2-135M shape (issue 16)

`--cpu` (no GPU needed): the SmolLM2-135M shape (30 layers, hidden 576, MLP 1536, 9 heads, 3 kv
heads, vocab 49,152, tied head), random init, fp32, r=16 on all seven linear kinds, AdamW, batch
8 x 96 tokens. Ours and peft are built once each (same seed, same base weights) and then timed
ALTERNATELY: each repetition runs `--steps` steps of each, interleaved step by step (which goes
first flips every repetition), so both see the same machine load, and keeps each one's best step. The ratio of the two
best step times (peft / ours: > 1 means ours is faster) is printed per repetition and summarised
as median with min and max. `--model-dir` uses a cached model (e.g. the lab's SmolLM2-135M-Instruct)
instead of random weights.

On CPU the memory column is `n/a` (there is no allocator peak to read); peft's QLoRA needs CUDA
(bitsandbytes' Linear4bit quantizes on `.cuda()`), so its rows are skipped there.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.inject import inject_adapters  # noqa: E402

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Shape:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    batch_size: int
    seq_len: int


TINYLLAMA = Shape(2048, 5632, 22, 32, 4, 32000, batch_size=8, seq_len=512)
DRY_RUN = Shape(64, 128, 2, 4, 2, 256, batch_size=2, seq_len=32)
SMOLLM2 = Shape(576, 1536, 30, 9, 3, 49152, batch_size=8, seq_len=96)


@dataclass(frozen=True)
class Result:
    path: str
    method: str
    checkpointing: bool
    tokens_per_s: float | None
    peak_memory_bytes: int | None
    note: str = ""


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype, tie_word_embeddings: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads, vocab_size=shape.vocab_size,
        max_position_embeddings=max(2048, shape.seq_len), use_cache=False, tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(dtype)


def bnb_quantize_blocks(model, compute_dtype: torch.dtype) -> None:
    """Replace every linear of the decoder blocks by bitsandbytes' NF4 Linear4bit (double quant)."""
    import bitsandbytes as bnb

    for name, module in list(model.model.layers.named_modules()):
        if isinstance(module, torch.nn.Linear):
            parent_name, _, child = name.rpartition(".")
            quantized = bnb.nn.Linear4bit(
                module.in_features, module.out_features, bias=module.bias is not None,
                compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
            )
            quantized.weight = bnb.nn.Params4bit(
                module.weight.data.to("cpu"), requires_grad=False, quant_type="nf4", compress_statistics=True
            )
            setattr(model.model.layers.get_submodule(parent_name), child, quantized.cuda())
            del module


def prepare(path: str, method: str, shape: Shape, device: torch.device, dtype: torch.dtype, r: int):
    model = build_model(shape, device, dtype)
    if path == "ours":
        # qlora: every linear of the blocks becomes a frozen NF4 base (calculators.nf4), LoRA on the targets
        inject_adapters(model, method, ALL_LINEAR, r=r, lora_alpha=2 * r, compute_dtype=dtype)
        return model
    import peft

    if method == "qlora":
        bnb_quantize_blocks(model, dtype)
    config = peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(ALL_LINEAR), task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


def measure(model, shape: Shape, device: torch.device, dtype: torch.dtype, checkpointing: bool, steps: int, warmup: int) -> tuple[float, int | None]:
    on_cuda = device.type == "cuda"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    generator = torch.Generator(device="cpu").manual_seed(0)
    input_ids = torch.randint(0, shape.vocab_size, (shape.batch_size, shape.seq_len), generator=generator).to(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=on_cuda):
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if on_cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if on_cuda else None
    return shape.batch_size * shape.seq_len * steps / elapsed, peak


def run_one(path: str, method: str, checkpointing: bool, shape: Shape, device: torch.device, dtype: torch.dtype, r: int, steps: int, warmup: int) -> Result:
    if path == "peft" and method == "qlora" and device.type != "cuda":
        return Result(path, method, checkpointing, None, None, "bitsandbytes Linear4bit needs CUDA")
    model = None
    try:
        model = prepare(path, method, shape, device, dtype, r)
        tokens_per_s, peak = measure(model, shape, device, dtype, checkpointing, steps, warmup)
        return Result(path, method, checkpointing, tokens_per_s, peak)
    except torch.cuda.OutOfMemoryError:
        return Result(path, method, checkpointing, None, None, "out of memory")
    except ImportError as exc:  # e.g. calculators.nf4 not present yet
        return Result(path, method, checkpointing, None, None, f"skipped: {exc}")
    finally:
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def table(results: list[Result], device_name: str, shape: Shape, r: int, precision: str) -> str:
    lines = [
        f"Device: {device_name}; batch {shape.batch_size} x {shape.seq_len} tokens; r={r} on {', '.join(ALL_LINEAR)}; AdamW; "
        f"{precision}",
        "",
        "| path | method | grad. checkpointing | tokens/s | peak memory (GiB) | note |",
        "|---|---|---|---:|---:|---|",
    ]
    for res in results:
        tps = f"{res.tokens_per_s:,.0f}" if res.tokens_per_s is not None else "-"
        mem = f"{res.peak_memory_bytes / 2**30:.2f}" if res.peak_memory_bytes is not None else "n/a"
        lines.append(f"| {res.path} | {res.method} | {'on' if res.checkpointing else 'off'} | {tps} | {mem} | {res.note} |")
    return "\n".join(lines)


def layers_at(revision: str):
    """training/layers.py as it was at a git revision (e.g. before an optimization), as a module."""
    import importlib.util
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{revision}:training/layers.py"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "layers_at_revision.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("layers_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def cpu_model(path: str, method: str, shape: Shape, r: int, model_dir: str | None, layers_module=None):
    """Ours (or ours with `layers_module`'s classes) or peft's LoRA/DoRA on the CPU shape (or a cached
    model), fp32, the same base weights for all."""
    if model_dir is None:
        model = build_model(shape, torch.device("cpu"), torch.float32, tie_word_embeddings=True)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model.config.use_cache = False
    torch.manual_seed(1)
    if path != "peft":
        import training.inject

        current = training.inject.LoRALinear, training.inject.DoRALinear
        if layers_module is not None:  # inject_adapters builds the classes it imported: swap them in for this call
            training.inject.LoRALinear, training.inject.DoRALinear = layers_module.LoRALinear, layers_module.DoRALinear
        try:
            inject_adapters(model, method, ALL_LINEAR, r=r, lora_alpha=2 * r)
        finally:
            training.inject.LoRALinear, training.inject.DoRALinear = current
        return model
    import peft

    config = peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(ALL_LINEAR), task_type="CAUSAL_LM",
                             use_dora=method == "dora")
    return peft.get_peft_model(model, config)


class Stepper:
    """One model with its AdamW and a fixed batch; `timed_step_s()` times one training step."""

    def __init__(self, model, shape: Shape, vocab_size: int) -> None:
        self.model = model
        model.train()
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        generator = torch.Generator(device="cpu").manual_seed(0)
        self.input_ids = torch.randint(0, vocab_size, (shape.batch_size, shape.seq_len), generator=generator)

    def step(self) -> None:
        loss = self.model(input_ids=self.input_ids, labels=self.input_ids).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    clock = staticmethod(time.perf_counter)  # or time.process_time: CPU seconds, blind to waiting for a core

    def timed_step_s(self) -> float:
        started = self.clock()
        self.step()
        return self.clock() - started


def run_cpu(methods: list[str], shape: Shape, r: int, reps: int, steps: int, warmup: int, model_dir: str | None,
            before: str | None = None) -> str:
    """Ours and peft (and ours at revision `before`) alternately, `reps` times per method: the ratio
    to peft of each repetition, and their median and spread."""
    import statistics

    paths = ["ours", "peft"] + ([f"ours@{before}"] if before else [])
    layers_before = layers_at(before) if before else None
    summary = [
        "| method | layers | ratio ours/peft (tokens/s), median | min-max | ours tokens/s (median) | "
        "peft tokens/s (median) | repetitions |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    tokens = shape.batch_size * shape.seq_len
    for method in methods:
        steppers = {}
        for path in paths:
            kind = "peft" if path == "peft" else "ours"
            model = cpu_model(kind, method, shape, r, model_dir, layers_before if path != kind else None)
            steppers[path] = Stepper(model, shape, model.config.vocab_size)
            for _ in range(warmup):
                steppers[path].step()
        ratios = {path: [] for path in paths if path != "peft"}
        tps = {path: [] for path in paths}
        for rep in range(reps):
            order = paths[rep % len(paths):] + paths[:rep % len(paths)]  # who goes first rotates
            times = {path: [] for path in order}
            for _ in range(steps):  # interleaved step by step, so a burst of load hits all alike
                for path in order:
                    times[path].append(steppers[path].timed_step_s())
            best = {path: min(times[path]) for path in order}
            for path in paths:
                tps[path].append(tokens / best[path])
                if path != "peft":
                    ratios[path].append(best["peft"] / best[path])
            print(f"{method} repetition {rep + 1} ({order[0]} first): " + ", ".join(
                f"{path} {best[path]:.3f} s/step ({tps[path][-1]:,.0f} tokens/s)" for path in paths) + "; ratio to peft: "
                + ", ".join(f"{path} {ratios[path][-1]:.3f}" for path in ratios), flush=True)
        for path, values in ratios.items():
            summary.append(f"| {method} | {path} | {statistics.median(values):.3f} | {min(values):.3f}-{max(values):.3f} | "
                           f"{statistics.median(tps[path]):,.0f} | {statistics.median(tps['peft']):,.0f} | {reps} |")
        del steppers
        gc.collect()
    return "\n".join(summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny model on CPU, seconds")
    parser.add_argument("--cpu", action="store_true", help="ours vs peft alternately on the CPU, SmolLM2-135M shape")
    parser.add_argument("--reps", type=int, default=5, help="--cpu: repetitions (each times ours and peft)")
    parser.add_argument("--model-dir", default=None, help="--cpu: a cached model directory instead of random weights")
    parser.add_argument("--before", default=None, metavar="REV",
                        help="--cpu: also time ours with training/layers.py as at git revision REV, in the same alternation")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="--cpu: wall-clock seconds, or this process's CPU seconds (with --threads 1: the work "
                             "itself, unaffected by other processes waiting for the same cores)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--layers", type=int, default=None,
                        help="--cpu: this many decoder layers instead of the shape's (a loaded machine; the rest unchanged)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; dry run 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; dry run 1)")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--methods", default="lora,qlora")
    parser.add_argument("--paths", default="ours,peft")
    args = parser.parse_args(argv)
    command = f"python bench/train_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}"

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu:
        Stepper.clock = staticmethod(time.process_time if args.clock == "cpu" else time.perf_counter)
        methods = args.methods.split(",") if args.methods != "lora,qlora" else ["lora", "dora"]
        shape = DRY_RUN if args.dry_run else SMOLLM2
        if args.layers:
            shape = dataclasses.replace(shape, num_hidden_layers=args.layers)
        source = "cached model" if args.model_dir else "random init"
        print(f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads, {args.clock} clock; "
              f"{'dry-run' if args.dry_run else 'SmolLM2-135M'} shape ({shape.num_hidden_layers} layers), {source}, fp32; batch {shape.batch_size} x "
              f"{shape.seq_len} tokens; r={args.r} on {', '.join(ALL_LINEAR)}; AdamW; best of {args.steps or 3} "
              f"interleaved steps per model per repetition after {args.warmup if args.warmup is not None else 1} warm-up step(s)", flush=True)
        print(run_cpu(methods, shape, args.r, args.reps, args.steps or 3,
                      args.warmup if args.warmup is not None else 1, args.model_dir, args.before))
        import peft

        print(f"\ntorch {torch.__version__}; peft {peft.__version__}; {time.strftime('%Y-%m-%d')}; command: {command}")
        return 0

    if args.dry_run:
        shape, device, dtype = DRY_RUN, torch.device("cpu"), torch.float32
        steps, warmup = args.steps or 2, args.warmup if args.warmup is not None else 1
        device_name = f"CPU ({platform.processor() or platform.machine()}), dry run"
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device; use --dry-run to check the harness on CPU")
        shape, device, dtype = TINYLLAMA, torch.device("cuda"), torch.bfloat16
        steps, warmup = args.steps or 10, args.warmup if args.warmup is not None else 3
        device_name = torch.cuda.get_device_name()

    results = [
        run_one(path, method, checkpointing, shape, device, dtype, args.r, steps, warmup)
        for method in args.methods.split(",")
        for checkpointing in (False, True)
        for path in args.paths.split(",")
    ]
    precision = "bf16 autocast" if device.type == "cuda" else "fp32 (CPU dry run)"
    print(table(results, device_name, shape, args.r, precision))
    print(f"\ntorch {torch.__version__}; {time.strftime('%Y-%m-%d')}; command: {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
