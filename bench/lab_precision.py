"""The lab's training step in float32 against bf16 autocast, on this machine's CPU (or GPU).

Backs chapter 9's "Precision" paragraph: the lab's default run (LoRA r=8 on q_proj, v_proj,
batches of 8 requests of the full task), steps of the two precisions interleaved in rounds of
three on the same model and batches so that a machine's drift hits both alike. Prints each
step's seconds, the medians and their ratio.

    .venv/bin/python bench/lab_precision.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from app.settings import Settings  # noqa: E402
from training.data import encode_examples, train_batches  # noqa: E402
from training.run import TrainConfig, _SavedTensorBytes, make_optimizer, prepare, train_step  # noqa: E402
from training.task import load_task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)  # as training.worker does
    settings, task = Settings(), load_task(Settings().lab_task_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = TrainConfig(steps=6 * args.rounds + 2, lr=1e-5)  # a small lr: the model barely moves
    loaded, _, _ = prepare(config, settings.lab_model_dir, device)
    model, tokenizer = loaded.model, loaded.tokenizer
    encoded = encode_examples(tokenizer, task.system_prompt, task.train, config.max_seq_len)
    batches = [{k: v.to(device) for k, v in b.items()}
               for b in train_batches(encoded, 8, config.steps, config.seed, tokenizer.pad_token_id)]
    optimizer, scheduler = make_optimizer(model, config)
    model.train()
    for dtype in (None, torch.bfloat16):  # warm-up: one step each
        train_step(model, batches[0], optimizer, scheduler, dtype)
    seconds: dict[str, list[float]] = {"fp32": [], "bf16 autocast": []}
    for round_ in range(args.rounds):
        for name, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
            for batch in batches[2 + 3 * round_ : 5 + 3 * round_]:
                started = time.perf_counter()
                train_step(model, batch, optimizer, scheduler, dtype, _SavedTensorBytes(set()))  # as the lab steps
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds[name].append(time.perf_counter() - started)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, bf16 units: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, "
          f"load average {os.getloadavg()[0]:.1f}, {dt.date.today()}; command: python bench/lab_precision.py --rounds {args.rounds}\n")
    print("| precision | median step (s) | steps (s) |\n| --- | ---: | --- |")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    ratio = statistics.median(seconds["fp32"]) / statistics.median(seconds["bf16 autocast"])
    print(f"\nbf16 autocast is {ratio:.2f}× as fast per step")


if __name__ == "__main__":
    main()
