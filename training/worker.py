"""The training worker process: loads the base model once, runs jobs one at a time.

The web server (app/jobs.py) talks to it through two multiprocessing queues of plain dicts,
so no torch object crosses the process boundary:

    serve(requests, events, cancel, model_dir, task_dir, threads, baseline_dir): the base model's
    folder, the task's JSONL folder and where base-model evaluations are kept (plain paths, from
    app.settings).

    requests  <- {"job": id, "kind": "train", "config": {...TrainConfig fields...}, "output_dir": str}
                 {"job": id, "kind": "try", "prompt": str, "config": {...the run's TrainConfig...},
                  "adapter_dir": str, "max_new_tokens": int}
                 {"job": None, "kind": "warm", "config": {...}}: load the model and evaluate the base
                  model for that config ahead of the first run (training.run.warm_up)
    events    -> {"job": id, "type": "phase"|"step"|"sample"|"summary"|"answers"|"error", ...}
                 {"job": None, "type": "ready"|"warm", ...}: the process is up; the warm-up is done

`cancel` is an Event the server sets to stop the current job between steps. An error event says
what went wrong in words a reader can act on; the traceback goes to this process's log (the
server's log), never into an event, because it names files on the server.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
import time
from dataclasses import asdict, fields
from multiprocessing.synchronize import Event
from pathlib import Path
from queue import Queue
from typing import Any

log = logging.getLogger("loralab.worker")

RECORD_TYPES = {"Phase": "phase", "StepMetrics": "step", "Sample": "sample", "RunSummary": "summary"}
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[\w.+-]+/)+([\w.+-]+)")


def without_paths(message: str) -> str:
    """Replace absolute file paths in a message by their last component."""
    return _ABSOLUTE_PATH.sub(r"\1", message)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(kind, message) for an error event: what happened, in words, with no server paths."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "out_of_memory", "The GPU ran out of memory. Try a smaller batch size, a lower rank or QLoRA."
    if isinstance(exc, MemoryError):
        return "out_of_memory", "The server ran out of memory. Try a smaller batch size or a lower rank."
    if isinstance(exc, ValueError):
        return "invalid", without_paths(str(exc))
    if isinstance(exc, FileNotFoundError):
        return "missing_model", without_paths(str(exc))
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk_full", "The server's disk is full, so the adapter could not be saved."
    if isinstance(exc, OSError) and "no file named" in str(exc):  # transformers: a model folder without weights
        return "missing_model", f"{without_paths(str(exc))} Cache the model again (`loralab cache-model`)."
    return "failed", f"The run stopped on an unexpected error ({type(exc).__name__}); the server log has the details."


def _plain(record: Any) -> dict[str, Any]:
    data = asdict(record)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}


class _AdaptedModels:
    """The adapted model of the last run someone tried, rebuilt from its saved adapter."""

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self.key: str | None = None
        self.model = None

    def get(self, adapter_dir: str, config):
        if self.key != adapter_dir:
            from safetensors.torch import load_file

            from training.export import PREFIX
            from training.run import prepare

            self.model = None  # free the previous one first
            loaded, _, _ = prepare(config, self.model_dir, _device())
            state = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
            result = loaded.model.load_state_dict({k.removeprefix(PREFIX): v for k, v in state.items()}, strict=False)
            if result.unexpected_keys:
                raise ValueError(f"adapter: {len(result.unexpected_keys)} tensors fit no module of the base model")
            self.model, self.key = loaded.model, adapter_dir
        return self.model


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _train_config(config: dict[str, Any], known: set[str]):
    from training.run import TrainConfig

    settings = {key: value for key, value in config.items() if key in known}
    return TrainConfig(**{**settings, "target_modules": tuple(settings.get("target_modules", ()))})


def _die_with_parent() -> None:
    """Exit when the parent process dies (a web server or `loralab worker` killed with SIGKILL),
    so no orphaned run keeps training.

    A watchdog thread polls the parent's pid, not Linux's PR_SET_PDEATHSIG: that signal fires
    when the *thread* that started this process exits, and the server starts runs from
    short-lived worker threads (anyio retires idle ones after 10 s), which killed live runs.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:  # re-parented: the parent is gone
                os._exit(1)

    threading.Thread(target=watch, name="loralab-parent-watch", daemon=True).start()


def serve(requests: Queue, events: Queue, cancel: Event, model_dir: str, task_dir: str, threads: int | None = None,
          baseline_dir: str | None = None) -> None:
    """Run jobs from `requests` until a None arrives; report everything on `events`."""
    _die_with_parent()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import torch

    from training import run as training_run
    from training.generate import greedy_answers
    from training.model import load_base
    from training.task import load_task

    known = {f.name for f in fields(training_run.TrainConfig)}
    adapted = _AdaptedModels(model_dir)
    # All cores: the web server's work is small and waits on I/O (a reader's page stays fast).
    torch.set_num_threads(max(1, threads or os.cpu_count() or 1))
    device = _device()
    autocast = training_run.autocast_dtype_for("auto", device) is not None
    events.put({"job": None, "type": "ready", "cuda": device.type == "cuda", "autocast": autocast})
    while True:
        request = requests.get()
        if request is None:
            return
        job = request["job"]
        cancel.clear()
        try:
            task = load_task(Path(task_dir))  # small; read per job so an edited task applies at once
            config = _train_config(request["config"], known)
            if request.get("kind") == "warm":
                started = time.perf_counter()
                evaluated = training_run.warm_up(config, model_dir, task, baseline_dir)
                events.put({"job": None, "type": "warm", "evaluated": evaluated, "s": time.perf_counter() - started})
                continue
            if request.get("kind", "train") == "try":
                events.put({"job": job, "type": "phase", "phase": "load", "message": "Loading the adapted model",
                            "done": 0, "total": 1, "elapsed_s": 0.0})
                model = adapted.get(request["adapter_dir"], config)
                base, tokenizer = load_base(model_dir)
                prompt, limit = [request["prompt"]], int(request["max_new_tokens"])
                events.put({
                    "job": job, "type": "answers", "prompt": request["prompt"],
                    "base": greedy_answers(base, tokenizer, task.system_prompt, prompt, limit)[0],
                    "adapted": greedy_answers(model, tokenizer, task.system_prompt, prompt, limit)[0],
                })
                continue
            for record in training_run.train(
                config, model_dir, should_stop=cancel.is_set, output_dir=request["output_dir"], task=task,
                baseline_dir=baseline_dir,
            ):
                events.put({"job": job, "type": RECORD_TYPES[type(record).__name__], **_plain(record)})
        except Exception as exc:  # noqa: BLE001 - report any failure as the job's status, keep serving
            kind, message = describe_failure(exc)
            log.exception("job %s failed (%s)", job, kind)
            events.put({"job": job, "type": "error", "kind": kind, "message": message})
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
