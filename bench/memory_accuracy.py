"""How close is calculators.memory to torch.cuda.max_memory_allocated? Predicted vs measured.

For each configuration of the grid (default 24: {LoRA, QLoRA, full FT} × gradient checkpointing
{off, on} × {qwen2.5-0.5b, tinyllama-1.1b} shapes × seq {512, 1024}, batch 4), on a CUDA machine:

1. build the transformers model from our architecture config with random init (no downloads),
   save it once per shape to a temporary directory and load it back with `from_pretrained`
   in bf16 (`attn_implementation="sdpa"`); QLoRA loads it through bitsandbytes
   (`BitsAndBytesConfig(load_in_4bit, nf4, double quant, bf16 compute)`), as a reader would;
2. LoRA / QLoRA: peft `LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
   lora_dropout=0)` (peft's default fp32 adapters); full FT: every weight trained in pure bf16;
3. gradient checkpointing: `gradient_checkpointing_enable({"use_reentrant": False})`;
4. `torch.optim.AdamW(fused=True)` (the Trainer default), `--steps` steps (≥ 2 reaches steady
   state: optimizer states exist) of `loss = model(input_ids, labels=input_ids).loss;
   loss.backward(); step(); zero_grad(set_to_none=True)`, no autocast.

What is compared: `torch.cuda.max_memory_allocated()` from a `reset_peak_memory_stats()` just
before loading the model to the end of the last step — the peak over load and steps, weights
included, the CUDA context excluded — against `estimate_memory(...).total_bytes` with the same
settings. Also recorded: memory allocated after loading (vs predicted weights + constants),
max_memory_reserved (fragmentation), and the CUDA context (nvidia-smi-style used − reserved).

    python bench/memory_accuracy.py --out bench/results/memory_accuracy.json   # CUDA
    python bench/memory_accuracy.py --dry-run                                  # predictions only, no torch
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calculators.architectures import Architecture, get_architecture  # noqa: E402
from calculators.memory import MemoryEstimate, estimate_memory  # noqa: E402

GIB = 2**30
R, ALPHA, TARGETS = 16, 32, "all-linear"
METHODS = ("lora", "qlora", "full")


@dataclass(frozen=True)
class Config:
    model: str
    method: str
    gradient_checkpointing: bool
    seq_len: int
    batch_size: int

    @property
    def label(self) -> str:
        return f"{self.model} {self.method} ckpt={'on' if self.gradient_checkpointing else 'off'} b{self.batch_size}×{self.seq_len}"


@dataclass
class Row:
    model: str
    method: str
    gradient_checkpointing: bool
    batch_size: int
    seq_len: int
    predicted_bytes: int
    predicted_phase: str
    predicted_weights_bytes: int
    measured_bytes: int | None = None
    measured_after_load_bytes: int | None = None
    measured_reserved_bytes: int | None = None
    error_percent: float | None = None
    seconds: float | None = None
    note: str = ""


def predict(cfg: Config) -> MemoryEstimate:
    """The estimator with the exact settings the measurement uses."""
    return estimate_memory(
        cfg.model, method=cfg.method, r=R, target_modules=TARGETS,
        base_dtype="nf4" if cfg.method == "qlora" else "bf16", double_quant=True, compute_dtype="bf16",
        optimizer="adamw", fused_optimizer=True, master_weights=False if cfg.method == "full" else None,
        batch_size=cfg.batch_size, seq_len=cfg.seq_len, gradient_checkpointing=cfg.gradient_checkpointing,
        attn_impl="sdpa", lora_dropout=0.0,
    )


def grid(models: list[str], seq_lens: list[int], batch_size: int, methods: list[str]) -> list[Config]:
    return [Config(m, method, ckpt, s, batch_size) for m in models for method in methods for ckpt in (False, True) for s in seq_lens]


# ---------------------------------------------------------------------------- torch side (CUDA only)


def hf_config(arch: Architecture):
    """A transformers config with the architecture's shape (Llama / Qwen2 / Mistral families)."""
    import transformers

    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config, "mistral": transformers.MistralConfig}.get(arch.family)
    if cls is None:
        raise ValueError(f"model: the bench builds llama, qwen2 and mistral shapes, not {arch.family}")
    return cls(
        hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size, num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads, num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.resolved_head_dim, vocab_size=arch.vocab_size, max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=arch.tie_word_embeddings, use_cache=False,
    )


def save_random_model(arch: Architecture, directory: Path) -> Path:
    """Random-init model of this shape, saved in bf16 (so from_pretrained can quantize it like a hub model)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = directory / arch.slug
    if path.exists():
        return path
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config(arch), dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    if n != arch.n_params:
        print(f"warning: {arch.slug}: built {n:,} parameters, architectures says {arch.n_params:,}", file=sys.stderr)
    model.save_pretrained(path)
    del model
    gc.collect()
    return path


def measure(cfg: Config, model_dir: Path, steps: int) -> tuple[int, int, int]:
    """(max allocated over load + steps, allocated after load, max reserved)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    kwargs = dict(dtype=torch.bfloat16, attn_implementation="sdpa", device_map={"": 0})
    if cfg.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    model.config.use_cache = False
    torch.cuda.synchronize()
    after_load = torch.cuda.memory_allocated()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=R, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0,
                                                 task_type="CAUSAL_LM"))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    generator = torch.Generator(device="cuda").manual_seed(0)
    vocab = model.config.vocab_size
    for _ in range(steps):
        ids = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len), device="cuda", generator=generator)
        loss = model(input_ids=ids, labels=ids).loss  # the output (and its logits) is dropped, as in Trainer
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss, ids
    torch.cuda.synchronize()
    peak, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    del optimizer, trainable, model
    gc.collect()
    torch.cuda.empty_cache()
    return peak, after_load, reserved


def cuda_context_bytes() -> int:
    """Device memory in use that the caching allocator did not reserve: the CUDA context and handles."""
    import torch

    torch.ones(1, device="cuda") @ torch.ones(1, 1, device="cuda")  # initialise cuBLAS too
    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


def environment() -> dict:
    import bitsandbytes
    import peft
    import torch
    import transformers

    return {
        "device": torch.cuda.get_device_name(0), "device_total_bytes": torch.cuda.get_device_properties(0).total_memory,
        "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
        "peft": peft.__version__, "bitsandbytes": bitsandbytes.__version__, "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------- report


def gib(n: int | None) -> str:
    return "—" if n is None else f"{n / GIB:.2f}"


def markdown(rows: list[Row]) -> str:
    lines = [
        "| model | method | ckpt | batch×seq | predicted GiB | measured GiB | error | predicted peak at | weights pred / meas GiB | note |",
        "|---|---|---|---|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        err = "—" if r.error_percent is None else f"{r.error_percent:+.1f} %"
        lines.append(
            f"| {r.model} | {r.method} | {'on' if r.gradient_checkpointing else 'off'} | {r.batch_size}×{r.seq_len} | "
            f"{gib(r.predicted_bytes)} | {gib(r.measured_bytes)} | {err} | {r.predicted_phase} | "
            f"{gib(r.predicted_weights_bytes)} / {gib(r.measured_after_load_bytes)} | {r.note} |"
        )
    errors = [abs(r.error_percent) for r in rows if r.error_percent is not None]
    if errors:
        lines.append("")
        lines.append(f"Mean |error| {sum(errors) / len(errors):.1f} %, max {max(errors):.1f} % over {len(errors)} configurations.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the predictions only (no torch, no GPU)")
    parser.add_argument("--out", type=Path, help="write the rows and environment as JSON here (and .md beside it)")
    parser.add_argument("--models", default="qwen2.5-0.5b,tinyllama-1.1b")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seq-lens", default="512,1024")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per configuration (≥ 2)")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps: at least 2 (the peak is reached once optimizer states exist)")
    models = [get_architecture(m).slug for m in args.models.split(",")]
    configs = grid(models, [int(s) for s in args.seq_lens.split(",")], args.batch_size, args.methods.split(","))

    rows: list[Row] = []
    for cfg in configs:
        est = predict(cfg)
        rows.append(Row(cfg.model, cfg.method, cfg.gradient_checkpointing, cfg.batch_size, cfg.seq_len, est.total_bytes,
                        est.peak_phase, est.weights_bytes + est.quant_constants_bytes))
    meta: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv)}

    if args.dry_run:
        meta["mode"] = "dry-run (predictions only)"
    else:
        import torch

        if not torch.cuda.is_available():
            print("No CUDA device: run with --dry-run for the predictions only.", file=sys.stderr)
            return 2
        meta.update(environment())
        meta["cuda_context_bytes_measured"] = cuda_context_bytes()
        with tempfile.TemporaryDirectory(prefix="memory-accuracy-") as tmp:
            dirs = {m: save_random_model(get_architecture(m), Path(tmp)) for m in models}
            for cfg, row in zip(configs, rows):
                start = time.perf_counter()
                try:
                    peak, after_load, reserved = measure(cfg, dirs[cfg.model], args.steps)
                except torch.cuda.OutOfMemoryError:
                    row.note = "OOM"
                except Exception as exc:  # keep the grid going; the row says why
                    row.note = f"{type(exc).__name__}: {exc}"[:120]
                else:
                    row.measured_bytes, row.measured_after_load_bytes, row.measured_reserved_bytes = peak, after_load, reserved
                    row.error_percent = 100.0 * (row.predicted_bytes - peak) / peak
                row.seconds = round(time.perf_counter() - start, 1)
                print(f"{cfg.label}: predicted {gib(row.predicted_bytes)} GiB, measured {gib(row.measured_bytes)} GiB "
                      f"{row.note}", flush=True)

    table = markdown(rows)
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
