"""NF4 (4-bit NormalFloat), blockwise absmax quantization and double quantization.

QLoRA (Dettmers et al. 2023, §3) stores a frozen base weight as 4-bit codes into a code
book whose 16 levels are quantiles of N(0, 1), one fp32 absmax per block of 64 weights,
and (Double Quantization) those absmax constants again in 8 bits per block of 256.
Everything here reproduces bitsandbytes' float32 arithmetic, so codes and bytes can be
compared bit for bit with `bitsandbytes.functional.quantize_4bit`.
Pure numpy + stdlib (runs under Pyodide).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

__all__ = [
    "NF4_OFFSET",
    "level_gap",
    "expected_absmax",
    "NF4_LEVELS",
    "FP4_LEVELS",
    "INT4_LEVELS",
    "METHODS",
    "DISTRIBUTIONS",
    "normal_ppf",
    "normal_cdf",
    "normal_pdf",
    "nf4_levels",
    "fp4_levels",
    "int4_levels",
    "codebook",
    "NF4Bins",
    "nf4_bins",
    "PdfSeries",
    "normal_pdf_series",
    "Quantized4Bit",
    "NF4Quantized",
    "quantize",
    "quantize_nf4",
    "quantize_fp4",
    "quantize_int4",
    "dequantize",
    "dequantize_nf4",
    "pack_codes",
    "unpack_codes",
    "dynamic_map",
    "DoubleQuantized",
    "double_quantize",
    "double_dequantize",
    "bits_per_param",
    "NF4Footprint",
    "nf4_model_bytes",
    "ErrorStats",
    "quantization_error",
    "sample_weights",
]

Method = Literal["nf4", "fp4", "int4"]
METHODS: tuple[str, ...] = ("nf4", "fp4", "int4")
DISTRIBUTIONS: tuple[str, ...] = ("normal", "heavy-tailed", "outliers")

# The probability of the outermost NF4 level, as in bitsandbytes' create_normal_map(offset=0.9677083):
# the average of the two choices 1 - 1/(2·15) and 1 - 1/(2·16) the QLoRA code discusses.
NF4_OFFSET = 0.9677083

# ---------------------------------------------------------------------------- the normal law


def normal_cdf(z: float) -> float:
    """Φ(z) = ½·erfc(−z/√2), accurate in both tails."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def normal_pdf(z: float) -> float:
    """φ(z) = exp(−z²/2)/√(2π)."""
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


# Acklam's rational approximation of Φ⁻¹ (relative error < 1.15e-9), refined by Halley steps.
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01, -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def _ppf_lower(p: float) -> float:
    """Φ⁻¹(p) for 0 < p ≤ ½ (Acklam 2003 + two Halley steps on ½·erfc, ~1e-16 relative)."""
    if p < 0.02425:
        q = math.sqrt(-2.0 * math.log(p))
        x = (((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C[5]) / (
            (((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1.0
        )
    else:
        q = p - 0.5
        r = q * q
        x = (((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]) * q / (
            ((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1.0
        )
    for _ in range(2):  # Halley: cubic convergence, so two steps reach double precision
        e = normal_cdf(x) - p
        u = e * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
        x = x - u / (1.0 + 0.5 * x * u)
    return x


def normal_ppf(p: float) -> float:
    """The standard normal quantile Φ⁻¹(p), p in (0, 1); by symmetry from the lower tail (1 − p is exact for p ≥ ½)."""
    if not 0.0 < p < 1.0 or math.isnan(p):
        raise ValueError(f"p: must lie strictly between 0 and 1, got {p!r}")
    if p == 0.5:
        return 0.0
    if p > 0.5:
        return -_ppf_lower(1.0 - p)
    return _ppf_lower(p)


# ---------------------------------------------------------------------------- code books


def _linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace(start, end, steps) in float32, element for element (bnb builds its maps with it).

    torch rounds step = (end − start)/(steps − 1) to fp32, then forms start + step·i for the first half and
    end − step·(steps − 1 − i) for the second with a single rounding (fused multiply-add); checked equal to
    torch 2.13's CPU kernel for every steps ≤ 65 we use. numpy's float64 linspace differs by 1 ulp.
    """
    start64, end64 = float(np.float32(start)), float(np.float32(end))
    step = float(np.float32((end64 - start64) / (steps - 1)))
    halfway = steps // 2
    values = [start64 + step * i if i < halfway else end64 - step * (steps - 1 - i) for i in range(steps)]
    return np.asarray(values, dtype=np.float32)


@lru_cache(maxsize=None)
def nf4_levels() -> tuple[float, ...]:
    """The 16 NF4 levels, built as bnb's create_normal_map(offset=0.9677083, use_extra_value=True) (QLoRA, Dettmers et al. 2023, §3).

    8 positive quantiles Φ⁻¹(linspace(offset, ½, 9)[:-1]), 7 negative −Φ⁻¹(linspace(offset, ½, 8)[:-1]) and an exact 0,
    sorted and divided by the largest, all in float32 like bnb: asymmetric so that 0 is representable.
    """
    positive = [normal_ppf(float(p)) for p in _linspace_f32(NF4_OFFSET, 0.5, 9)[:-1]]
    negative = [-normal_ppf(float(p)) for p in _linspace_f32(NF4_OFFSET, 0.5, 8)[:-1]]
    values = np.sort(np.asarray(positive + [0.0] + negative, dtype=np.float32))
    values = values / values.max()  # fp32 division, as torch's `values /= values.max()`
    return tuple(float(v) for v in values)


@lru_cache(maxsize=None)
def fp4_levels() -> tuple[float, ...]:
    """bnb's FP4 (e2m1, exponent bias 2, no inf/nan) code book in bit-pattern order, divided by its max 12.

    Codes 0-7 are +{0, 0.0625, 8, 12, 4, 6, 2, 3}, codes 8-15 the same negated (8 is −0).
    """
    raw = [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0]
    values = np.asarray(raw + [-v for v in raw], dtype=np.float32)
    values = values / np.float32(12.0)
    return tuple(float(v) for v in values)


@lru_cache(maxsize=None)
def int4_levels() -> tuple[float, ...]:
    """Symmetric uniform INT4: the 15 levels k/7, k = −7..7 (one of 16 codes unused).

    Chosen over the asymmetric −8..7 so that ±absmax and 0 are both exact, like NF4's ends and zero.
    """
    return tuple(float(np.float32(k) / np.float32(7)) for k in range(-7, 8))


NF4_LEVELS: tuple[float, ...] = nf4_levels()
FP4_LEVELS: tuple[float, ...] = fp4_levels()
INT4_LEVELS: tuple[float, ...] = int4_levels()


def codebook(method: str) -> tuple[float, ...]:
    """The code book (code -> normalized value) of a 4-bit method: 'nf4', 'fp4' or 'int4'."""
    if method == "nf4":
        return NF4_LEVELS
    if method == "fp4":
        return FP4_LEVELS
    if method == "int4":
        return INT4_LEVELS
    raise ValueError(f"method: must be one of {METHODS}, got {method!r}")


@dataclass(frozen=True)
class NF4Bins:
    """What each NF4 level stands for: its quantile, its equal-probability bin and its rounding bin."""

    levels: list[float]  # the 16 normalized levels
    level_probabilities: list[float]  # Φ at each level's z (the quantile it was built from)
    z_max: float  # Φ⁻¹(offset): the z that maps to ±1
    bin_edges: list[float]  # 17 normalized equal-probability edges (±1 at the ends)
    bin_probabilities: list[float]  # N(0,1) mass of each level's equal-probability bin (tails included)
    decision_thresholds: list[float]  # 15 fp32 midpoints: a normalized value goes to the nearest level

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def nf4_bins() -> NF4Bins:
    """The probability grid behind NF4 (QLoRA §3): the positive side spaces 8 levels by (offset − ½)/8 in probability,
    the negative side 7 by (offset − ½)/7; a bin's edges are the quantiles half-way between neighbouring grid points.
    """
    z_max = normal_ppf(float(np.float32(NF4_OFFSET)))
    # probabilities of the levels, ascending: 7 negative, 0.5, 8 positive (the fp32 grid the levels were built on)
    p_neg = [1.0 - float(p) for p in _linspace_f32(NF4_OFFSET, 0.5, 8)[:-1]]
    p_pos = [float(p) for p in _linspace_f32(NF4_OFFSET, 0.5, 9)[:-1][::-1]]
    probabilities = p_neg + [0.5] + p_pos
    inner = [normal_ppf(0.5 * (a + b)) / z_max for a, b in zip(probabilities[:-1], probabilities[1:])]
    edges = [-1.0] + inner + [1.0]
    z_edges = [-math.inf] + [e * z_max for e in inner] + [math.inf]
    masses = [normal_cdf(b) - normal_cdf(a) for a, b in zip(z_edges[:-1], z_edges[1:])]
    levels = np.asarray(NF4_LEVELS, dtype=np.float32)
    thresholds = (levels[:-1] + levels[1:]) / np.float32(2)
    return NF4Bins(
        levels=list(NF4_LEVELS),
        level_probabilities=probabilities,
        z_max=z_max,
        bin_edges=edges,
        bin_probabilities=masses,
        decision_thresholds=[float(t) for t in thresholds],
    )


@dataclass(frozen=True)
class PdfSeries:
    """A plotted density: z values and φ(z)."""

    z: list[float]
    pdf: list[float]

    def to_dict(self) -> dict:
        return {"z": self.z, "pdf": self.pdf}


def normal_pdf_series(z_max: float = 4.0, n_points: int = 201) -> PdfSeries:
    """φ(z) on an even grid over [−z_max, z_max], for drawing the law NF4's levels are quantiles of."""
    if not z_max > 0:
        raise ValueError(f"z_max: must be positive, got {z_max!r}")
    if n_points < 2:
        raise ValueError(f"n_points: must be at least 2, got {n_points!r}")
    z = np.linspace(-z_max, z_max, n_points)
    return PdfSeries(z=[float(v) for v in z], pdf=[normal_pdf(float(v)) for v in z])


# ---------------------------------------------------------------------------- blockwise 4-bit


@dataclass(frozen=True, eq=False)
class Quantized4Bit:
    """A tensor in blockwise absmax 4-bit storage: value ≈ codebook[code] · absmax[block] (QLoRA §3).

    codes: uint8 (n,), one 0..15 code per element in row-major order; absmax: float32 (n_blocks,).
    """

    codes: np.ndarray
    absmax: np.ndarray
    shape: tuple[int, ...]
    blocksize: int
    method: str = "nf4"

    @property
    def n_blocks(self) -> int:
        return int(self.absmax.size)

    def packed(self) -> np.ndarray:
        """Two codes per byte, the earlier element in the high nibble (bnb's layout); an odd tail is padded with the code of 0."""
        return pack_codes(self.codes, pad_code=_zero_code(self.method))

    def to_dict(self) -> dict:
        return {
            "codes": [int(c) for c in self.codes],
            "absmax": [float(a) for a in self.absmax],
            "shape": list(self.shape),
            "blocksize": self.blocksize,
            "method": self.method,
        }


NF4Quantized = Quantized4Bit  # the NF4 case of the same storage


@lru_cache(maxsize=None)
def _encoder(method: str) -> tuple[np.ndarray, np.ndarray]:
    """(fp32 midpoints between the sorted levels, sorted position -> code), as bnb's _get_4bit_quantize_bounds."""
    levels = np.asarray(codebook(method), dtype=np.float32)
    order = np.argsort(levels, kind="stable")
    ordered = levels[order]
    bounds = (ordered[:-1] + ordered[1:]) / np.float32(2)
    return bounds, order.astype(np.uint8)


def _encode(normalized: np.ndarray, method: str) -> np.ndarray:
    """Nearest level of each normalized fp32 value; a value exactly on a midpoint goes to the lower level (torch.bucketize)."""
    bounds, order = _encoder(method)
    return order[np.searchsorted(bounds, normalized, side="left")]


@lru_cache(maxsize=None)
def _zero_code(method: str) -> int:
    return int(_encode(np.zeros(1, dtype=np.float32), method)[0])


def _check_blocksize(blocksize: int, name: str = "blocksize") -> None:
    if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)) or blocksize < 1:
        raise ValueError(f"{name}: must be a positive integer, got {blocksize!r}")


def quantize(x: np.ndarray, method: str = "nf4", blocksize: int = 64) -> Quantized4Bit:
    """Blockwise absmax 4-bit quantization: code = nearest level to x/absmax(block) (QLoRA §3, Eq. 1-2).

    Matches bnb's float32 arithmetic: a full block is scaled by x·(1/absmax), the final partial block by
    x/absmax, clamped to [−1, 1]; an all-zero block stores absmax 0 (1e-38 when it is the partial block, like bnb).
    """
    codebook(method)
    _check_blocksize(blocksize)
    array = np.asarray(x)
    if array.size == 0:
        raise ValueError("x: must not be empty")
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"x: must be numeric, got dtype {array.dtype}")
    flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(flat)):
        raise ValueError("x: must be finite (no nan or inf)")
    n = flat.size
    n_full = n // blocksize
    full = flat[: n_full * blocksize].reshape(n_full, blocksize)  # (n_full, blocksize)
    absmax_full = np.abs(full).max(axis=1) if n_full else np.zeros(0, dtype=np.float32)  # (n_full,)
    tiny = np.float32(1e-38)
    reciprocal = np.float32(1.0) / np.maximum(absmax_full, tiny)  # (n_full,)
    scaled = np.clip(full * reciprocal[:, None], -1, 1).reshape(-1)  # (n_full · blocksize,)
    absmax = absmax_full
    if n % blocksize:
        tail = flat[n_full * blocksize :]
        absmax_tail = np.maximum(np.abs(tail).max(), tiny)  # bnb clamps before storing here
        scaled = np.concatenate([scaled, np.clip(tail / absmax_tail, -1, 1)])
        absmax = np.concatenate([absmax_full, np.asarray([absmax_tail], dtype=np.float32)])
    codes = _encode(scaled.astype(np.float32, copy=False), method)
    return Quantized4Bit(
        codes=codes, absmax=absmax.astype(np.float32), shape=tuple(array.shape), blocksize=int(blocksize), method=method
    )


def quantize_nf4(x: np.ndarray, blocksize: int = 64) -> Quantized4Bit:
    """NF4 blockwise quantization (QLoRA, Dettmers et al. 2023, §3); see `quantize`."""
    return quantize(x, "nf4", blocksize)


def quantize_fp4(x: np.ndarray, blocksize: int = 64) -> Quantized4Bit:
    """FP4 (bnb's e2m1 code book) blockwise quantization, the comparator QLoRA §3 beats with NF4."""
    return quantize(x, "fp4", blocksize)


def quantize_int4(x: np.ndarray, blocksize: int = 64) -> Quantized4Bit:
    """Uniform symmetric INT4 (levels k/7) blockwise absmax quantization, the naive comparator."""
    return quantize(x, "int4", blocksize)


def dequantize(q: Quantized4Bit) -> np.ndarray:
    """x̂ = codebook[code] · absmax[block] in float32 (bnb's dequantize_4bit arithmetic), in the original shape."""
    levels = np.asarray(codebook(q.method), dtype=np.float32)
    n = int(q.codes.size)
    block_of = np.arange(n) // q.blocksize  # (n,)
    values = levels[q.codes.astype(np.int64)] * q.absmax.astype(np.float32)[block_of]  # (n,)
    return values.reshape(q.shape)


def dequantize_nf4(q: Quantized4Bit) -> np.ndarray:
    """Undo `quantize_nf4` (float32)."""
    return dequantize(q)


def pack_codes(codes: np.ndarray, pad_code: int = 7) -> np.ndarray:
    """Pack 4-bit codes two per byte, the earlier element in the high nibble (bnb: (q[::2] << 4) | q[1::2])."""
    c = np.asarray(codes, dtype=np.uint8).reshape(-1)
    if c.size and c.max() > 15:
        raise ValueError("codes: every code must be in 0..15")
    if not 0 <= pad_code <= 15:
        raise ValueError(f"pad_code: must be in 0..15, got {pad_code!r}")
    if c.size % 2:
        c = np.concatenate([c, np.asarray([pad_code], dtype=np.uint8)])
    return ((c[0::2] << 4) | c[1::2]).astype(np.uint8)


def unpack_codes(packed: np.ndarray, n: int) -> np.ndarray:
    """The first n codes of a packed byte array (high nibble first)."""
    p = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if not 0 <= n <= 2 * p.size:
        raise ValueError(f"n: must be between 0 and {2 * p.size}, got {n!r}")
    codes = np.empty(2 * p.size, dtype=np.uint8)
    codes[0::2] = p >> 4
    codes[1::2] = p & 0x0F
    return codes[:n]


# ---------------------------------------------------------------------------- double quantization


@lru_cache(maxsize=None)
def _dynamic_map_tuple(signed: bool, max_exponent_bits: int, total_bits: int) -> tuple[float, ...]:
    data: list[float] = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    i = 0
    for i in range(max_exponent_bits):
        n_items = 2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1
        boundaries = _linspace_f32(0.1, 1.0, n_items)
        means = (boundaries[:-1] + boundaries[1:]) / np.float32(2)
        scale = np.float32(10.0 ** (-(max_exponent_bits - 1) + i))
        data += [float(v) for v in scale * means]
        if signed:
            data += [float(v) for v in -scale * means]
    if additional_items > 0:
        boundaries = _linspace_f32(0.1, 1.0, additional_items + 1)
        means = (boundaries[:-1] + boundaries[1:]) / np.float32(2)
        scale = np.float32(10.0 ** (-(max_exponent_bits - 1) + i))
        data += [float(v) for v in scale * means]
        if signed:
            data += [float(v) for v in -scale * means]
    data += [0.0, 1.0]
    data += [0.0] * (2**total_bits - len(data))
    return tuple(sorted(data))


def dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> np.ndarray:
    """bnb's 8-bit dynamic tree map (Dettmers 2015, arXiv:1511.04561): a decimal exponent then a linear fraction.

    The code book QLoRA §3 uses to store the absmax constants in 8 bits; sorted, float32, 2**total_bits entries.
    """
    if not 1 <= max_exponent_bits < total_bits:
        raise ValueError(f"max_exponent_bits: must be between 1 and total_bits − 1, got {max_exponent_bits!r}")
    return np.asarray(_dynamic_map_tuple(bool(signed), int(max_exponent_bits), int(total_bits)), dtype=np.float32)


@dataclass(frozen=True, eq=False)
class DoubleQuantized:
    """Absmax constants in 8 bits (QLoRA §3 "Double Quantization"): absmax ≈ codebook[codes] · scales[block] + offset."""

    codes: np.ndarray  # uint8 (n_absmax,)
    codebook: np.ndarray  # float32 (256,), the dynamic map
    scales: np.ndarray  # float32 (ceil(n_absmax / blocksize),): absmax of (absmax − offset) per block
    offset: float  # the float32 mean subtracted first (so the 8-bit signed map is used symmetrically)
    blocksize: int

    def to_dict(self) -> dict:
        return {
            "codes": [int(c) for c in self.codes],
            "codebook": [float(c) for c in self.codebook],
            "scales": [float(s) for s in self.scales],
            "offset": self.offset,
            "blocksize": self.blocksize,
        }


def _nearest_sorted(normalized: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest sorted level; an exact tie goes to the lower one."""
    bounds = (levels[:-1] + levels[1:]) / np.float32(2)
    return np.searchsorted(bounds, normalized, side="left").astype(np.uint8)


_LUT_SIZE = 65536


@lru_cache(maxsize=4)
def _bnb_cpu_lut(levels_key: tuple[float, ...]) -> np.ndarray:
    """bnb ≥ 0.49's CPU 8-bit quantizer looks codes up in a 65536-entry table over [−1, 1], not by exact search."""
    levels = np.asarray(levels_key, dtype=np.float32)
    midpoints = np.float32(0.5) * (levels[:-1] + levels[1:])
    grid = np.float32(-1.0) + (np.float32(2.0) * np.arange(_LUT_SIZE, dtype=np.float32)) / np.float32(_LUT_SIZE - 1)
    return np.searchsorted(midpoints, grid, side="left").astype(np.uint8)  # count of midpoints < value


def double_quantize(
    absmax: np.ndarray,
    blocksize: int = 256,
    offset: float | None = None,
    rounding: Literal["nearest", "bnb-cpu"] = "nearest",
) -> DoubleQuantized:
    """Quantize fp32 absmax constants to 8 bits: subtract their mean, then blockwise absmax with the dynamic map (QLoRA §3).

    rounding='nearest' picks the nearest map entry (ties down); 'bnb-cpu' reproduces bnb ≥ 0.49's CPU lookup table, which
    samples [−1, 1] at 2/65535 and so may pick the neighbouring entry within ~1.5e-5 of a midpoint or among the map's
    finest steps near 0. `offset` defaults to the mean (accumulated in float64, rounded to float32).
    """
    _check_blocksize(blocksize)
    values = np.ascontiguousarray(absmax, dtype=np.float32).reshape(-1)
    if values.size == 0:
        raise ValueError("absmax: must not be empty")
    if not np.all(np.isfinite(values)):
        raise ValueError("absmax: must be finite")
    if rounding not in ("nearest", "bnb-cpu"):
        raise ValueError(f"rounding: must be 'nearest' or 'bnb-cpu', got {rounding!r}")
    mean = np.float32(values.astype(np.float64).mean()) if offset is None else np.float32(offset)
    centred = values - mean  # (n,) fp32
    levels = dynamic_map()
    n = centred.size
    n_blocks = -(-n // blocksize)
    padded = np.zeros(n_blocks * blocksize, dtype=np.float32)
    padded[:n] = centred
    blocks = padded.reshape(n_blocks, blocksize)  # (n_blocks, blocksize); zero padding cannot raise an absmax
    scales = np.abs(blocks).max(axis=1).astype(np.float32)  # (n_blocks,)
    if rounding == "nearest":
        safe = np.where(scales == 0, np.float32(1), scales)
        normalized = (blocks / safe[:, None]).reshape(-1)[:n]
        codes = _nearest_sorted(normalized, levels)
    else:
        inverse = np.where(scales == 0, np.float32(0), np.float32(1) / np.where(scales == 0, np.float32(1), scales))
        normalized = np.clip((blocks * inverse[:, None]).reshape(-1)[:n], -1, 1).astype(np.float32)
        # ((v + 1) · 0.5) · 65535 + 0.5, truncated, each step in fp32, as bnb's norm_to_lut_index
        index = ((normalized + np.float32(1)) * np.float32(0.5)) * np.float32(_LUT_SIZE - 1) + np.float32(0.5)
        codes = _bnb_cpu_lut(tuple(float(v) for v in levels))[index.astype(np.int64)]
        codes = np.where(np.repeat(scales == 0, blocksize)[:n], np.uint8(0), codes).astype(np.uint8)  # bnb writes 0
    return DoubleQuantized(codes=codes, codebook=levels, scales=scales, offset=float(mean), blocksize=int(blocksize))


def double_dequantize(dq: DoubleQuantized) -> np.ndarray:
    """absmax = codebook[code] · scale[block] + offset, in float32 (bnb's dequantize_blockwise then += offset)."""
    block_of = np.arange(dq.codes.size) // dq.blocksize
    values = dq.codebook[dq.codes.astype(np.int64)] * dq.scales[block_of]
    return (values + np.float32(dq.offset)).astype(np.float32)


def level_gap(index: int) -> float:
    """Distance between NF4 levels `index` and `index + 1`, in units of the block's absmax."""
    levels = nf4_levels()
    if not 0 <= index < len(levels) - 1:
        raise ValueError(f"index: must be 0..{len(levels) - 2}, got {index}")
    return levels[index + 1] - levels[index]


def expected_absmax(blocksize: int, steps: int = 4000, z_max: float = 10.0) -> float:
    """E[max |Z_i|] over a block of `blocksize` standard-normal weights, in σ: the scale a block's
    codes are multiplied by. E[M] = ∫₀^∞ P(M > x) dx = ∫₀^∞ 1 − (2Φ(x) − 1)ⁿ dx (Simpson's rule)."""
    _check_blocksize(blocksize)
    width = z_max / steps

    def tail(x: float) -> float:
        return 1.0 - (2.0 * normal_cdf(x) - 1.0) ** blocksize

    total = tail(0.0) + tail(z_max)
    total += sum((4 if k % 2 else 2) * tail(k * width) for k in range(1, steps))
    return total * width / 3


# ---------------------------------------------------------------------------- storage cost


def bits_per_param(blocksize: int = 64, double_quant: bool = False, dq_blocksize: int = 256) -> float:
    """Bits per parameter spent on quantization constants (QLoRA §3): 32/blocksize, or 8/blocksize + 32/(blocksize·dq_blocksize) doubly quantized.

    64 → 0.5 bits; double-quantized with 256 → 0.126953125 bits. The 4 code bits come on top.
    """
    _check_blocksize(blocksize)
    _check_blocksize(dq_blocksize, "dq_blocksize")
    if double_quant:
        return 8 / blocksize + 32 / (blocksize * dq_blocksize)
    return 32 / blocksize


@dataclass(frozen=True)
class NF4Footprint:
    """Exact storage of an n-parameter tensor (or model) in NF4."""

    n_params: int
    code_bytes: int  # ceil(n/2): two 4-bit codes per byte
    constant_bytes: int  # absmax (fp32) or its 8-bit codes + fp32 scales + one fp32 offset
    n_bytes: int
    bits_per_param: float  # n_bytes·8 / n_params, everything included

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def nf4_model_bytes(n_params: int, blocksize: int = 64, double_quant: bool = True, dq_blocksize: int = 256) -> NF4Footprint:
    """Bytes to store n params in NF4: ⌈n/2⌉ code bytes + 4 per block, or 1 per block + 4 per 256 blocks + 4 (the offset) doubly quantized.

    Treats the n params as one flat tensor (per-tensor rounding of partial blocks is ignored).
    """
    if isinstance(n_params, bool) or not isinstance(n_params, (int, np.integer)) or n_params < 1:
        raise ValueError(f"n_params: must be a positive integer, got {n_params!r}")
    _check_blocksize(blocksize)
    _check_blocksize(dq_blocksize, "dq_blocksize")
    n_params = int(n_params)
    code_bytes = -(-n_params // 2)
    n_blocks = -(-n_params // blocksize)
    if double_quant:
        constant_bytes = n_blocks + 4 * -(-n_blocks // dq_blocksize) + 4
    else:
        constant_bytes = 4 * n_blocks
    n_bytes = code_bytes + constant_bytes
    return NF4Footprint(n_params, code_bytes, constant_bytes, n_bytes, 8 * n_bytes / n_params)


# ---------------------------------------------------------------------------- error and samples


@dataclass(frozen=True)
class ErrorStats:
    """Quantization error x̂ − x of one method on one sample, with a histogram for the chart."""

    method: str
    mse: float
    max_abs_error: float
    mean_abs_error: float
    bin_edges: list[float]  # n_bins + 1 edges of the signed error
    counts: list[int]  # n_bins counts

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def quantization_error(x: np.ndarray, method: str = "nf4", blocksize: int = 64, n_bins: int = 40) -> ErrorStats:
    """MSE, max and mean |x̂ − x| of a 4-bit round trip, plus a histogram of the signed error."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins: must be a positive integer, got {n_bins!r}")
    original = np.asarray(x, dtype=np.float32)
    error = (dequantize(quantize(original, method, blocksize)).astype(np.float64) - original.astype(np.float64)).reshape(-1)
    counts, edges = np.histogram(error, bins=n_bins)
    return ErrorStats(
        method=method,
        mse=float(np.mean(error**2)),
        max_abs_error=float(np.max(np.abs(error))),
        mean_abs_error=float(np.mean(np.abs(error))),
        bin_edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
    )


def sample_weights(
    distribution: str = "normal",
    n: int = 4096,
    seed: int = 0,
    std: float = 1.0,
    df: float = 4.0,
    outlier_fraction: float = 0.002,
    outlier_scale: float = 20.0,
) -> np.ndarray:
    """A float32 sample of n weights: 'normal' N(0, std²); 'heavy-tailed' Student-t(df) rescaled to std;
    'outliers' N(0, std²) with a fraction (at least 1) of entries replaced by ±outlier_scale·std (as in LLM.int8 features).
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution: must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: must be a positive integer, got {n!r}")
    if not std > 0:
        raise ValueError(f"std: must be positive, got {std!r}")
    if not df > 2:
        raise ValueError(f"df: must exceed 2 so the variance is finite, got {df!r}")
    if not 0 <= outlier_fraction <= 1:
        raise ValueError(f"outlier_fraction: must be in [0, 1], got {outlier_fraction!r}")
    rng = np.random.default_rng(seed)
    if distribution == "normal":
        values = rng.standard_normal(n) * std
    elif distribution == "heavy-tailed":
        values = rng.standard_t(df, n) * math.sqrt((df - 2) / df) * std  # Var t(df) = df/(df − 2)
    else:
        values = rng.standard_normal(n) * std
        n_outliers = max(1, round(outlier_fraction * n))
        where = rng.choice(n, size=n_outliers, replace=False)
        values[where] = rng.choice([-1.0, 1.0], size=n_outliers) * outlier_scale * std
    return values.astype(np.float32)
