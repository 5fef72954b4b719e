"""What autograd keeps for the backward pass, tensor by tensor, for each training recipe.

The unit of account is the storage: PyTorch keeps a saved tensor's storage alive until the
node that saved it runs backward, and several nodes often save the same storage (q, k and v
read one normalized hidden state). `_Ledger` counts each storage once, and the walk through a
block below (`layer_activation_bytes`) follows the forward code of transformers 5's Llama-style
decoder layer, peft 0.21's LoRA layers and bitsandbytes 0.50's `Linear4bit`, op by op, asking
of each op what its backward formula needs (`tools/autograd/derivatives.yaml`): a linear keeps
its input only if its weight trains and its weight only if its input needs a gradient; a
product keeps each factor the other's gradient needs; RMSNorm keeps its fp32 upcast and the
reciprocal RMS; SiLU keeps its input. Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", §4.1) count a GPT layer the same way.

The dtype of every tensor follows from the recipe (`Recipe`):

* **LoRA on a 16-bit base** (and QLoRA without `prepare_model_for_kbit_training`): the
  residual stream and the block's tensors are 16-bit; peft casts each adapted module's input
  to the fp32 adapter dtype, a fresh fp32 copy per module that lora_A keeps.
* **QLoRA with `prepare_model_for_kbit_training`** (peft's default recipe): every
  non-quantized parameter (embeddings, norms, lm_head) is cast to fp32, so the residual stream
  is fp32; `Linear4bit` casts its input to the compute dtype, multiplies, and casts its output
  back to fp32 (`bitsandbytes/nn/modules.py`), so q, k, v, the MLP and the logits are all fp32;
  adapters read those fp32 tensors without a copy. Attention in fp32 rules out PyTorch's flash
  kernel, and with grouped-query heads the memory-efficient one too (`sdp_utils.cpp`): SDPA
  falls back to the math kernel, which materializes the b·a·s² attention probabilities.
* **Full fine-tuning, fp32 weights + bf16 autocast** (torch AMP, Trainer `bf16=True` on an fp32
  model): every linear casts its fp32 input to bf16 (a copy per linear) and its weight to bf16
  (cached for the forward, kept for the backward); norms and the residual stream stay fp32.
* **Full fine-tuning in pure bf16**: every tensor bf16 except RMSNorm's fp32 upcast.

Checked on the CPU against `torch.autograd.graph.saved_tensors_hooks` on real transformers /
peft / bitsandbytes models (tests/calculators/test_memory_measured.py). Pure Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from calculators.architectures import Architecture, LinearModule

__all__ = [
    "ATTN_IMPLS",
    "ATTENTION_KERNELS",
    "RMSNORM_FAMILIES",
    "ENCODER_FAMILIES",
    "Recipe",
    "LayerActivations",
    "HeadActivations",
    "attention_kernel",
    "layer_activation_bytes",
    "head_activation_bytes",
    "logits_peak_bytes",
    "logits_forward_bytes",
    "checkpointed_inputs_bytes",
    "eager_scores_bytes",
    "korthikanti_activation_bytes",
    "linear_role",
]

ATTN_IMPLS = ("eager", "sdpa", "flash")
ATTENTION_KERNELS = ("flash", "efficient", "math", "eager")
RMSNORM_FAMILIES = ("llama", "mistral", "mixtral", "qwen2", "gemma2", "phi3")
ENCODER_FAMILIES = ("bert",)
FLASH_MAX_HEAD_DIM = 256


@dataclass(frozen=True)
class Recipe:
    """How one training recipe types and trains the tensors of a step (bytes per element).

    residual_bytes: the hidden states between blocks, which follow the dense (non-quantized)
    weights: 16-bit for a bf16 base, 4 after `prepare_model_for_kbit_training` or for fp32
    weights. compute_bytes: bitsandbytes' compute dtype, and the autocast dtype.
    """

    residual_bytes: int = 2
    compute_bytes: int = 2
    adapter_bytes: int = 4
    quantized: bool = False  # block linears are bitsandbytes layers (output cast back to the input's dtype)
    autocast: bool = False
    base_trainable: bool = False  # full fine-tuning: every weight, norms and embeddings train
    input_requires_grad: bool = False  # the embedding output needs a gradient (trained embedding, input hooks)

    def __post_init__(self) -> None:
        for name in ("residual_bytes", "compute_bytes", "adapter_bytes"):
            if getattr(self, name) not in (2, 4):
                raise ValueError(f"{name}: must be 2 or 4 bytes, got {getattr(self, name)!r}")

    @property
    def dense_weight_bytes(self) -> int:
        """Norms, embeddings, lm_head (and the block linears of a dense base): the residual's dtype."""
        return self.residual_bytes


@dataclass(frozen=True)
class LayerActivations:
    """Bytes one transformer block keeps for its backward pass, by part, and its transients.

    `tokens` = batch·seq. `shared_input` is the part of `norms` that is the block's input
    itself (an fp32 residual stream is its own RMSNorm upcast): under gradient checkpointing
    the stored block input already holds it.
    """

    norms: int  # RMSNorm: the fp32 upcast and the fp32 reciprocal RMS; full FT also the normalized output
    linear_inputs: int  # inputs kept by linears whose weight trains (autocast: their bf16 casts)
    attention: int  # what the attention kernel keeps (q, k, v, output, log-sum-exp; math/eager: probabilities)
    mlp: int  # gate, up and act(gate) (the SwiGLU product's operands and SiLU's input)
    dropout_masks: int  # one byte per element per active dropout
    adapters: int  # lora_A's input (a cast copy per module, or the shared input) and lora_A's output
    weight_copies: int  # autocast's 16-bit copies of weights, kept for the input gradient
    backward_workspace: int  # the largest transient of this block's backward
    forward_workspace: int  # the largest transient of this block's forward beyond what it keeps
    kernel: str = "flash"  # the attention kernel this block runs
    shared_input: int = 0

    @property
    def saved_bytes(self) -> int:
        return (self.norms + self.linear_inputs + self.attention + self.mlp + self.dropout_masks + self.adapters
                + self.weight_copies)


@dataclass(frozen=True)
class HeadActivations:
    """What the model keeps outside its blocks: final norm, lm_head, loss, ids, RoPE tables."""

    final_norm: int
    lm_head: int  # lm_head's kept input (a trained head; autocast: its 16-bit cast)
    weight_copies: int  # autocast's 16-bit copy of lm_head's weight, kept for the input gradient
    log_probs: int  # cross-entropy's fp32 log-softmax output, 4·T·V
    labels_and_ids: int  # int64 shifted labels (nll_loss), and input_ids when the embedding trains
    rope_tables: int  # cos and sin, shared by every block
    embedding_dropout: int
    logits_bytes: int  # bytes per logit as lm_head produces them

    @property
    def saved_bytes(self) -> int:
        return (self.final_norm + self.lm_head + self.weight_copies + self.log_probs + self.labels_and_ids
                + self.rope_tables + self.embedding_dropout)


# ---------------------------------------------------------------------------- the ledger


@dataclass(eq=False)
class _T:
    """A tensor of the walk: bytes per element, element count, whether it needs a gradient."""

    nbytes_per: int
    numel: int
    rg: bool

    @property
    def nbytes(self) -> int:
        return self.nbytes_per * self.numel


@dataclass
class _Ledger:
    parts: dict[str, int] = field(default_factory=dict)
    kept: list[_T] = field(default_factory=list)  # holding them keeps their ids unique

    def keep(self, part: str, tensor: _T) -> None:
        if any(t is tensor for t in self.kept):
            return
        self.kept.append(tensor)
        self.parts[part] = self.parts.get(part, 0) + tensor.nbytes

    def add(self, part: str, nbytes: int) -> None:
        self.parts[part] = self.parts.get(part, 0) + nbytes

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def __getitem__(self, part: str) -> int:
        return self.parts.get(part, 0)


def linear_role(module: LinearModule) -> str:
    """Where a block linear sits: attn_in (reads the attention norm's output), attn_out (reads
    the attention output), mlp_in (reads the MLP norm's output), mlp_out (reads the MLP
    activation)."""
    path = module.path or module.name
    if module.group == "attention":
        return "attn_out" if path.endswith(("o_proj", "attn.c_proj", "attention.output.dense")) else "attn_in"
    return "mlp_out" if path.endswith(("down_proj", "mlp.c_proj", "output.dense")) else "mlp_in"


class _Block:
    """One forward walk through a block, recording what each op keeps and what is alive around it.

    Forward: besides what autograd keeps, the ops' outputs that nothing keeps are alive while
    the code still holds them (`context`: transformers' locals, e.g. the normalized hidden state
    for the whole attention call) and each op makes its own temporaries; `fwd_events` records
    kept + alive + temporaries per op. Backward runs the ops in reverse: when op k's backward
    runs, what ops after k kept has been freed, and op k needs its output's gradient and
    allocates its inputs' gradients (and any workspace: a dequantized weight, an attention
    kernel's buffers); `bwd_events` records kept-so-far and that transient. The residual
    stream's gradient is alive throughout.
    """

    def __init__(self, recipe: Recipe, tokens: int, adapted: dict[str, int], lora_dropout: float, dora: bool):
        self.recipe = recipe
        self.T = tokens
        self.adapted = adapted  # module path → r
        self.lora_dropout = lora_dropout
        self.dora = dora
        self.ledger = _Ledger()
        self.bwd_events: list[tuple[int, int]] = []
        self.fwd_events: list[int] = []

    def new(self, nbytes_per: int, numel: int, rg: bool) -> _T:
        return _T(nbytes_per, numel, rg)

    def alive(self, context: Sequence[_T]) -> int:
        """Bytes of the in-flight tensors nothing has kept (kept ones are already in the ledger)."""
        unique: list[_T] = []
        for t in context:
            if not any(u is t for u in unique) and not any(k is t for k in self.ledger.kept):
                unique.append(t)
        return sum(t.nbytes for t in unique)

    def fwd(self, context: Sequence[_T], temporaries: int = 0) -> None:
        self.fwd_events.append(self.ledger.total + self.alive(context) + temporaries)

    def bwd(self, transient: int, freed: int = 0) -> None:
        """An op's backward allocates `transient` while what it kept, except `freed`, is still alive."""
        self.bwd_events.append((self.ledger.total - freed, transient))

    def forward_peak(self) -> int:
        return max(self.fwd_events, default=0)

    def backward_peak(self, residual_grad: int) -> int:
        """The most this block holds during its backward: kept tensors not yet freed + transients."""
        return residual_grad + max((kept + transient for kept, transient in self.bwd_events), default=0)

    def linear(self, x: _T, module: LinearModule, context: Sequence[_T] = (), to_residual: bool = False,
               dense: bool = False) -> _T:
        """A linear: nn.Linear, or bitsandbytes' Linear4bit inside the blocks of a quantized base (`dense`:
        never quantized, as lm_head); peft's LoRA on top when adapted."""
        rec, T, led = self.recipe, self.T, self.ledger
        n_in, n_out = module.in_features, module.out_features
        trains = rec.base_trainable
        grad_in = x.nbytes_per * T * n_in if x.rg else 0
        bwd_ws = fwd_ws = 0
        if rec.quantized and not trains and not dense:
            # Linear4bit: x.to(compute dtype) feeds MatMul4Bit, which keeps only the packed weight; the
            # output is cast back to x's dtype. Forward and backward dequantize the weight; the backward
            # computes the input's gradient in the compute dtype before casting it back.
            out = self.new(x.nbytes_per, T * n_out, x.rg)
            casts = x.nbytes_per != rec.compute_bytes
            fwd_ws = rec.compute_bytes * (n_in * n_out + (T * n_in + T * n_out if casts else 0))
            if x.rg:
                bwd_ws = rec.compute_bytes * (n_in * n_out + (T * n_in if casts else 0))
        elif rec.autocast:
            cast = x if x.nbytes_per == rec.compute_bytes else self.new(rec.compute_bytes, T * n_in, x.rg)
            if trains:
                led.keep("linear_inputs", cast)
            if cast is not x and not trains:
                fwd_ws += cast.nbytes
            if rec.dense_weight_bytes != rec.compute_bytes:
                copy = rec.compute_bytes * (n_in * n_out + (n_out if module.bias else 0))
                if x.rg:  # F.linear keeps the cast weight for the input's gradient
                    led.add("weight_copies", copy)
                else:
                    fwd_ws += copy
            out = self.new(rec.compute_bytes, T * n_out, x.rg or trains)
            if trains:  # the weight copy's gradient, before it is cast into the fp32 .grad
                bwd_ws = rec.compute_bytes * n_in * n_out
            if cast is not x and x.rg:
                bwd_ws += rec.compute_bytes * T * n_in  # the input gradient before its cast back
        else:
            if trains:
                led.keep("linear_inputs", x)
            out = self.new(rec.dense_weight_bytes, T * n_out, x.rg or trains)
        r = self.adapted.get(module.path)
        # the output's gradient; a projection back into the residual stream gets the stream's own
        # gradient (counted once for the block) unless its dtype differs
        grad_out = 0 if to_residual and out.nbytes_per == rec.residual_bytes else out.nbytes_per * T * n_out
        if r is None:
            self.fwd([*context, x, out], fwd_ws)
            if out.rg:
                self.bwd(grad_out + grad_in + bwd_ws)
            return out
        # peft LoRA casts x to lora_A's dtype (its 4-bit Linear skips the cast under autocast). Under
        # autocast lora_A then casts its input to the autocast dtype: a fresh copy unless x already is,
        # and 16-bit copies of A and B, kept for the gradients.
        if rec.autocast:
            a_bytes = rec.compute_bytes
            shared = rec.quantized and x.nbytes_per == a_bytes
            xa = x if shared else self.new(a_bytes, T * n_in, x.rg)
            if rec.adapter_bytes != a_bytes:
                led.add("weight_copies", a_bytes * r * ((n_in if x.rg else 0) + n_out))
        else:
            a_bytes = rec.adapter_bytes
            xa = x if x.nbytes_per == a_bytes else self.new(a_bytes, T * n_in, x.rg)
        if self.lora_dropout > 0:
            led.add("dropout_masks", T * n_in)
            xa = self.new(a_bytes, T * n_in, True)  # dropout's output, a copy per module
        led.keep("adapters", xa)
        led.keep("adapters", self.new(a_bytes, T * r, True))  # lora_A's output, kept by lora_B
        if self.dora:  # the base result and the LoRA result of out_features each, for the magnitude's product
            led.add("adapters", (out.nbytes_per + rec.adapter_bytes) * T * n_out)
        # Forward: the base's result (4-bit: cloned), lora_B's output and its product with the scale in
        # the adapter dtype, then the sum. peft's dense Linear adds a 16-bit result to the fp32 LoRA term:
        # type promotion materializes the result in fp32 and the sum is a third fp32 tensor; peft's
        # 4-bit Linear casts the LoRA term to the result's dtype first.
        out_bytes = out.nbytes_per * T * n_out
        promoted = 3 if not rec.quantized and a_bytes != out.nbytes_per else 2
        self.fwd([*context, x], max(fwd_ws + out_bytes, out_bytes + promoted * a_bytes * T * n_out))
        # Backward, peft's LoRA branch first (created last): lora_A's input gradient in the adapter
        # dtype while lora_A still keeps xa; then its cast back to x's dtype (xa freed, if a copy);
        # then the base's input gradient, summed into it.
        if x.rg:
            grad_xa = a_bytes * T * n_in
            # lora_A releases xa after its backward unless another module still keeps it (q, k, v share one)
            copy = xa.nbytes if xa is not x or to_residual else 0
            self.bwd(grad_out + grad_xa)
            self.bwd(grad_out + (grad_xa + grad_in if xa is not x else grad_xa), freed=copy)
            self.bwd(grad_out + 2 * grad_in + bwd_ws, freed=copy)
        else:
            self.bwd(grad_out)
        return self.new(out.nbytes_per, T * n_out, True)

    def rms_norm(self, x: _T, h: int, context: Sequence[_T] = ()) -> _T:
        """transformers' LlamaRMSNorm: x.to(fp32); x·rsqrt(mean(x²) + ε); weight · that.to(x's dtype)."""
        rec, T, led = self.recipe, self.T, self.ledger
        trains = rec.base_trainable
        x32 = x if x.nbytes_per == 4 else self.new(4, T * h, x.rg)
        if x.rg:
            led.keep("norms", x32)  # pow and the product keep it
            led.add("norms", 4 * T)  # rsqrt's output, fp32 (b, s, 1)
        if trains:
            led.add("norms", x.nbytes_per * T * h)  # the normalized input, for the weight's gradient
        out = self.new(rec.dense_weight_bytes, T * h, x.rg or trains)
        # forward: x, its fp32 copy, x², the normalized fp32 tensor, its cast and the output
        self.fwd([*context, x, x32, out], 4 * T * h + (0 if trains else x.nbytes_per * T * h))
        if x.rg:  # output gradient, fp32 gradients of the product, the square and the upcast
            self.bwd(rec.dense_weight_bytes * T * h + 3 * 4 * T * h)
        return out

    def layer_norm(self, x: _T, h: int, context: Sequence[_T] = ()) -> _T:
        """nn.LayerNorm: keeps its input and fp32 mean and rstd (one kernel)."""
        rec, T, led = self.recipe, self.T, self.ledger
        out = self.new(x.nbytes_per, T * h, x.rg or rec.base_trainable)
        if x.rg or rec.base_trainable:
            led.keep("norms", x)
            led.add("norms", 8 * T)
            self.bwd(2 * x.nbytes_per * T * h)
        self.fwd([*context, x, out])
        return out


def attention_kernel(attn_impl: str, dtype_bytes: int, arch: Architecture) -> str:
    """The kernel a CUDA device runs for one attention call.

    eager: transformers' explicit softmax(QKᵀ)V. flash: `flash_attention_2` (16-bit; transformers
    casts fp32 inputs down). sdpa: PyTorch picks — FlashAttention for 16-bit inputs (grouped-query
    heads allowed, head_dim ≤ 256); for fp32 its memory-efficient kernel, which admits no grouped-
    query heads; otherwise the math kernel (`aten/src/ATen/native/transformers/cuda/sdp_utils.cpp`).
    """
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f"attn_impl: must be one of {', '.join(ATTN_IMPLS)}, got {attn_impl!r}")
    if attn_impl in ("eager", "flash"):
        return attn_impl
    if dtype_bytes == 2 and arch.resolved_head_dim <= FLASH_MAX_HEAD_DIM:
        return "flash"
    if arch.num_key_value_heads == arch.num_attention_heads:
        return "efficient"
    return "math"


def layer_activation_bytes(
    arch: Architecture,
    batch_size: int,
    seq_len: int,
    act_bytes: int = 2,
    attn_impl: str = "sdpa",
    base_trainable: bool = False,
    adapted: Sequence[tuple[LinearModule, int]] = (),
    adapter_bytes: int = 4,
    lora_dropout: float = 0.0,
    dora: bool = False,
    hidden_dropout: float = 0.0,
    attention_dropout: float = 0.0,
    input_requires_grad: bool = True,
    quantized: bool = False,
    recipe: Recipe | None = None,
    attn_kernel: str | None = None,
) -> LayerActivations:
    """Saved tensors of one block, walked op by op (see the module docstring).

    `recipe` sets every dtype; without it, a recipe is built from the older arguments
    (`act_bytes` = the residual and activation dtype, `adapter_bytes`, `base_trainable`,
    `quantized`). `attn_kernel` overrides the CUDA kernel choice (the CPU runs "flash").

    Llama-style block, T = b·s, q = heads·head_dim, kv = kv_heads·head_dim, with e the dtype
    of the block's tensors (LoRA bf16: 2; QLoRA prepared: 4):
      RMSNorm ×2: fp32 x (a copy unless x is fp32) and fp32 rsqrt → 4·T·h + 4·T each.
      flash / efficient: q, k, v, output → e·T·(2q + 2kv), + fp32 log-sum-exp 4·b·a·s.
      math: q·scale, repeated k·scale and v, probabilities, in fp32 → 4·(3·T·q + b·a·s²).
      eager: q, repeated k and v → 3·e·T·q, fp32 softmax 4·b·a·s² + its e-byte copy.
      SwiGLU: gate, up and SiLU(gate) → 3·e·T·i.
      LoRA: lora_A's input (adapter_bytes·T·in per module when a cast copy, once when shared)
        and its r-wide output adapter_bytes·T·r.
    """
    if recipe is None:
        recipe = Recipe(residual_bytes=act_bytes, compute_bytes=act_bytes, adapter_bytes=adapter_bytes,
                        quantized=quantized, base_trainable=base_trainable)
    b, s, T = batch_size, seq_len, batch_size * seq_len
    h, i = arch.hidden_size, arch.intermediate_size
    q, kv, a = arch.q_dim, arch.kv_dim, arch.num_attention_heads
    rms = arch.family in RMSNORM_FAMILIES
    blk = _Block(recipe, T, {m.path: r for m, r in adapted}, lora_dropout, dora)
    led = blk.ledger
    modules = [m for m in arch.linear_modules() if m.group in ("attention", "mlp")]
    by_role: dict[str, list[LinearModule]] = {}
    for m in modules:
        by_role.setdefault(linear_role(m), []).append(m)

    x = blk.new(recipe.residual_bytes, T * h, input_requires_grad or recipe.base_trainable)
    norm = blk.rms_norm if rms else blk.layer_norm
    post_norm = arch.family in ENCODER_FAMILIES  # BERT normalizes after each residual add

    # Attention: norm → q, k, v (or one fused projection) → RoPE → kernel → o_proj. transformers'
    # attention function holds the normalized input, q, k and v until it returns.
    n1 = x if post_norm else norm(x, h)
    qkv: list[_T] = []
    for m in by_role.get("attn_in", []):
        qkv.append(blk.linear(n1, m, context=[x, *qkv]))
    qkv_rg = any(t.rg for t in qkv)
    proj_bytes = max((t.nbytes_per for t in qkv), default=recipe.residual_bytes)
    rope_bytes = max(proj_bytes, recipe.residual_bytes) if rms else proj_bytes  # q·cos promotes to cos's dtype
    e_att = recipe.compute_bytes if recipe.autocast else rope_bytes
    if attn_impl == "flash":  # flash_attention_2 runs in 16 bits: transformers casts fp32 inputs down
        e_att = 2
    kernel = attn_kernel or attention_kernel(attn_impl, e_att, arch)
    v_out = blk.new(proj_bytes, T * kv, qkv_rg)
    q_rope, k_rope = blk.new(rope_bytes, T * q, qkv_rg), blk.new(rope_bytes, T * kv, qkv_rg)
    attn_out = blk.new(e_att, T * q, qkv_rg)
    scores = 0  # the b·a·s² tensors the math and eager kernels make in the forward
    if qkv_rg:
        if kernel in ("flash", "efficient"):
            # RoPE's outputs (or their casts), v, the output and the fp32 log-sum-exp are kept.
            lse_len = s if kernel == "flash" else -(-s // 32) * 32
            for t in (q_rope, k_rope, v_out, attn_out):
                led.kept.append(t)
            led.add("attention", e_att * T * (2 * q + 2 * kv) + 4 * b * a * lse_len)
            blk.bwd(e_att * T * (2 * q + 2 * kv) + 4 * T * q)  # dout, dq, dk, dv + the fp32 dq accumulator
        elif kernel == "math":
            # PyTorch's math kernel computes in fp32 whatever the input dtype (16-bit inputs are upcast):
            # it keeps q·scale, repeated k·scale and v, and the softmax probabilities.
            led.add("attention", 4 * (3 * T * q + b * a * s * s))
            scores = 4 * b * a * s * s
            blk.bwd(e_att * T * q + 2 * 4 * b * a * s * s + 4 * T * 4 * q)
        else:  # eager: q, repeated k and v, fp32 softmax and its copy in the activations' dtype
            led.add("attention", 3 * e_att * T * q + _eager_probs_bytes(arch, b, s, e_att))
            scores = 2 * e_att * b * a * s * s
            blk.bwd(e_att * T * q + (4 + e_att) * b * a * s * s + e_att * T * 3 * q)
    attention_context = [x, n1, q_rope, k_rope, v_out, attn_out]
    blk.fwd(attention_context, scores)
    o_out: list[_T] = []
    for m in by_role.get("attn_out", []):
        o_out.append(blk.linear(attn_out, m, context=attention_context, to_residual=True))
    x2 = blk.new(recipe.residual_bytes, T * h, any(t.rg for t in o_out) or x.rg)
    blk.fwd([x, *o_out, x2])
    if hidden_dropout > 0:
        led.add("dropout_masks", T * h)
    if attention_dropout > 0 and kernel == "eager":
        led.add("dropout_masks", b * a * s * s)  # sdpa and flash regenerate their mask from the RNG seed
    if arch.family == "gemma2":  # post-attention norm
        norm(x2, h)

    # MLP: norm → gate, up (or one fused projection) → act(gate)·up → down, in one expression.
    n2 = norm(x2, h, context=[x2])
    ins: list[_T] = []
    for m in by_role.get("mlp_in", []):  # gate, then act(gate) is alive while up runs
        ins.append(blk.linear(n2, m, context=[x2, *ins]))
        if arch.mlp_kind in ("swiglu", "geglu") and len(by_role["mlp_in"]) > 1 and len(ins) == 1:
            ins.append(blk.new(ins[0].nbytes_per, T * i, ins[0].rg))
    mlp_factor = arch.num_experts_per_tok if arch.num_local_experts > 1 else 1
    if arch.num_local_experts > 1:  # Mixtral's experts are not nn.Linear: frozen unless full FT
        e_mlp = recipe.compute_bytes if recipe.autocast else recipe.residual_bytes
        mlp_rg = n2.rg
        if recipe.base_trainable:
            led.add("linear_inputs", e_mlp * T * (h + i) * mlp_factor)  # each expert's input and down's input
        led.add("mlp", 4 * T * arch.num_local_experts)  # fp32 router softmax
    else:
        e_mlp = max((t.nbytes_per for t in ins), default=recipe.residual_bytes)
        mlp_rg = any(t.rg for t in ins)
    width = T * i * mlp_factor
    product = blk.new(e_mlp, width, mlp_rg)
    if mlp_rg:
        if arch.mlp_kind in ("swiglu", "geglu"):
            led.add("mlp", e_mlp * width)  # gate, kept by the activation
            blk.bwd(2 * e_mlp * width)
            led.add("mlp", 2 * e_mlp * width)  # up and act(gate), kept by their product
            blk.bwd(3 * e_mlp * width)  # the product's gradient and its two factors'
        elif arch.family == "gpt2":  # gelu_new in Python: x, x³ term, tanh(·), 0.5·x(1 + tanh)
            led.add("mlp", 4 * e_mlp * width)
            blk.bwd(3 * e_mlp * width)
        else:  # exact GELU keeps its input
            led.add("mlp", e_mlp * width)
            blk.bwd(2 * e_mlp * width)
    blk.fwd([x2, n2, product] if mlp_rg else [x2, n2, *ins, product])  # kept: gate, up and act(gate)
    for m in by_role.get("mlp_out", []):
        blk.linear(product, m, context=[x2, n2], to_residual=True)
    if hidden_dropout > 0:
        led.add("dropout_masks", T * h)
    if arch.family == "gemma2" or post_norm:  # gemma2's post-MLP norm; BERT's output norm
        norm(blk.new(recipe.residual_bytes, T * h, True), h)

    # Backward: the peak of the reverse walk over the ops, with the residual stream's gradient.
    backward_ws = blk.backward_peak(recipe.residual_bytes * T * h) - led.total
    forward_ws = max(blk.forward_peak() - led.total, 0)
    if dora and adapted:
        biggest = max(m.in_features * m.out_features for m, _ in adapted)
        forward_ws = max(forward_ws, 3 * recipe.adapter_bytes * biggest)  # W (cast), B·A, W + s·B·A for ‖·‖
    shared = 4 * T * h if rms and x.rg and recipe.residual_bytes == 4 else 0
    return LayerActivations(
        norms=led["norms"], linear_inputs=led["linear_inputs"], attention=led["attention"], mlp=led["mlp"],
        dropout_masks=led["dropout_masks"], adapters=led["adapters"], weight_copies=led["weight_copies"],
        backward_workspace=backward_ws, forward_workspace=forward_ws, kernel=kernel, shared_input=shared,
    )


def head_activation_bytes(arch: Architecture, batch_size: int, seq_len: int, recipe: Recipe,
                          embedding_dropout: float = 0.0) -> HeadActivations:
    """Outside the blocks: the final norm, lm_head, the causal-LM loss, ids and RoPE's tables.

    transformers' ForCausalLMLoss upcasts the logits (`logits.float()`) and cross_entropy keeps
    log_softmax's fp32 output (4·T·V) and the int64 shifted labels (8·T); a trained embedding
    keeps input_ids (8·T). RoPE's cos and sin, (s, head_dim) each in the residual's dtype, are
    computed once and kept by every block's products.
    """
    T, h, V, s = batch_size * seq_len, arch.hidden_size, arch.vocab_size, seq_len
    blk = _Block(recipe, T, {}, 0.0, False)
    encoder = arch.family in ENCODER_FAMILIES
    final = lm_head = copies = 0
    logits_bytes = recipe.compute_bytes if recipe.autocast else recipe.dense_weight_bytes
    if not encoder:
        x = blk.new(recipe.residual_bytes, T * h, True)
        n = blk.rms_norm(x, h) if arch.family in RMSNORM_FAMILIES else blk.layer_norm(x, h)
        final = blk.ledger["norms"]
        head = next((m for m in arch.linear_modules() if m.group == "head"), None)
        blk.linear(n, head or LinearModule("lm_head", h, V, 1, False, "head", "lm_head"), dense=True)  # tied: the embedding
        lm_head, copies = blk.ledger["linear_inputs"], blk.ledger["weight_copies"]
    log_probs = 0 if encoder else 4 * T * V
    labels_ids = (0 if encoder else 8 * T) + (8 * T if recipe.base_trainable else 0)
    rope = 2 * s * arch.resolved_head_dim * recipe.residual_bytes if arch.family in RMSNORM_FAMILIES else 0
    dropout = T * h if embedding_dropout > 0 else 0
    return HeadActivations(final, lm_head, copies, log_probs, labels_ids, rope, dropout, logits_bytes)


def checkpointed_inputs_bytes(arch: Architecture, batch_size: int, seq_len: int, act_bytes: int = 2) -> int:
    """Gradient checkpointing keeps one hidden state per block: L · e · T · h (e: the residual's dtype)."""
    return arch.num_hidden_layers * act_bytes * batch_size * seq_len * arch.hidden_size


def _eager_probs_bytes(arch: Architecture, batch_size: int, seq_len: int, act_bytes: int) -> int:
    """One layer's kept attention probabilities under eager attention, b · a · s² scores:
    Llama-style softmax in fp32 plus its e-byte copy (4 + e bytes each; fp32 runs keep one);
    GPT-2/BERT softmax in the activation dtype (e bytes)."""
    rms = arch.family in RMSNORM_FAMILIES
    per_score = 4 + (act_bytes if act_bytes < 4 else 0) if rms else act_bytes
    return per_score * batch_size * arch.num_attention_heads * seq_len**2


def eager_scores_bytes(arch: Architecture, batch_size: int, seq_len: int, act_bytes: int = 2) -> int:
    """Eager attention's kept probabilities over the model: every layer's (see `_eager_probs_bytes`)."""
    return arch.num_hidden_layers * _eager_probs_bytes(arch, batch_size, seq_len, act_bytes)


def korthikanti_activation_bytes(arch: Architecture, batch_size: int, seq_len: int, with_scores: bool) -> int:
    """Korthikanti et al. 2022 §4.1 for a 16-bit GPT layer, s·b·h·(34 + 5·a·s/h), summed over the layers;
    without the score term (fused attention) only 34·s·b·h."""
    s, b, h, a = seq_len, batch_size, arch.hidden_size, arch.num_attention_heads
    per_layer = 34 * s * b * h + (5 * a * s * s * b if with_scores else 0)
    return arch.num_hidden_layers * per_layer


def logits_peak_bytes(batch_size: int, seq_len: int, vocab_size: int) -> int:
    """Peak of the causal-LM loss's backward: 12·T·V bytes.

    cross_entropy = log_softmax (keeps its fp32 output, 4·T·V) + nll_loss. In the backward
    pass nll_loss's dense fp32 gradient (4·T·V) and log_softmax's (4·T·V) exist next to the
    kept log-probs: 12·T·V, whatever dtype lm_head produced. The training loop is assumed to
    drop the output (keep only `.loss`), as HF Trainer does; holding `outputs.logits` adds
    the logits themselves.
    """
    return 12 * batch_size * seq_len * vocab_size


def logits_forward_bytes(batch_size: int, seq_len: int, vocab_size: int, logits_bytes: int) -> int:
    """Peak inside the loss's forward: the logits, their fp32 copy (none if already fp32) and the log-probs."""
    tv = batch_size * seq_len * vocab_size
    return (logits_bytes + 4 + 4) * tv if logits_bytes < 4 else 8 * tv
