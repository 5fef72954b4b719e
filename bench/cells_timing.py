"""Time from clicking Run to a cell's first output, in real Chromium, on localhost.

    .venv/bin/python bench/cells_timing.py [--trials 3] [--out /tmp/results-cells.md]

Starts `loralab serve` on a free port, opens chapter 3 (`/chapters/rank-and-targets`) and
clicks Run. cells.js stamps each run's first output (stdout, stderr or plot) with
`data-first-output-ms`, measured from the click handler with performance.now().

* cold: the first run on the page, in a new browser profile (empty HTTP cache): the worker
  starts, Pyodide boots, and for the numpy cell numpy loads;
* revisit: the same, with the browser's HTTP (and compiled-wasm) cache warm from a visit;
* warm: later runs on the same page (the interpreter is up).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _server import start_server
from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
SMALL = "print(1 + 1)"


def first_output_ms(page, code: str | None) -> float:
    if code is not None:
        page.evaluate("(code) => window.loralabCells.setCode(1, code)", code)
    page.click(".cell[data-cell='1'] .cell-run")
    page.wait_for_selector(".cell[data-cell='1'][data-state]:not([data-state='running'])", timeout=120_000)
    state = page.get_attribute(".cell[data-cell='1']", "data-state")
    if state != "done":
        raise RuntimeError(f"cell ended {state}: " + page.inner_text(".cell[data-cell='1'] .cell-output"))
    return float(page.get_attribute(".cell[data-cell='1']", "data-first-output-ms"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--warm-runs", type=int, default=10)
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    args = parser.parse_args()
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    process, base = start_server()
    url = f"{base}/chapters/rank-and-targets"
    results: dict[str, list[float]] = {k: [] for k in ("cold small", "cold numpy", "revisit small", "revisit numpy", "warm small", "warm numpy")}
    boots: list[int] = []
    try:
        with sync_playwright() as playwright:
            for trial in range(args.trials):
                for kind, code in (("small", SMALL), ("numpy", None)):
                    profile = tempfile.mkdtemp(prefix="loralab-bench-")
                    context = playwright.chromium.launch_persistent_context(profile, executable_path=chromium, args=FLAGS, headless=True)
                    try:
                        for visit in ("cold", "revisit"):
                            page = context.new_page()
                            page.goto(url)
                            page.wait_for_selector(".cell[data-cell='1'].cell-live")
                            results[f"{visit} {kind}"].append(first_output_ms(page, code))
                            if visit == "cold":
                                boots.append(page.evaluate("window.loralabCells.bootMs"))
                                if trial == 0:
                                    results[f"warm {kind}"] += [first_output_ms(page, code) for _ in range(args.warm_runs)]
                            page.close()
                    finally:
                        context.close()
                        shutil.rmtree(profile, ignore_errors=True)
            version = playwright.chromium.launch(executable_path=chromium, args=FLAGS).version
    finally:
        process.terminate()
        process.wait(timeout=10)

    lines = [
        "## Python cells: Run click to first output (Chromium, localhost)",
        "",
        f"{dt.date.today().isoformat()} · Chromium {version} headless · {platform.machine()}, {os.cpu_count()} cores · "
        f"Pyodide 0.27.7 · `{' '.join(['.venv/bin/python', 'bench/cells_timing.py', '--trials', str(args.trials)])}`",
        "",
        "Small cell: `print(1 + 1)`. numpy cell: chapter 3's SVD cell (imports numpy and `calculators.lowrank`, "
        "128×128 SVD, prints, plots). Cold = first run on the page with an empty browser cache; revisit = first run "
        "on a new page with the browser cache warm; warm = later runs (interpreter up). Median (min–max).",
        "",
        "| case | median ms | min–max ms | n | target |",
        "|---|---:|---:|---:|---|",
    ]
    targets = {"cold small": "< 4000", "warm small": "< 100"}
    for case, values in results.items():
        if values:
            lines.append(f"| {case} | {statistics.median(values):.0f} | {min(values):.0f}–{max(values):.0f} | {len(values)} | {targets.get(case, '')} |")
    lines += ["", f"Interpreter boot inside the worker (loadPyodide + our files, numpy excluded): median {statistics.median(boots):.0f} ms."]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
