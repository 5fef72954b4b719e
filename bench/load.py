"""The server under load, idle and while a training run holds the worker.

Starts the real server (`loralab serve`) and drives it from other processes on loopback with
`hey` (Debian package `hey`):

1. idle: a chapter page, an instrument fragment and a JSON API route, each at increasing
   fixed rates, `--seconds` per rate;
2. training: one long run occupies the trainer; 50 clients then post training requests at once
   (all but the queue's few slots must get 429 with Retry-After) while each route is measured
   at 100 requests/s; target p99 < 50 ms;
3. memory: the server's resident set (VmRSS) before, after the idle phase and at the end.

    .venv/bin/python bench/load.py [--seconds 10] [--rates 50,100,200]

Prints markdown tables for bench/RESULTS.md. Bounded: about (3 × rates + 3) × seconds.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import statistics
import subprocess
import threading
import time
from collections import Counter

import httpx
from _server import percentile, start_server

ROUTES = {
    "chapter page": "/chapters/lora",
    "instrument fragment": "/instruments/configurator?model=llama-3-8b&rank=32&target_modules=all-linear",
    "JSON API": "/api/v1/memory?model=llama-2-7b&method=qlora&rank=16&target_modules=all-linear&seq_len=2048",
}
LONG_RUN = {"steps": 300, "batch_size": 8}


def hey(url: str, rate: float, seconds: int, workers: int = 4, extra: list[str] | None = None) -> list[tuple[float, int]]:
    """(latency ms, status) per request at a fixed total rate."""
    command = ["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", f"{rate / workers:.3f}", "-o", "csv",
               "-H", "HX-Request: true", *(extra or []), url]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [(float(row["response-time"]) * 1000, int(row["status-code"])) for row in csv.DictReader(io.StringIO(output))]


def summary(name: str, rate: float, results: list[tuple[float, int]], seconds: int) -> str:
    latencies = [ms for ms, _ in results]
    ok = sum(1 for _, status in results if status == 200)
    return (f"| {name} | {rate:g} | {len(results) / seconds:.0f} | {statistics.median(latencies):.1f} | "
            f"{percentile(latencies, 0.99):.1f} | {len(results) - ok} |")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rates", default="50,100,200")
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed: apt-get install hey")
    rates = [float(r) for r in args.rates.split(",")]
    process, base = start_server()
    memory = {"start": rss_mib(process.pid)}
    header = "| route | offered (req/s) | served (req/s) | p50 (ms) | p99 (ms) | non-200 |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    try:
        idle = []
        for name, path in ROUTES.items():
            hey(base + path, 20, 2)  # warm-up
            for rate in rates:
                idle.append(summary(name, rate, hey(base + path, rate, args.seconds), args.seconds))
        memory["after idle load"] = rss_mib(process.pid)

        with httpx.Client(base_url=base, timeout=30) as client:
            long_job = client.post("/api/v1/train", json=LONG_RUN).json()
            deadline = time.monotonic() + 120
            while client.get(f"/api/v1/train/{long_job['id']}").json()["steps_done"] < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError("the long run did not start")
                time.sleep(0.5)

            # One route at a time at 100 requests/s, as in the idle phase; a second into each,
            # 50 clients post a training request each, all at once.
            busy: dict[str, list[tuple[float, int]]] = {}
            statuses: Counter = Counter()
            body = json.dumps({"steps": 5, "batch_size": 8})
            for name in ("chapter page", "instrument fragment", "JSON API"):
                thread = threading.Thread(target=lambda n=name: busy.__setitem__(n, hey(base + ROUTES[n], 100, args.seconds)))
                thread.start()
                time.sleep(1)
                posts = subprocess.run(["hey", "-n", "50", "-c", "50", "-m", "POST", "-T", "application/json", "-d", body,
                                        "-o", "csv", base + "/api/v1/train"], check=True, capture_output=True, text=True)
                statuses.update(int(row["status-code"]) for row in csv.DictReader(io.StringIO(posts.stdout)))
                thread.join()
            refused = client.post("/api/v1/train", json={"steps": 5})
            during = client.get(f"/api/v1/train/{long_job['id']}").json()
            client.delete(f"/api/v1/train/{long_job['id']}")
        memory["end"] = rss_mib(process.pid)
    finally:
        process.terminate()

    print(f"Idle: {args.seconds} s per rate, 4 connections.\n")
    print(header)
    print("\n".join(idle))
    print(f"\nWhile training (a {LONG_RUN['steps']}-step run was at step {during['steps_done']} when the "
          f"measurements ended), 100 requests/s each, {args.seconds} s:\n")
    print(header)
    for name, results in busy.items():
        print(summary(name, 100, results, args.seconds))
    print(f"\n3 × 50 clients each posting one training request at once: {dict(sorted(statuses.items()))} "
          f"(202 accepted into the queue, 429 refused); a refusal carries Retry-After: "
          f"{refused.headers.get('retry-after')!r} (status {refused.status_code}).")
    print("\nServer resident memory (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))


if __name__ == "__main__":
    main()
