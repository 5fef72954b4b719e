"""The arithmetic behind figures the usual tutorials quote, so the book can show where each goes wrong.

Each function reproduces a shortcut as commonly applied (a nominal parameter count, a per-parameter
byte count, an initialisation scale) so that the appendix "Numbers the usual tutorials get wrong"
computes the usual figure and the correct one side by side instead of typing either by hand.
Pure Python (runs under Pyodide).
"""

from __future__ import annotations

import math

from calculators.nf4 import nf4_levels

__all__ = ["nominal_bytes", "normal_init_std", "kaiming_uniform_std", "symmetric_quantile_levels"]


def nominal_bytes(params: float, bytes_per_param: float) -> float:
    """A nominal parameter count (e.g. 7 × 10⁹ for "a 7B model") times bytes per parameter."""
    if params <= 0 or bytes_per_param <= 0:
        raise ValueError(f"params, bytes_per_param: must be positive, got {params!r}, {bytes_per_param!r}")
    return params * bytes_per_param


def normal_init_std(gain: float, fan: int) -> float:
    """Standard deviation of randn(...) · √(gain / fan), the 'Kaiming' scale some tutorials write for A."""
    if gain <= 0 or fan < 1:
        raise ValueError(f"gain, fan: must be positive, got {gain!r}, {fan!r}")
    return math.sqrt(gain / fan)


def kaiming_uniform_std(fan_in: int) -> float:
    """Standard deviation of peft's lora_A: kaiming_uniform_(a=√5) is U(−1/√fan_in, 1/√fan_in), std 1/√(3·fan_in)."""
    if fan_in < 1:
        raise ValueError(f"fan_in: must be a positive integer, got {fan_in!r}")
    return 1.0 / math.sqrt(3 * fan_in)


def _normal_ppf(p: float) -> float:
    """Inverse standard-normal CDF by bisection on math.erf (no scipy under Pyodide)."""
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def symmetric_quantile_levels(delta: float = 0.03) -> list[float]:
    """Sixteen levels Φ⁻¹(δ + i/15·(1 − 2δ)), i = 0..15, normalised to [−1, 1]: the symmetric formula
    often given for NF4. It has no level at zero, unlike the real NF4 (bitsandbytes' 8 + 7 + zero)."""
    if not 0 < delta < 0.5:
        raise ValueError(f"delta: must be in (0, 0.5), got {delta!r}")
    raw = [_normal_ppf(delta + i / 15 * (1 - 2 * delta)) for i in range(16)]
    top = max(abs(v) for v in raw)
    return [v / top for v in raw]


def smallest_level_magnitude(symmetric: bool) -> float:
    """|level| closest to zero: the symmetric formula's, or real NF4's (exactly 0)."""
    levels = symmetric_quantile_levels() if symmetric else nf4_levels()
    return min(abs(v) for v in levels)
