"""How numbers are shown to a reader: thousands separators, binary bytes (GiB), percentages.

These are presentation only (Jinja filters and live-number rendering); every value they
format was computed by `calculators`.
"""

from __future__ import annotations

import math

GB = 10**9
GIB = 2**30


def format_int(value: float) -> str:
    """16777216 -> '16,777,216'."""
    return f"{int(round(value)):,}"


def format_bytes(n_bytes: float, unit: str | None = None) -> str:
    """Binary units, as GPU memory is sold and torch counts it: 32.0 MiB, 13.1 GiB (decimal GB/MB only when asked)."""
    if unit == "gib":
        return f"{n_bytes / GIB:,.1f} GiB"
    steps = [("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)]
    if unit is not None:
        factor = dict((name.lower(), size) for name, size in steps)[unit]
        return f"{n_bytes / factor:,.1f} {unit.upper() if unit != 'kb' else 'kB'}"
    for name, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n_bytes) >= size:
            return f"{n_bytes / size:,.1f} {name}"
    return f"{int(n_bytes):,} B"


def format_gpu_bytes(n_bytes: float) -> str:
    """GPU memory in binary units, as the cards are sold: 14.5 GiB, 67 MiB, 0."""
    if n_bytes == 0:
        return "0"
    if abs(n_bytes) < GIB:
        return f"{n_bytes / 2**20:,.0f} MiB" if abs(n_bytes) >= 2**20 else f"{n_bytes / 2**10:,.0f} KiB"
    return format_bytes(n_bytes, "gib")


def format_count_short(value: float, scale: str = "auto") -> str:
    """19988480 -> '20.0M'; 6.74e9 -> '6.74B'."""
    if scale == "millions" or (scale == "auto" and abs(value) < 1e9):
        return f"{value / 1e6:,.1f}M"
    return f"{value / 1e9:,.2f}B"


def format_percent(value: float, decimals: int = 2) -> str:
    """0.2966 (already a percentage) -> '0.30%'."""
    return f"{value:.{decimals}f}%"


def format_float(value: float, decimals: int = 3) -> str:
    if math.isfinite(value) and value == int(value) and decimals <= 3:
        return f"{int(value):,}"
    return f"{value:.{decimals}f}"


# unit of a quantity -> default format name
DEFAULT_FORMAT = {
    "count": "int",
    "percent": "pct",
    "bytes": "auto-bytes",
    "bits": "bits",
    "ratio": "float3",
    "float": "float3",
}


def format_value(value: float, unit: str, fmt: str | None = None) -> str:
    """Format a calculator value by its unit, or by an explicit format name."""
    fmt = fmt or DEFAULT_FORMAT.get(unit, "float3")
    if fmt == "int":
        return format_int(value)
    if fmt in ("millions", "billions"):
        return format_count_short(value, fmt)
    if fmt == "short":
        return format_count_short(value)
    if fmt == "pct":
        return format_percent(value, 2)
    if fmt == "pct1":
        return format_percent(value, 1)
    if fmt == "auto-bytes":
        return format_bytes(value)
    if fmt in ("gb", "mb", "kb", "tb", "gib"):
        return format_bytes(value, fmt)
    if fmt == "bits":
        return f"{value:.3f} bits"
    if fmt.startswith("float") and fmt[5:].isdigit():
        return format_float(value, int(fmt[5:]))
    raise ValueError(f"fmt: unknown format {fmt!r}")
