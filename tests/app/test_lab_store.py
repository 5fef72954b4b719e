"""The run store (app/lab_store.py) on a real SQLite file and real run folders: records and
events survive a new store on the same folder, unfinished runs are marked interrupted, and
retention removes the oldest finished runs by count and by size, and says so."""

from __future__ import annotations

import json
import logging
import time

from app.lab_store import Retention, RunStore

MIB = 2**20


def make_run(store: RunStore, run_id: str, status: str = "succeeded", adapter_bytes: int = 0, at: float = 0.0) -> None:
    store.create({"id": run_id, "kind": "train", "config": {"steps": 2}, "status": "queued",
                  "created_at": at or time.time()})
    if adapter_bytes:
        folder = store.adapter_dir(run_id)
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"\0" * adapter_bytes)
    store.append_events(run_id, 0, [{"type": "step", "step": 1}])
    if status != "queued":
        store.finish(run_id, status, [{"type": "end", "status": status}], 1, finished_at=at or time.time(),
                     summary={"wall_s": 1.0})


def test_records_and_events_outlive_the_store_object(tmp_path):
    store = RunStore(tmp_path, Retention(10, 100 * MIB))
    make_run(store, "a", adapter_bytes=1000)
    store.close()
    again = RunStore(tmp_path, Retention(10, 100 * MIB))
    record = again.get("a")
    assert record["status"] == "succeeded" and record["config"] == {"steps": 2} and record["summary"] == {"wall_s": 1.0}
    assert record["size_bytes"] == 1000
    assert again.events("a") == [{"type": "step", "step": 1}, {"type": "end", "status": "succeeded"}]
    assert again.events("a", since=1) == [{"type": "end", "status": "succeeded"}]


def test_unfinished_runs_are_marked_interrupted_with_words(tmp_path):
    store = RunStore(tmp_path, Retention(10, 100 * MIB))
    make_run(store, "done")
    make_run(store, "waiting", status="queued")
    make_run(store, "busy", status="queued")
    store.update("busy", status="running")
    assert sorted(store.interrupt_unfinished("The server stopped before this run finished.")) == ["busy", "waiting"]
    for run_id in ("busy", "waiting"):
        record = store.get(run_id)
        assert record["status"] == "failed" and record["error"]["kind"] == "interrupted"
        assert store.events(run_id)[-2:] == [
            {"type": "error", "kind": "interrupted", "message": "The server stopped before this run finished."},
            {"type": "end", "status": "failed"}]
    assert store.get("done")["status"] == "succeeded"
    assert store.interrupt_unfinished("again") == []  # finished runs are left alone


def test_retention_by_count_removes_the_oldest_finished_runs_and_says_so(tmp_path, caplog):
    store = RunStore(tmp_path, Retention(max_runs=2, max_bytes=100 * MIB))
    for i, run_id in enumerate(["r1", "r2", "r3", "r4"]):
        make_run(store, run_id, adapter_bytes=10, at=1000.0 + i)
    make_run(store, "live", status="queued")  # never counted, never removed
    with caplog.at_level(logging.INFO, logger="loralab.store"):
        removal = store.prune()
    assert removal.runs == ("r1", "r2") and removal.bytes == 20 and "over: count" in removal.reason
    assert store.get("r1") is None and store.events("r1") == [] and not store.run_dir("r1").exists()
    assert store.get("r3") is not None and store.run_dir("r3").is_dir() and store.get("live") is not None
    assert store.usage() == {"runs": 2, "bytes": 20}
    assert store.removals(1)[0].runs == ("r1", "r2") and store.removed_total() == 2
    line = next(r.getMessage() for r in caplog.records if "retention" in r.getMessage())
    assert "r1, r2" in line and str(tmp_path) not in line and "/" not in line.replace("/s", "")
    assert store.prune() is None  # within bounds now


def test_retention_by_size_removes_the_oldest_until_the_files_fit(tmp_path):
    store = RunStore(tmp_path, Retention(max_runs=100, max_bytes=3 * MIB))
    for i, run_id in enumerate(["old", "mid", "new"]):
        make_run(store, run_id, adapter_bytes=MIB + 1, at=1000.0 + i)  # three just over 1 MiB: 3 MiB + 3 B
    removal = store.prune()
    assert removal.runs == ("old",) and removal.bytes == MIB + 1 and "over: size" in removal.reason
    assert [r["id"] for r in store.records_with_status("succeeded")] == ["mid", "new"]
    assert store.usage()["bytes"] == 2 * (MIB + 1)
    assert json.loads(json.dumps(store.removals(1)[0].public()))["runs"] == ["old"]


def test_the_run_that_just_finished_is_kept_even_past_the_bounds(tmp_path):
    store = RunStore(tmp_path, Retention(max_runs=1, max_bytes=MIB))
    make_run(store, "older", adapter_bytes=10, at=1000.0)
    make_run(store, "big", adapter_bytes=2 * MIB, at=1001.0)
    assert store.prune(keep="big").runs == ("older",)
    assert store.prune(keep="big") is None and store.get("big") is not None
