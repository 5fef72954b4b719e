"""The worker's error reporting: a failed run says what went wrong in words, keeps the traceback
in the server log (never in an event: it names server files), and the worker serves on."""

from __future__ import annotations

import errno
import logging
import queue
import threading

import pytest

torch = pytest.importorskip("torch")

from training.worker import describe_failure, without_paths  # noqa: E402


def run_worker(monkeypatch, failure: BaseException, lab_model_dir, small_task_dir) -> list[dict]:
    """Two jobs through training.worker.serve in a thread: the first raises `failure` where
    training would run (forced: this machine has no GPU to run out of, nor a full disk), the
    second trains for real."""
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
    config = {"steps": 1, "batch_size": 2, "r": 2, "max_new_tokens": 4, "sample_every": 0}
    requests.put({"job": "first", "kind": "train", "config": config, "output_dir": None})
    requests.put({"job": "second", "kind": "train", "config": config, "output_dir": None})
    requests.put(None)
    worker = threading.Thread(target=serve, args=(requests, events, cancel, str(lab_model_dir), str(small_task_dir),
                                                  torch.get_num_threads()))
    worker.start()
    worker.join(timeout=600)
    assert not worker.is_alive()
    return [events.get_nowait() for _ in range(events.qsize())]


def test_out_of_memory_is_reported_in_words_and_the_worker_serves_on(monkeypatch, lab_model_dir, small_task_dir, caplog):
    failure = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (/opt/venv/lib/torch/x.py)")
    with caplog.at_level(logging.ERROR, logger="loralab.worker"):
        events = run_worker(monkeypatch, failure, lab_model_dir, small_task_dir)
    first = [e for e in events if e["job"] == "first"]
    assert first == [{"job": "first", "type": "error", "kind": "out_of_memory",
                      "message": "The GPU ran out of memory. Try a smaller batch size, a lower rank or QLoRA."}]
    assert any(e["job"] == "second" and e["type"] == "summary" for e in events)
    assert "Traceback" in caplog.text and "OutOfMemoryError" in caplog.text  # the details stay in the log


def test_an_unexpected_failure_names_its_type_but_no_server_path(monkeypatch, lab_model_dir, small_task_dir):
    events = run_worker(monkeypatch, RuntimeError("cannot open /srv/loralab/var/runs/x/adapter.bin"), lab_model_dir, small_task_dir)
    error = next(e for e in events if e["job"] == "first" and e["type"] == "error")
    assert error == {"job": "first", "type": "error", "kind": "failed",
                     "message": "The run stopped on an unexpected error (RuntimeError); the server log has the details."}
    assert "traceback" not in error and "/srv" not in str(events)
    summary = next(e for e in events if e["job"] == "second" and e["type"] == "summary")
    assert summary["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert not any(str(lab_model_dir) in str(value) or "/tmp" in str(value) for value in summary.values())


@pytest.mark.parametrize(
    ("failure", "kind", "message"),
    [
        (ValueError("batch_size: 9 exceeds the 8 training examples"), "invalid", "batch_size: 9 exceeds the 8 training examples"),
        (FileNotFoundError("no model in /data/models/smollm2/: run scripts/setup"), "missing_model", "no model in smollm2/: run scripts/setup"),
        (OSError(errno.ENOSPC, "No space left on device"), "disk_full", "The server's disk is full, so the adapter could not be saved."),
        (MemoryError(), "out_of_memory", "The server ran out of memory. Try a smaller batch size or a lower rank."),
    ],
)
def test_each_failure_has_words_for_the_reader(failure, kind, message):
    assert describe_failure(failure) == (kind, message)


def test_paths_are_cut_to_their_last_part():
    assert without_paths("cannot read /work/wt/lab/var/models/smollm2/config.json, sorry") == "cannot read config.json, sorry"
    assert without_paths("r: must be >= 1 (got 0.5/2)") == "r: must be >= 1 (got 0.5/2)"
