"""The lab's default runs, end to end, with the calculators' predictions beside the measurement.

Trains the lab's shipped model (all-MiniLM-L6-v2, or LORALAB_MODEL_PATH) on the reviews task
with the lab page's default settings, once per method, exactly as the job worker does, and
prints wall time, tokens/s, accuracy before → after, trainable parameters (measured vs
predicted) and peak memory (measured vs predicted; on a CPU the measurement is the tensor
accounting described in training.run.RunSummary, on CUDA torch.cuda.max_memory_allocated).

    .venv/bin/python bench/lab_run.py [--methods lora,dora,qlora] [--steps 150]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from app.lab import TrainRequest, lab_model, predict_run  # noqa: E402
from app.settings import Settings  # noqa: E402
from training.run import RunSummary, StepMetrics, TrainConfig, train  # noqa: E402


def run(method: str, steps: int) -> dict:
    request = TrainRequest(method=method, steps=steps)
    config = {**request.training_config()}
    config["target_modules"] = tuple(config["target_modules"])
    steps_seen: list[StepMetrics] = []
    summary: RunSummary | None = None
    with tempfile.TemporaryDirectory() as out:
        for record in train(TrainConfig(**config), output_dir=out):
            if isinstance(record, StepMetrics):
                steps_seen.append(record)
            else:
                summary = record
    predicted = predict_run(request, lab_model(Settings()), on_gpu=torch.cuda.is_available())
    return {"method": method, "request": request, "summary": summary, "steps": steps_seen, "predicted": predicted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="lora,dora,qlora")
    parser.add_argument("--steps", type=int, default=TrainRequest().steps)
    args = parser.parse_args()
    rows = [run(method, args.steps) for method in args.methods.split(",")]
    device = "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {device}, {dt.date.today()}; command: python bench/lab_run.py "
          f"--methods {args.methods} --steps {args.steps}")
    print()
    print("| method | r | steps × batch × seq | wall (s) | tokens/s (median) | accuracy before → after "
          "| trainable (measured / predicted) | peak memory (measured / predicted) |")
    print("| --- | ---: | --- | ---: | ---: | --- | --- | --- |")
    for row in rows:
        r, s, p = row["request"], row["summary"], row["predicted"]
        tokens = statistics.median(step.tokens_per_s for step in row["steps"])
        peak = max(step.peak_memory_bytes for step in row["steps"])
        print(f"| {row['method']} | {r.rank} | {r.steps} × {r.batch_size} × {r.seq_len} | {s.wall_s:.1f} | {tokens:,.0f} "
              f"| {s.accuracy_before:.1%} → {s.accuracy_after:.1%} | {s.trainable_params:,} / {p['trainable_params']:,} "
              f"| {peak / 2**20:,.1f} / {p['peak_memory_bytes'] / 2**20:,.1f} MiB |")


if __name__ == "__main__":
    main()
