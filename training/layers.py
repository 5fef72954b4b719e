"""First-principles adapter layers: LoRA, DoRA, and a frozen NF4 (4-bit) base for QLoRA.

Names follow peft (`r`, `lora_alpha`, `scaling`, `lora_A`, `lora_B`, `lora_magnitude_vector`) so
our weights map one-to-one onto peft's on-disk format (see `training/export.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRALinear", "DoRALinear", "NF4Linear", "NF4Weight", "lora_scaling", "nf4_weight_from_calculators"]


def lora_scaling(r: int, lora_alpha: float, use_rslora: bool = False) -> float:
    """The factor on B·A: alpha / r (Hu et al. 2021, §4.1) or alpha / sqrt(r) (rsLoRA, Kalajdzievski 2023)."""
    if r <= 0:
        raise ValueError(f"r: must be a positive integer, got {r}")
    return lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r


class LoRALinear(nn.Module):
    """y = W0 x + (alpha/r) · B A dropout(x), with W0 frozen (Hu et al. 2021, eq. 3).

    `base` may be an `nn.Linear` or an `NF4Linear` (QLoRA: the frozen base is 4-bit).
    """

    def __init__(
        self,
        base: nn.Module,
        r: int,
        lora_alpha: float,
        lora_dropout: float = 0.0,
        use_rslora: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= lora_dropout < 1.0:
            raise ValueError(f"lora_dropout: must be in [0, 1), got {lora_dropout}")
        self.base_layer = base
        self.in_features: int = base.in_features
        self.out_features: int = base.out_features
        self.r = r
        self.lora_alpha = lora_alpha
        self.use_rslora = use_rslora
        self.scaling = lora_scaling(r, lora_alpha, use_rslora)
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        weight = _base_weight(base)
        # adapters live in fp32 even on a bf16/fp16/4-bit base (peft's autocast_adapter_dtype): AdamW
        # updates of size lr·1e-3 vanish in bf16's 8-bit mantissa
        low_precision = isinstance(base, NF4Linear) or weight.dtype in (torch.float16, torch.bfloat16)
        factory = {"device": weight.device, "dtype": torch.float32 if low_precision else weight.dtype}
        self.lora_A = nn.Linear(self.in_features, r, bias=False, **factory)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, **factory)
        self.merged = False
        for p in self.base_layer.parameters():
            p.requires_grad_(False)
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A ~ Kaiming-uniform(a=√5) as peft does (nn.Linear's default); B = 0, so ΔW = 0 at step 0."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (alpha/r) · B A, shape (out_features, in_features)."""
        return self.lora_B.weight @ self.lora_A.weight * self.scaling  # (out, r) @ (r, in) -> (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        if self._fast_path(x):
            leading = x.shape[:-1]  # (batch, seq)
            base = self.base_layer
            out = _LoRAFunction.apply(x.reshape(-1, self.in_features), base.weight, base.bias, self.lora_A.weight,
                                      self.lora_B.weight, self.scaling)  # (tokens, out_features)
            return out.view(*leading, self.out_features)
        # the formula as written: dropout in training, a bf16/fp16/4-bit base, or autocast
        result = self.base_layer(x)  # (batch, seq, out_features)
        x = x.to(self.lora_A.weight.dtype)
        lora = self.lora_B(self.lora_A(self.lora_dropout(x)))  # (batch, seq, r) -> (batch, seq, out_features)
        return result + (lora * self.scaling).to(result.dtype)

    def _fast_path(self, x: torch.Tensor) -> bool:
        """A frozen float nn.Linear base in the adapter's dtype, no active dropout, no autocast."""
        base = self.base_layer
        return (
            type(base) is nn.Linear
            and not base.weight.requires_grad
            and (base.bias is None or not base.bias.requires_grad)
            and base.weight.dtype == x.dtype == self.lora_A.weight.dtype
            and (not self.training or isinstance(self.lora_dropout, nn.Identity))
            and not torch.is_autocast_enabled(x.device.type)
        )

    def merge(self) -> None:
        """Fold ΔW into W0 so inference costs one matmul; merging twice is the same as once."""
        if self.merged:
            return
        _require_float_base(self.base_layer, "merge")
        weight = self.base_layer.weight
        weight.data += self.delta_weight().to(weight.dtype)
        self.merged = True

    def unmerge(self) -> None:
        """Subtract ΔW again (exact up to float rounding); a no-op when not merged."""
        if not self.merged:
            return
        weight = self.base_layer.weight
        weight.data -= self.delta_weight().to(weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, scaling={self.scaling:g}"


class DoRALinear(LoRALinear):
    """W' = m · (W0 + ΔW) / ||W0 + ΔW||_c (Liu et al. 2024, eq. 5), ΔW the LoRA update.

    The norm is per output row over the input dimension (peft's `dim=1` on the (out, in) weight);
    m starts at ||W0||_c so the layer equals its base at init; the norm is detached from the graph
    (paper §4.3), exactly as peft does.
    """

    def __init__(
        self,
        base: nn.Module,
        r: int,
        lora_alpha: float,
        lora_dropout: float = 0.0,
        use_rslora: bool = False,
    ) -> None:
        super().__init__(base, r, lora_alpha, lora_dropout, use_rslora)
        with torch.no_grad():
            norm = self.weight_norm(_base_weight(self.base_layer).to(self.lora_A.weight.dtype))
        self.lora_magnitude_vector = nn.Parameter(norm.clone())  # (out_features,)

    def weight_norm(self, base_weight: torch.Tensor) -> torch.Tensor:
        """||W0 + ΔW||_c: the L2 norm of each output row, shape (out_features,); a constant (no graph)."""
        with torch.no_grad():
            # W0 + s·B A in one matrix product (addmm), one (out, in) temporary
            weight = torch.addmm(base_weight, self.lora_B.weight, self.lora_A.weight, alpha=self.scaling)
            return torch.linalg.vector_norm(weight, dim=1)

    def magnitude_scale(self, base_weight: torch.Tensor) -> torch.Tensor:
        """m / ||W0 + ΔW||_c with the norm treated as a constant (paper §4.3), shape (out_features,)."""
        return self.lora_magnitude_vector / self.weight_norm(base_weight).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        leading = x.shape[:-1]  # (batch, seq)
        x = x.reshape(-1, self.in_features)  # (tokens, in)
        result = self.base_layer(x)  # (tokens, out_features), includes the bias
        adapter_dtype = self.lora_A.weight.dtype
        x = x if x.dtype == adapter_dtype else x.to(adapter_dtype)
        base_weight = _base_weight(self.base_layer)  # (out, in)
        base_weight = base_weight if base_weight.dtype == adapter_dtype else base_weight.to(adapter_dtype)
        scale = self.magnitude_scale(base_weight)  # (out,), the norm a constant
        bias = getattr(self.base_layer, "bias", None)
        no_dropout = not self.training or isinstance(self.lora_dropout, nn.Identity)
        if no_dropout and not torch.is_autocast_enabled(x.device.type):
            # m/||W'|| · (W0 x + s·B A x) + bias, with W0 x taken from the base output (no second x W0ᵀ):
            # z = W0 x, then z += (s·A x) Bᵀ inside the matrix product (addmm_), then one multiply by the scale
            z = result if bias is None else result - bias
            z = z if z.dtype == adapter_dtype else z.to(adapter_dtype)
            h = self.lora_A(x) * self.scaling  # (tokens, r)
            z.addmm_(h, self.lora_B.weight.t())
            out = z * scale  # (tokens, out_features)
            out = (out if bias is None else out + bias).to(result.dtype)
        else:
            # dropout on x (or autocast): the correction on top of the base output, as peft writes it,
            # so that dropout on x leaves the base path untouched
            x = self.lora_dropout(x)
            lora = self.lora_B(self.lora_A(x))  # (tokens, out_features)
            base_no_bias = F.linear(x, base_weight)  # (tokens, out_features)
            dora = (scale - 1) * base_no_bias + scale * lora * self.scaling
            out = result + dora.to(result.dtype)
        return out.view(*leading, self.out_features)  # (batch, seq, out_features)

    def merged_weight(self) -> torch.Tensor:
        """m · (W0 + ΔW) / ||W0 + ΔW||_c, shape (out_features, in_features)."""
        base_weight = _base_weight(self.base_layer).to(self.lora_A.weight.dtype)
        scale = self.magnitude_scale(base_weight)  # (out,)
        return scale[:, None] * (base_weight + self.delta_weight())

    def merge(self) -> None:
        if self.merged:
            return
        _require_float_base(self.base_layer, "merge")
        weight = self.base_layer.weight
        self._unmerged_weight = weight.data.clone()  # DoRA's merge is not a sum, so keep W0 to undo it
        weight.data = self.merged_weight().to(weight.dtype)
        self.merged = True

    def unmerge(self) -> None:
        if not self.merged:
            return
        self.base_layer.weight.data = self._unmerged_weight
        del self._unmerged_weight
        self.merged = False


class _LoRAFunction(torch.autograd.Function):
    """y = x W0ᵀ + b + (s·x Aᵀ) Bᵀ for a frozen W0, with its backward written out, so that each
    (tokens, out) and (tokens, in) product is added inside a matrix product (addmm_) instead of as a
    separate tensor: forward, the bypass is accumulated into the base output; backward, the input
    gradient G W0 + (s·G B) A is one product plus one accumulation, not two tensors and a sum.
    It keeps what autograd keeps for the plain formula: x, s·x Aᵀ and the three weights."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, scaling: float):  # x: (tokens, in)
        h = F.linear(x, lora_A).mul_(scaling)  # (tokens, r): s·x Aᵀ
        out = F.linear(x, weight, bias)  # (tokens, out)
        out.addmm_(h, lora_B.t())  # += s·x Aᵀ Bᵀ
        ctx.save_for_backward(x, h, weight, lora_A, lora_B)
        ctx.scaling = scaling
        return out

    @staticmethod
    def backward(ctx, grad):  # grad: (tokens, out)
        x, h, weight, lora_A, lora_B = ctx.saved_tensors
        grad_h = (grad @ lora_B).mul_(ctx.scaling)  # (tokens, r): dL/d(x Aᵀ)
        grad_x = grad_A = grad_B = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight).addmm_(grad_h, lora_A)  # (tokens, in): G W0 + (s·G B) A
        if ctx.needs_input_grad[3]:
            grad_A = grad_h.t() @ x  # (r, in)
        if ctx.needs_input_grad[4]:
            grad_B = grad.t() @ h  # (out, r)
        return grad_x, None, None, grad_A, grad_B, None


@dataclass(frozen=True)
class NF4Weight:
    """A weight in NF4 storage, as torch tensors (built from `calculators.nf4`'s output).

    codes: uint8, two 4-bit codes per byte, the earlier element in the high nibble (bitsandbytes' order).
    absmax: fp32 per block of `blocksize` weights, or None when double-quantized, in which case
    absmax = absmax_codebook[absmax_codes] · absmax_scale[per absmax_blocksize] + absmax_offset.
    """

    codebook: torch.Tensor  # (16,) float32
    codes: torch.Tensor  # (numel / 2,) uint8
    blocksize: int
    absmax: torch.Tensor | None = None  # (n_blocks,) float32
    absmax_codes: torch.Tensor | None = None  # (n_blocks,) uint8
    absmax_codebook: torch.Tensor | None = None  # (256,) float32
    absmax_scale: torch.Tensor | None = None  # (n_absmax_blocks,) float32
    absmax_blocksize: int = 256
    absmax_offset: float = 0.0

    @property
    def double_quant(self) -> bool:
        return self.absmax is None


class _DequantizingLinear(torch.autograd.Function):
    """y = x·Wᵀ + b for a frozen 4-bit W that is rebuilt from its codes in the forward pass and
    again in the backward pass (grad_x = grad_y·W), as bitsandbytes' MatMul4Bit does. A plain
    F.linear would make autograd keep the dequantized W of every layer until backward: a
    16-bit copy of the whole base, the memory QLoRA exists to save."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "NF4Linear") -> torch.Tensor:
        ctx.layer = layer
        weight = layer.dequantize().to(layer.compute_dtype)  # (out, in), dropped when forward returns
        bias = None if layer.bias is None else layer.bias.to(layer.compute_dtype)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        weight = ctx.layer.dequantize().to(grad_output.dtype)  # (out, in), rebuilt
        return grad_output @ weight, None  # (batch, seq, in_features)


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight is stored as 4-bit NF4 codes (Dettmers et al. 2023, §3).

    The code book and the blockwise quantization (optionally double-quantized absmax, QLoRA §3
    "Double Quantization") come from `calculators.nf4`; here we only dequantize, in torch, per
    forward: W = codebook[codes] · absmax[block], in the compute dtype. No gradient reaches the base.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        weight: NF4Weight,
        bias: torch.Tensor | None = None,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if weight.codes.numel() * 2 != in_features * out_features:
            raise ValueError(f"weight: {weight.codes.numel()} bytes of codes cannot hold {out_features}x{in_features} weights")
        self.in_features = in_features
        self.out_features = out_features
        self.compute_dtype = compute_dtype
        self.blocksize = weight.blocksize
        self.double_quant = weight.double_quant
        self.absmax_blocksize = weight.absmax_blocksize
        self.absmax_offset = float(weight.absmax_offset)
        self.register_buffer("codebook", weight.codebook.to(torch.float32))
        self.register_buffer("codes", weight.codes.to(torch.uint8))
        if self.double_quant:
            self.register_buffer("absmax_codes", weight.absmax_codes.to(torch.uint8))
            self.register_buffer("absmax_codebook", weight.absmax_codebook.to(torch.float32))
            self.register_buffer("absmax_scale", weight.absmax_scale.to(torch.float32))
        else:
            self.register_buffer("absmax", weight.absmax.to(torch.float32))
        self.register_buffer("bias", None if bias is None else bias.detach().to(compute_dtype).clone())

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        blocksize: int = 64,
        double_quant: bool = True,
        compute_dtype: torch.dtype = torch.float32,
    ) -> "NF4Linear":
        """Quantize an `nn.Linear`'s weight (row-major, blockwise) with `calculators.nf4`."""
        weight = linear.weight.detach().to(torch.float32).cpu().numpy()
        if weight.size % blocksize:
            raise ValueError(f"blocksize: {blocksize} does not divide the weight's {weight.size} elements")
        nf4_weight = nf4_weight_from_calculators(weight, blocksize, double_quant)
        layer = cls(linear.in_features, linear.out_features, nf4_weight, linear.bias, compute_dtype)
        return layer.to(linear.weight.device)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight in the compute dtype, shape (out_features, in_features)."""
        return self.dequantize().to(self.compute_dtype)

    def block_absmax(self) -> torch.Tensor:
        """The per-block absmax, shape (n_blocks,), undoing double quantization when present."""
        if not self.double_quant:
            return self.absmax
        n_blocks = self.absmax_codes.numel()
        scale = self.absmax_scale.repeat_interleave(self.absmax_blocksize)[:n_blocks]  # (n_blocks,)
        return self.absmax_codebook[self.absmax_codes.long()] * scale + self.absmax_offset  # (n_blocks,)

    @torch.no_grad()
    def dequantize(self) -> torch.Tensor:
        """codebook[codes] · absmax per block, vectorised; fp32, shape (out_features, in_features)."""
        high = (self.codes >> 4).long()  # (numel / 2,)
        low = (self.codes & 0x0F).long()  # (numel / 2,)
        idx = torch.stack([high, low], dim=1).reshape(-1)  # (numel,) in row-major order
        values = self.codebook[idx].reshape(-1, self.blocksize)  # (n_blocks, blocksize)
        weight = values * self.block_absmax()[:, None]  # (n_blocks, blocksize)
        return weight.reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _DequantizingLinear.apply(x.to(self.compute_dtype), self)  # (batch, seq, out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, blocksize={self.blocksize}, "
            f"double_quant={self.double_quant}, compute_dtype={self.compute_dtype}"
        )


def _base_weight(base: nn.Module) -> torch.Tensor:
    """W0 of a base layer: the float weight, or the dequantized weight of an NF4 base."""
    if isinstance(base, NF4Linear):
        return base.dequantize()
    return base.weight


def _require_float_base(base: nn.Module, what: str) -> None:
    if isinstance(base, NF4Linear):
        raise ValueError(f"{what}: cannot merge into a 4-bit base; dequantize it into an nn.Linear first")


def nf4_weight_from_calculators(weight, blocksize: int = 64, double_quant: bool = True) -> NF4Weight:
    """Quantize a (out, in) numpy weight with `calculators.nf4` and hold the result as torch tensors."""
    import numpy as np

    from calculators import nf4

    flat = np.ascontiguousarray(weight, dtype=np.float32).reshape(-1)
    q = nf4.quantize_nf4(flat, blocksize=blocksize)
    codes = np.asarray(q.codes, dtype=np.uint8).reshape(-1)
    if codes.size == flat.size:  # one code per byte: pack two per byte, earlier element high
        codes = (codes[0::2] << 4) | codes[1::2]
    codebook = torch.from_numpy(np.asarray(nf4.nf4_levels(), dtype=np.float32).copy())
    absmax = np.asarray(q.absmax, dtype=np.float32).reshape(-1)
    if not double_quant:
        return NF4Weight(codebook, torch.from_numpy(codes.copy()), blocksize, absmax=torch.from_numpy(absmax.copy()))
    dq = nf4.double_quantize(absmax)
    return NF4Weight(
        codebook,
        torch.from_numpy(codes.copy()),
        blocksize,
        absmax_codes=torch.from_numpy(np.asarray(dq.codes, dtype=np.uint8).copy()),
        absmax_codebook=torch.from_numpy(np.asarray(dq.codebook, dtype=np.float32).copy()),
        absmax_scale=torch.from_numpy(np.asarray(dq.scales, dtype=np.float32).copy()),
        absmax_blocksize=int(dq.blocksize),
        absmax_offset=float(dq.offset),
    )
