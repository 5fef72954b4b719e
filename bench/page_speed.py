"""Time to first byte and bytes transferred for the book's pages, on localhost.

Starts the real server (`loralab serve`), then:
  * TTFB: N sequential GETs per page with httpx, time until the response headers arrive;
  * weight: one cold load per page in headless Chromium, summing every response's
    encoded (on-the-wire) size from the DevTools protocol.

    .venv/bin/python bench/page_speed.py [--runs 50] [--pages /chapters/lora ...]
Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

import httpx
from _server import percentile, start_server

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def ttfb_ms(client: httpx.Client, url: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with client.stream("GET", url) as response:
            times.append((time.perf_counter() - start) * 1000)  # headers received
            response.read()
    return times


def page_weight(base: str, paths: list[str]) -> dict[str, tuple[int, int, float]]:
    """path -> (requests, encoded bytes, load time ms) for a cold load in Chromium."""
    from playwright.sync_api import sync_playwright

    results = {}
    with sync_playwright() as playwright:
        for path in paths:
            context = playwright.chromium.launch_persistent_context(
                tempfile.mkdtemp(), executable_path=shutil.which("chromium"), args=FLAGS, headless=True)
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            sizes: dict[str, int] = {}
            cdp.on("Network.loadingFinished", lambda e: sizes.__setitem__(e["requestId"], e["encodedDataLength"]))
            start = time.perf_counter()
            page.goto(base + path, wait_until="networkidle")
            elapsed = (time.perf_counter() - start) * 1000
            results[path] = (len(sizes), sum(sizes.values()), elapsed)
            context.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--pages", nargs="*", default=["/", "/chapters/lora", "/chapters/qlora", "/chapters/memory"])
    args = parser.parse_args()
    process, base = start_server()
    try:
        with httpx.Client() as client:
            for path in args.pages:  # warm up: first render, caches
                client.get(base + path)
            timings = {path: ttfb_ms(client, base + path, args.runs) for path in args.pages}
        weights = page_weight(base, args.pages)
    finally:
        process.terminate()
    print(f"| page | TTFB p50 (ms) | TTFB p99 (ms) | requests (cold) | transferred (cold) | load (ms) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for path in args.pages:
        t = timings[path]
        p99 = percentile(t, 0.99)
        n, size, load = weights[path]
        print(f"| `{path}` | {statistics.median(t):.1f} | {p99:.1f} | {n} | {size / 1000:,.1f} kB | {load:.0f} |")


if __name__ == "__main__":
    main()
