"""Time the lab's default run end to end, as a reader starts it, and print what it learned.

Runs the lab's default settings (`app.lab.TrainRequest()`; `--methods` adds others) on the
cached SmolLM2-135M-Instruct and the full task, exactly as the job worker does (same threads:
all cores), twice per method. The first run is a new server's first: a fresh process (the
"process" column adds importing torch and transformers to its wall time) and no kept base-model
evaluation, so it evaluates the base model itself. The second is every later run, and the first
one after the lab's page warmed the trainer up: the process is up, the model read, and the
base model's held-out answers kept (training/baseline.py).
Prints wall time (load, evaluation and training included) and the process's CPU time (all
threads; on a loaded machine wall time stretches, CPU time much less), tokens/s, held-out exact match and
answer-token loss before → after, trainable parameters (measured / predicted), memory
(measured / predicted; on a CPU the tensor accounting of training.run.RunSummary beside the
estimator's same terms) and two held-out before/after answers.

    .venv/bin/python bench/lab_run.py [--methods lora,dora,qlora] [--steps N]
"""

from __future__ import annotations

import time

PROCESS_STARTED = time.perf_counter()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from app.formatting import format_gpu_bytes  # noqa: E402
from app.lab import TrainRequest, lab_model, predict_run  # noqa: E402
from app.settings import Settings  # noqa: E402
from training.run import Phase, RunSummary, StepMetrics, TrainConfig, train  # noqa: E402
from training.task import load_task  # noqa: E402


def run(method: str, steps: int | None, settings: Settings, baseline_dir: Path, overrides: dict | None = None) -> dict:
    request = TrainRequest(method=method, **({"steps": steps} if steps else {}))
    config = {**request.training_config(), **(overrides or {})}
    config["target_modules"] = tuple(config["target_modules"])
    step_records: list[StepMetrics] = []
    phases: list[Phase] = []
    summary: RunSummary | None = None
    started, cpu_started = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as out:
        for record in train(TrainConfig(**config), settings.lab_model_dir, output_dir=out, task=load_task(settings.lab_task_dir),
                            baseline_dir=baseline_dir):
            if isinstance(record, StepMetrics):
                step_records.append(record)
            elif isinstance(record, Phase):
                phases.append(record)
            elif isinstance(record, RunSummary):
                summary = record
    wall_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    predicted = predict_run(request, lab_model(settings), on_gpu=torch.cuda.is_available(), seq_len=summary.max_batch_tokens,
                            autocast=summary.autocast == "bf16")
    kept = any(p.evaluation_s is not None for p in phases)
    return {"method": method, "request": request, "summary": summary, "steps": step_records, "predicted": predicted, "wall_s": wall_s,
            "start": "warm, base answers kept" if kept else "new server",
            "process_s": time.perf_counter() - PROCESS_STARTED,
            "cpu_s": cpu_s, "split": where_the_time_went(phases, step_records, summary)}


def where_the_time_went(phases: list[Phase], steps: list[StepMetrics], summary: RunSummary) -> dict[str, float]:
    """Seconds per part of the run, from the run's own clock (Phase.elapsed_s is since its start)."""
    def first(name: str) -> float:
        return next(p.elapsed_s for p in phases if p.phase == name)

    def last(name: str) -> float:
        return [p.elapsed_s for p in phases if p.phase == name][-1]

    step_s = sum(s.step_s for s in steps)
    return {"load": last("load") - first("load"), "before": last("before") - first("before"), "steps": step_s,
            "samples": summary.train_s - step_s, "after": last("after") - first("after"), "save": summary.wall_s - first("save")}


def _value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="lora")
    parser.add_argument("--steps", type=int, default=None, help="default: the lab's default")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a TrainConfig field for an experiment (e.g. precision=fp32, lr=0.004)")
    args = parser.parse_args()
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    torch.set_num_threads(os.cpu_count() or 1)  # as training.worker does
    settings = Settings()
    rows = []
    with tempfile.TemporaryDirectory() as baselines:
        for method in args.methods.split(","):
            rows += [run(method, args.steps, settings, Path(baselines), overrides) for _ in range(2)]
    device = "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu, {torch.get_num_threads()} threads"
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {device}, load average {load:.1f} at the end, {dt.date.today()}; "
          f"command: python bench/lab_run.py --methods {args.methods}" + (f" --steps {args.steps}" if args.steps else "")
          + "".join(f" --set {item}" for item in args.set))
    print()
    print("| method | run | r | steps × batch | precision | wall (s) | with process start (s) | CPU time (s) | of which training (s) "
          "| tokens/s | exact match before → after | answer loss before → after | trainable (measured / predicted) "
          "| memory (measured / predicted) |")
    print("| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- |")
    first = True
    for row in rows:
        r, s, p = row["request"], row["summary"], row["predicted"]
        n = s.held_out
        memory_predicted = p["accounted_bytes"] if s.peak_memory_kind == "cpu_tensor_accounting" else p["peak_memory_bytes"]
        process = f"{row['process_s']:.1f}" if first else "—"
        first = False
        precision = "bf16 autocast" if s.autocast == "bf16" else "fp32"
        print(f"| {row['method']} | {row['start']} | {r.rank} | {r.steps} × {r.batch_size} | {precision} | {row['wall_s']:.1f} "
              f"| {process} | {row['cpu_s']:.1f} | {s.train_s:.1f} "
              f"| {s.tokens_per_s:,.0f} | {round(s.exact_match_before * n)}/{n} → {round(s.exact_match_after * n)}/{n} "
              f"| {s.answer_loss_before:.3f} → {s.answer_loss_after:.3f} | {s.trainable_params:,} / {p['trainable_params']:,} "
              f"| {format_gpu_bytes(s.peak_memory_bytes)} / {format_gpu_bytes(memory_predicted)} |")
    print("\n| method | run | " + " | ".join(f"{k} (s)" for k in rows[0]["split"]) + " |")
    print("| --- | --- |" + " ---: |" * len(rows[0]["split"]))
    for row in rows:
        print(f"| {row['method']} | {row['start']} | " + " | ".join(f"{v:.1f}" for v in row["split"].values()) + " |")
    for row in rows[::2]:
        print(f"\n{row['method']}: held-out answers before → after (expected)")
        for sample in row["summary"].samples[:2]:
            print(f"- request: {sample['prompt']}\n  before: {sample['before']!r}\n  after: {sample['after']!r}\n"
                  f"  expected: {sample['expected']!r}")


if __name__ == "__main__":
    main()
