"""The worker's error reporting: a run that fails reports why, and the worker serves on."""

from __future__ import annotations

import queue
import threading

import pytest

torch = pytest.importorskip("torch")


def run_worker(monkeypatch, failure: BaseException) -> list[dict]:
    """Two jobs through training.worker.serve in a thread: the first raises `failure` where
    training would run (a forced error: this machine has no GPU to run out of), the second
    trains for real."""
    import training.run

    real_train = training.run.train
    calls = {"n": 0}

    def train(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise failure
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training.run, "train", train)
    from training.worker import serve

    requests, events, cancel = queue.Queue(), queue.Queue(), threading.Event()
    config = {"steps": 2, "batch_size": 4, "seq_len": 16, "r": 2}
    requests.put({"job": "first", "config": config, "output_dir": None})
    requests.put({"job": "second", "config": config, "output_dir": None})
    requests.put(None)
    worker = threading.Thread(target=serve, args=(requests, events, cancel, torch.get_num_threads()))
    worker.start()
    worker.join(timeout=300)
    assert not worker.is_alive()
    return [events.get_nowait() for _ in range(events.qsize())]


def test_cuda_out_of_memory_is_reported_and_the_worker_serves_on(monkeypatch):
    events = run_worker(monkeypatch, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    first = [e for e in events if e["job"] == "first" and e["type"] == "error"]
    assert first == [{"job": "first", "type": "error", "kind": "out_of_memory",
                      "message": "CUDA out of memory. Tried to allocate 20.00 GiB"}]
    assert any(e["job"] == "second" and e["type"] == "summary" for e in events)


def test_any_other_failure_is_reported_with_its_type(monkeypatch):
    events = run_worker(monkeypatch, RuntimeError("disk full"))
    error = next(e for e in events if e["job"] == "first" and e["type"] == "error")
    assert error["kind"] == "failed" and error["message"] == "RuntimeError: disk full"
    assert any(e["job"] == "second" and e["type"] == "summary" for e in events)
