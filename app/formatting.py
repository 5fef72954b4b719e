"""How numbers are shown to a reader: thousands separators, binary bytes (GiB, MiB), percentages.

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


BINARY_STEPS = (("TiB", 2**40), ("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10))
DECIMAL_STEPS = (("TB", 10**12), ("GB", GB), ("MB", 10**6), ("kB", 10**3))


def format_bytes(n_bytes: float, unit: str | None = None) -> str:
    """Binary units, the book's one convention (chapter 1): 32.0 MiB, 12.6 GiB.

    `unit` forces one unit: binary ("gib", "mib", "kib", "tib") or, where a vendor's decimal
    figure is quoted as such, decimal ("gb", "mb", "kb", "tb").
    """
    if unit is not None:
        factors = {name.lower(): (name, size) for name, size in BINARY_STEPS + DECIMAL_STEPS}
        name, size = factors[unit]
        return f"{n_bytes / size:,.1f} {name}"
    for name, size in BINARY_STEPS:
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
    if fmt in ("gib", "mib", "kib", "tib", "gb", "mb", "kb", "tb"):
        return format_bytes(value, fmt)
    if fmt == "bits":
        return f"{value:.3f} bits"
    if fmt.startswith("float") and fmt[5:].isdigit():
        return format_float(value, int(fmt[5:]))
    raise ValueError(f"fmt: unknown format {fmt!r}")
