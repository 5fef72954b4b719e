"""The training worker process: loads the base model once, runs jobs one at a time.

The web server (app/jobs.py) talks to it through two multiprocessing queues of plain dicts,
so no torch object crosses the process boundary:

    requests  <- {"job": id, "config": {...TrainConfig fields...}, "output_dir": str}
    events    -> {"job": id, "type": "started"|"step"|"summary"|"error", ...}

`cancel` is an Event the server sets to stop the current job between steps.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import asdict
from multiprocessing.synchronize import Event
from queue import Queue
from typing import Any


def _plain(record: Any) -> dict[str, Any]:
    data = asdict(record)
    return {key: (str(value) if hasattr(value, "__fspath__") else value) for key, value in data.items()}


def serve(requests: Queue, events: Queue, cancel: Event, threads: int | None = None) -> None:
    """Run jobs from `requests` until a None arrives; report everything on `events`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from dataclasses import fields

    from training.run import RunSummary, StepMetrics, TrainConfig, train

    known = {f.name for f in fields(TrainConfig)}

    # Leave a core to the web server: the rest of the site stays fast while a job runs.
    torch.set_num_threads(max(1, threads or (os.cpu_count() or 2) - 1))
    events.put({"job": None, "type": "ready", "cuda": torch.cuda.is_available()})
    while True:
        request = requests.get()
        if request is None:
            return
        job = request["job"]
        cancel.clear()
        try:
            settings = {key: value for key, value in request["config"].items() if key in known}
            config = TrainConfig(**{**settings, "target_modules": tuple(settings.get("target_modules", ()))})
            events.put({"job": job, "type": "started"})
            for record in train(config, should_stop=cancel.is_set, output_dir=request["output_dir"]):
                if isinstance(record, StepMetrics):
                    events.put({"job": job, "type": "step", **_plain(record)})
                elif isinstance(record, RunSummary):
                    events.put({"job": job, "type": "summary", **_plain(record)})
        except torch.cuda.OutOfMemoryError as exc:
            events.put({"job": job, "type": "error", "kind": "out_of_memory", "message": str(exc).splitlines()[0]})
            torch.cuda.empty_cache()
        except ValueError as exc:
            events.put({"job": job, "type": "error", "kind": "invalid", "message": str(exc)})
        except Exception as exc:  # noqa: BLE001 - report any failure as the job's status, keep serving
            events.put(
                {"job": job, "type": "error", "kind": "failed", "message": f"{type(exc).__name__}: {exc}",
                 "traceback": traceback.format_exc(limit=5)}
            )
