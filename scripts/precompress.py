"""Write a gzip sibling (`x.js.gz`) next to each compressible file in static/vendor/.

The server sends the sibling to browsers that accept gzip (app/static_files.py), so the
large pinned libraries (Plotly 1.1 MB, Pyodide's 10 MB wasm) are compressed once at set-up
instead of on every request. Stdlib only; idempotent (skips siblings newer than their file).

    python scripts/precompress.py [static/vendor]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPRESSIBLE = {".js", ".mjs", ".css", ".json", ".wasm", ".svg", ".map", ".html", ".txt", ".ttf"}
MIN_BYTES = 1024
MIN_SAVING = 0.10  # keep a sibling only if it is at least 10 % smaller


def precompress(folder: Path) -> tuple[int, int, int]:
    """Returns (files compressed, bytes before, bytes after)."""
    count = before = after = 0
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in COMPRESSIBLE or path.stat().st_size < MIN_BYTES:
            continue
        sibling = path.with_name(path.name + ".gz")
        if sibling.exists() and sibling.stat().st_mtime >= path.stat().st_mtime:
            count, before, after = count + 1, before + path.stat().st_size, after + sibling.stat().st_size
            continue
        data = path.read_bytes()
        packed = gzip.compress(data, compresslevel=9, mtime=0)
        if len(packed) > (1 - MIN_SAVING) * len(data):
            sibling.unlink(missing_ok=True)
            continue
        sibling.write_bytes(packed)
        count, before, after = count + 1, before + len(data), after + len(packed)
    return count, before, after


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "static" / "vendor"
    n, raw, packed = precompress(target)
    print(f"precompress: {n} files, {raw / 1e6:.1f} MB -> {packed / 1e6:.1f} MB gzip in {target}")
