"""The quantities the chapters state, each delegating to one calculator.

Arguments arrive as strings from the chapter directive and are converted by the
annotations below. `targets` takes peft module names (comma-separated) or a preset
(`q,v`, `attention`, `all-linear`).
"""

from __future__ import annotations

import math

from calculators import (architectures, lab_task, lowrank, memory, nf4, params, preference, rank_sweep, scaling,
                         selective, serving, usual_figures)
from calculators.gpus import get_gpu
from calculators.quantities import quantity

# --- model shapes -------------------------------------------------------------------


def _module(model: str, module: str) -> architectures.LinearModule:
    arch = architectures.get_architecture(model)
    for linear in arch.linear_modules():
        if linear.name == module:
            return linear
    names = sorted({m.name for m in arch.linear_modules()})
    raise ValueError(f"module: {module!r} is not a linear module of {model}; choose from {names}")


@quantity("count")
def model_params(model: str) -> int:
    """Total parameters of the model (its standard transformers class)."""
    return architectures.get_architecture(model).n_params


@quantity("count")
def module_shape(model: str, module: str, dim: str) -> int:
    """in_features (dim=in) or out_features (dim=out) of one linear module kind."""
    linear = _module(model, module)
    if dim not in ("in", "out"):
        raise ValueError(f"dim: must be 'in' or 'out', got {dim!r}")
    return linear.in_features if dim == "in" else linear.out_features


@quantity("count")
def module_params(model: str, module: str) -> int:
    """Weight parameters of one module: in_features × out_features."""
    linear = _module(model, module)
    return linear.in_features * linear.out_features


@quantity("count")
def module_lora_params(model: str, module: str, r: int) -> int:
    """LoRA parameters on one module: r·(in_features + out_features)."""
    linear = _module(model, module)
    return params.lora_module_params(linear.in_features, linear.out_features, r)


@quantity("percent")
def module_lora_percent(model: str, module: str, r: int) -> float:
    """LoRA parameters of one module as a percentage of its weight: r(in+out)/(in·out)."""
    return 100.0 * module_lora_params(model, module, r) / module_params(model, module)


@quantity("count")
def embedding_params(model: str) -> int:
    """The token-embedding matrix: vocab_size × hidden_size."""
    arch = architectures.get_architecture(model)
    return arch.vocab_size * arch.hidden_size


@quantity("count")
def cls_head_params(model: str, num_labels: int) -> int:
    """A fresh sequence-classification head (BERT: Linear with bias; Llama-family: no bias)."""
    return params.classification_head_params(model, num_labels)


# --- trainable parameters ------------------------------------------------------------


@quantity("count")
def lora_trainable(model: str, r: int, targets: str) -> int:
    """LoRA's A and B over the targeted modules: Σ r·(in + out)."""
    return params.count_trainable(model, "lora", r=r, target_modules=targets).trainable


@quantity("percent")
def lora_percent(model: str, r: int, targets: str) -> float:
    """Trainable share as peft prints it: trainable / (base + adapter) × 100."""
    return params.count_trainable(model, "lora", r=r, target_modules=targets).percent


@quantity("count")
def dora_trainable(model: str, r: int, targets: str) -> int:
    """LoRA plus DoRA's magnitude vector (out_features per adapted module)."""
    return params.count_trainable(model, "dora", r=r, target_modules=targets).trainable


@quantity("count")
def dora_magnitude_params(model: str, targets: str) -> int:
    """DoRA's magnitude entries alone: Σ out_features over the adapted modules."""
    return dora_trainable(model, 1, targets) - lora_trainable(model, 1, targets)


@quantity("count")
def adalora_trainable(model: str, r: int, targets: str) -> int:
    """AdaLoRA at its initial rank: Σ r·(in + out + 1) (P, Q and the singular values Λ)."""
    return params.count_trainable(model, "adalora", r=r, target_modules=targets).trainable


@quantity("count")
def ia3_trainable(model: str) -> int:
    """(IA)³ with peft's default targets: one learned vector per key, value and FFN projection."""
    return params.count_trainable(model, "ia3").trainable


@quantity("count")
def prefix_trainable(model: str, tokens: int) -> int:
    """Prefix tuning (no projection): tokens × layers × 2 × kv width."""
    return params.count_trainable(model, "prefix", num_virtual_tokens=tokens).trainable


@quantity("count")
def prefix_mlp_trainable(model: str, tokens: int, hidden: int) -> int:
    """Prefix tuning while training with the reparameterization MLP (peft prefix_projection=True)."""
    return params.count_trainable(
        model, "prefix", num_virtual_tokens=tokens, prefix_projection=True, encoder_hidden_size=hidden
    ).trainable


@quantity("count")
def prompt_trainable(model: str, tokens: int) -> int:
    """Prompt tuning: tokens × hidden_size."""
    return params.count_trainable(model, "prompt", num_virtual_tokens=tokens).trainable


@quantity("count")
def bitfit_trainable(model: str) -> int:
    """BitFit: every bias in the model (zero for bias-free architectures such as Llama)."""
    return params.count_trainable(model, "bitfit").trainable


@quantity("percent")
def bitfit_percent(model: str) -> float:
    """BitFit's biases as a percentage of the model's parameters."""
    return 100.0 * bitfit_trainable(model) / model_params(model)


@quantity("count")
def bottleneck_trainable(model: str, bottleneck: int, placement: str) -> int:
    """Bottleneck adapters: (2·d·m + m + d) each; Houlsby places two per layer, Pfeiffer one."""
    return params.bottleneck_adapter_params(model, bottleneck, placement)


@quantity("percent")
def lora_flop_overhead(model: str, r: int, targets: str) -> float:
    """Extra matmul FLOPs of an unmerged adapter: Σ r(in+out) / Σ in·out over the targets × 100."""
    result = params.count_trainable(model, "lora", r=r, target_modules=targets)
    base = sum(m.in_features * m.out_features * m.count for m in result.per_module)
    return 100.0 * result.trainable / base


# --- bytes -----------------------------------------------------------------------------


@quantity("bytes")
def adapter_bytes(model: str, r: int, targets: str, dtype: str) -> int:
    """The adapter file's tensors: trainable parameters × bytes per element of dtype."""
    return params.count_trainable(model, "lora", r=r, target_modules=targets, dtype=dtype).adapter_bytes


@quantity("bytes")
def adapter_fleet_bytes(model: str, r: int, targets: str, dtype: str, count: int) -> int:
    """`count` adapters of the same shape."""
    return count * adapter_bytes(model, r, targets, dtype)


@quantity("bytes")
def weights_bytes(model: str, dtype: str) -> int:
    """The model's weights stored in dtype (no quantization constants)."""
    return memory.weight_bytes(architectures.get_architecture(model).n_params, dtype)


@quantity("bytes")
def model_fleet_bytes(model: str, dtype: str, count: int) -> int:
    """`count` fully fine-tuned copies of the model."""
    return count * weights_bytes(model, dtype)


@quantity("bytes")
def bytes_per_param_full_ft(part: str) -> float:
    """Mixed-precision AdamW full fine-tuning, per parameter: weights, grads, master, optimizer, total."""
    breakdown = memory.full_ft_bytes_per_param()
    if part not in breakdown:
        raise ValueError(f"part: must be one of {sorted(breakdown)}, got {part!r}")
    return breakdown[part]


@quantity("bytes")
def full_ft_bytes(model: str) -> float:
    """Weights, gradients, fp32 master weights and Adam states of full fine-tuning (no activations)."""
    return model_params(model) * bytes_per_param_full_ft("total")


@quantity("bytes")
def lora_state_bytes(model: str, r: int, targets: str) -> float:
    """A LoRA adapter's training state at 16 bytes per trainable parameter (mixed-precision AdamW)."""
    return lora_trainable(model, r, targets) * bytes_per_param_full_ft("total")


def _estimate(model: str, method: str, r: int, targets: str, batch: int, seq: int, ckpt: bool, optimizer: str,
              base_dtype: str, attn: str, kbit: bool = True) -> memory.MemoryEstimate:
    """The estimator with the recipe's defaults (base_dtype "": nf4 for QLoRA, fp32 + bf16 autocast for
    full fine-tuning, bf16 otherwise; kbit: prepare_model_for_kbit_training)."""
    return memory.estimate_memory(
        model, method=method, r=r, target_modules=targets, base_dtype=base_dtype or None, optimizer=optimizer,
        batch_size=batch, seq_len=seq, gradient_checkpointing=ckpt, attn_impl=attn, prepare_kbit=kbit,
    )


@quantity("bytes")
def train_memory(model: str, method: str, r: int, targets: str, batch: int, seq: int, ckpt: bool,
                 optimizer: str = "adamw_torch_fused", base_dtype: str = "", attn: str = "sdpa", kbit: bool = True) -> int:
    """Estimated peak memory of one training step (what torch.cuda.max_memory_allocated reports)."""
    return _estimate(model, method, r, targets, batch, seq, ckpt, optimizer, base_dtype, attn, kbit).total_bytes


@quantity("bytes")
def activation_bytes(model: str, batch: int, seq: int, ckpt: bool, attn: str = "sdpa") -> int:
    """Activations saved for the backward pass of a LoRA step (r=8 on q,v; bf16 base)."""
    return saved_activation_bytes(model, "lora", 8, "q,v", batch, seq, ckpt, attn)


@quantity("bytes")
def saved_activation_bytes(model: str, method: str, r: int, targets: str, batch: int, seq: int, ckpt: bool,
                           attn: str = "sdpa", kbit: bool = True) -> int:
    """Everything the forward keeps for the backward (checkpointing: block inputs + one recomputed block)."""
    return _estimate(model, method, r, targets, batch, seq, ckpt, "adamw_torch_fused", "", attn, kbit).saved_activations_bytes


@quantity("bytes")
def train_memory_part(model: str, method: str, r: int, targets: str, batch: int, seq: int, ckpt: bool, part: str,
                      optimizer: str = "adamw_torch_fused", base_dtype: str = "", attn: str = "sdpa", kbit: bool = True) -> int:
    """One component of the estimated peak (weights, gradients, optimizer_states, activations, ...)."""
    breakdown = _estimate(model, method, r, targets, batch, seq, ckpt, optimizer, base_dtype, attn, kbit).breakdown()
    if part not in breakdown:
        raise ValueError(f"part: must be one of {list(breakdown)}, got {part!r}")
    return breakdown[part]


@quantity("bytes")
def frozen_layer_activation_bytes(model: str, batch: int, seq: int, attn: str = "sdpa") -> int:
    """What one frozen block (no adapters) keeps for the backward pass, in bf16."""
    arch = architectures.get_architecture(model)
    return memory.layer_activation_bytes(arch, batch, seq, act_bytes=2, attn_impl=attn).saved_bytes


@quantity("bytes")
def adapter_activation_bytes(model: str, r: int, targets: str, batch: int, seq: int) -> int:
    """The fp32 input copies (and r-wide outputs of A) that LoRA adapters keep, over all blocks."""
    arch = architectures.get_architecture(model)
    adapted = memory.adapted_modules(arch, params.count_trainable(arch, "lora", r=r, target_modules=targets))
    # adapted_modules lists each kind once; every block holds one of each.
    layer = memory.layer_activation_bytes(arch, batch, seq, act_bytes=2, adapted=adapted, adapter_bytes=4)
    return arch.num_hidden_layers * layer.adapters


@quantity("bytes")
def korthikanti_activation_bytes(model: str, batch: int, seq: int, attn: str = "sdpa") -> int:
    """Korthikanti et al.'s GPT formula s·b·h·(34 + 5as/h) over the model's layers; attn=eager keeps the score term."""
    if attn not in memory.ATTN_IMPLS:
        raise ValueError(f"attn: must be one of {list(memory.ATTN_IMPLS)}, got {attn!r}")
    arch = architectures.get_architecture(model)
    return memory.korthikanti_activation_bytes(arch, batch, seq, with_scores=attn == "eager")


@quantity("bytes")
def eager_attention_bytes(model: str, batch: int, seq: int) -> int:
    """The attention probabilities eager attention keeps (fp32 softmax + bf16 copy), over the model."""
    return memory.eager_scores_bytes(architectures.get_architecture(model), batch, seq, act_bytes=2)


@quantity("bytes")
def checkpoint_bytes(model: str, batch: int, seq: int) -> int:
    """Gradient checkpointing's stored block inputs: L · 2 · T · h bytes in bf16."""
    return memory.checkpointed_inputs_bytes(architectures.get_architecture(model), batch, seq, act_bytes=2)


@quantity("bytes")
def logits_bytes(model: str, batch: int, seq: int) -> int:
    """The causal-LM loss's fp32 buffers at their peak: 12 · T · V bytes."""
    return memory.logits_peak_bytes(batch, seq, architectures.get_architecture(model).vocab_size)


@quantity("count")
def vocab_size(model: str) -> int:
    """Entries in the model's vocabulary (rows of the embedding)."""
    return architectures.get_architecture(model).vocab_size


@quantity("bytes")
def module_bytes(model: str, module: str, dtype: str) -> int:
    """One linear module's weight in dtype: in_features · out_features · bytes per element."""
    return memory.weight_bytes(module_params(model, module), dtype)


@quantity("bytes")
def cuda_context_bytes() -> int:
    """The CUDA context and kernels' share of device memory assumed by the estimator."""
    return memory.DEFAULT_CUDA_CONTEXT_BYTES


@quantity("float")
def optimizer_bytes_per_param(optimizer: str) -> float:
    """Optimizer state per trained fp32 parameter (8-bit AdamW includes its block constants)."""
    return memory.optimizer_state_bytes_per_param(optimizer, "fp32")


@quantity("bytes")
def gpu_memory_bytes(gpu: str) -> int:
    """A GPU's memory as its vendor states it."""
    return get_gpu(gpu).memory_bytes


# --- quantization, rank, scale ---------------------------------------------------------------


@quantity("float")
def nf4_level(index: int) -> float:
    """One of the 16 NF4 levels (0 = -1.0 ... 15 = 1.0)."""
    levels = nf4.nf4_levels()
    if not 0 <= index < len(levels):
        raise ValueError(f"index: must be 0..15, got {index}")
    return levels[index]


@quantity("float")
def nf4_offset() -> float:
    """bitsandbytes' outermost NF4 probability: the mean of 1 − 1/30 and 1 − 1/32."""
    return nf4.NF4_OFFSET


@quantity("float")
def nf4_step(index: int) -> float:
    """The gap between NF4 levels index and index+1 (in units of the block's absmax)."""
    return nf4.level_gap(index)


@quantity("float")
def expected_block_absmax(blocksize: int) -> float:
    """E[max |w|] over a block of standard-normal weights, in σ."""
    return nf4.expected_absmax(blocksize)


@quantity("float")
def nf4_step_sigma(index: int, blocksize: int) -> float:
    """An NF4 level gap in units of σ for a normal block: gap × expected absmax."""
    return nf4.level_gap(index) * nf4.expected_absmax(blocksize)


@quantity("bytes")
def nf4_double_quant_saving(model: str) -> int:
    """Bytes double quantization saves on a QLoRA base (8-bit instead of fp32 block scales)."""
    return nf4_model_bytes(model, double=False) - nf4_model_bytes(model, double=True)


@quantity("bits")
def nf4_bits_per_param(double: bool, blocksize: int = 64) -> float:
    """Bits per parameter spent on quantization constants (on top of the 4 code bits)."""
    return nf4.bits_per_param(blocksize, double_quant=double)


@quantity("bytes")
def nf4_model_bytes(model: str, double: bool) -> int:
    """A QLoRA base in memory: NF4 linear weights (+constants), other weights in bf16."""
    return memory.qlora_base_bytes(architectures.get_architecture(model), double_quant=double)


@quantity("float")
def svd_rel_error(rank: int, intrinsic: int, noise: float, size: int = 128, seed: int = 0) -> float:
    """‖ΔW − ΔW_r‖_F / ‖ΔW‖_F for a rank-`intrinsic` update plus noise (noise = ‖N‖/‖S‖)."""
    update = lowrank.make_low_rank_update(size, size, intrinsic, lowrank.noise_std_for_ratio(size, size, noise), seed)
    return lowrank.svd_error_curve(update.matrix, [rank]).relative_errors[0]


@quantity("float")
def lora_scaling(alpha: float, r: int, rslora: bool = False) -> float:
    """The factor on B·A: α/r, or α/√r with rsLoRA."""
    return scaling.lora_scaling(alpha, r, use_rslora=rslora)


@quantity("ratio")
def loraplus_ratio() -> float:
    """LoRA+'s recommended ratio of B's learning rate to A's."""
    return scaling.LORAPLUS_LR_RATIO


@quantity("count")
def lab_examples(split: str) -> int:
    """Examples in one split of the lab's task (train or test: held-out requests)."""
    return lab_task.lab_examples(split)


# --- α/r measured: the rank sweep (calculators.rank_sweep) ---------------------------------------


@quantity("float")
def alpha_first_step_exponent(optimizer: str, rule: str) -> float:
    """k in (first-step loss decrease) ∝ r^k for a scale convention: 0 means rank-neutral."""
    return rank_sweep.first_step_exponent(optimizer, rule)


@quantity("float")
def alpha_scale(rule: str, r: int) -> float:
    """The factor s on B·A at rank r under a convention (all three give s = 2 at r = 8)."""
    return rank_sweep.scale_for(rule, r)


@quantity("float")
def alpha_best_lr_ratio(rule: str) -> float:
    """Best Adam learning rate at r = 32 over that at r = 2 (1 means the learning rate transfers across ranks)."""
    return rank_sweep.learning_rate_sweep(rule).best_lr_ratio()


@quantity("float")
def alpha_best_lr_log2(rule: str, r: int) -> float:
    """log₂ of the best Adam learning rate at rank r in the sweep."""
    return math.log2(rank_sweep.learning_rate_sweep(rule).best_learning_rate(r))


@quantity("float")
def alpha_sweep_best_loss(rule: str, r: int) -> float:
    """Held-out loss at rank r with its own best learning rate."""
    return rank_sweep.learning_rate_sweep(rule).best_loss(r)


@quantity("float")
def alpha_sweep_transfer_loss(rule: str, r: int, tuned_at: int) -> float:
    """Held-out loss at rank r when trained with the learning rate that was best at rank `tuned_at`."""
    sweep = rank_sweep.learning_rate_sweep(rule)
    return sweep.loss_at(r, sweep.best_learning_rate(tuned_at))


@quantity("float")
def alpha_sweep_base_loss() -> float:
    """Held-out loss of the frozen base layer in the sweep's task (before any training)."""
    return rank_sweep.learning_rate_sweep("fixed-alpha").base_loss


# --- serving many adapters (calculators.serving) ---------------------------------------------------


@quantity("bytes")
def serving_shared_bytes(model: str, r: int, targets: str, count: int) -> int:
    """One bf16 base plus `count` unmerged bf16 adapters."""
    return serving.serving_memory(model, count, r, targets).shared_base_bytes


@quantity("count")
def serving_adapters_per_copy(model: str, r: int, targets: str) -> int:
    """How many bf16 adapters fit in the memory of one more bf16 copy of the base."""
    return serving.serving_memory(model, 1, r, targets).adapters_per_base_copy


@quantity("percent")
def serving_prefill_overhead(model: str, r: int, targets: str) -> float:
    """Extra multiply-adds of an unmerged adapter per token, over all of the model's linear layers (%)."""
    return 100.0 * serving.prefill_flop_overhead(model, r, targets)


@quantity("percent")
def serving_decode_overhead(model: str, r: int, targets: str, adapters: int) -> float:
    """Extra bytes a memory-bound decode step reads for `adapters` distinct adapters in the batch (%)."""
    return 100.0 * serving.decode_read_overhead(model, r, adapters, targets)


@quantity("float")
def adapter_swap_ms(model: str, r: int, targets: str) -> float:
    """Milliseconds to move one bf16 adapter over PCIe 4.0 x16 at its nominal rate."""
    return 1e3 * serving.transfer_seconds(serving.serving_memory(model, 1, r, targets).adapter_bytes)


@quantity("float")
def model_swap_ms(model: str) -> float:
    """Milliseconds to move one bf16 copy of the model over PCIe 4.0 x16 at its nominal rate."""
    return 1e3 * serving.transfer_seconds(weights_bytes(model, "bf16"))


@quantity("float")
def pcie4_x16_gb_per_s() -> float:
    """PCIe 4.0 x16 in one direction, 10⁹ bytes per second (16 GT/s × 16 lanes × 128/130)."""
    return serving.PCIE4_X16_BYTES_PER_S / 1e9


# --- preference tuning and layer-selective training -----------------------------------------------


def _preference(model: str, algorithm: str, method: str, r: int, targets: str, prompts: int, seq: int,
                group: int) -> preference.PreferenceStep:
    return preference.preference_step(model, algorithm, method, r=r, target_modules=targets, prompts=prompts,
                                      seq_len=seq, group_size=group)


@quantity("bytes")
def preference_memory(model: str, algorithm: str, method: str, r: int = 16, targets: str = "all-linear",
                      prompts: int = 1, seq: int = 1024, group: int = 8) -> int:
    """Peak of one SFT/DPO/GRPO step: training or sampling phase, plus a reference copy for full fine-tuning."""
    return _preference(model, algorithm, method, r, targets, prompts, seq, group).total_bytes


@quantity("bytes")
def preference_part(model: str, algorithm: str, method: str, part: str, r: int = 16, targets: str = "all-linear",
                    prompts: int = 1, seq: int = 1024, group: int = 8) -> int:
    """One part of a preference step: train, reference, generation or kv_cache bytes."""
    step = _preference(model, algorithm, method, r, targets, prompts, seq, group)
    parts = {"train": step.train_bytes, "reference": step.reference_weights_bytes,
             "generation": step.generation_bytes, "kv_cache": step.kv_cache_bytes}
    if part not in parts:
        raise ValueError(f"part: must be one of {list(parts)}, got {part!r}")
    return parts[part]


@quantity("float")
def preference_forward_passes(model: str, algorithm: str, method: str, r: int = 16, targets: str = "all-linear",
                              prompts: int = 1, seq: int = 1024, group: int = 8) -> float:
    """Matmul work of one step in forward passes of one sequence (policy, reference, sampling)."""
    return _preference(model, algorithm, method, r, targets, prompts, seq, group).forward_passes


@quantity("count")
def selective_trainable(model: str, fraction: float) -> int:
    """Spectrum-style: parameters of the top `fraction` of each linear module kind, trained in full."""
    return selective.selective_training(model, fraction).trainable


@quantity("percent")
def selective_percent(model: str, fraction: float) -> float:
    """Those parameters as a percentage of the model."""
    return selective.selective_training(model, fraction).percent


@quantity("bytes")
def selective_state_bytes(model: str, fraction: float) -> int:
    """bf16 weights plus gradients, fp32 master and Adam moments of the trained fraction (no activations)."""
    return selective.selective_training(model, fraction).state_bytes


# --- the usual tutorials' arithmetic (calculators.usual_figures) -------------------------------------


@quantity("bytes")
def nominal_bytes(params: float, bytes_per_param: float) -> float:
    """A nominal parameter count times bytes per parameter: the shortcut behind many quoted figures."""
    return usual_figures.nominal_bytes(params, bytes_per_param)


@quantity("float")
def normal_init_std(gain: float, fan: int) -> float:
    """Standard deviation of randn · √(gain/fan)."""
    return usual_figures.normal_init_std(gain, fan)


@quantity("float")
def kaiming_uniform_std(fan_in: int) -> float:
    """Standard deviation of peft's lora_A initialisation, U(−1/√fan_in, 1/√fan_in)."""
    return usual_figures.kaiming_uniform_std(fan_in)


@quantity("float")
def smallest_nf4_level(symmetric: bool) -> float:
    """|level| nearest zero: the symmetric 16-quantile formula's, or real NF4's (exactly 0)."""
    return usual_figures.smallest_level_magnitude(symmetric)


@quantity("count")
def peft_total_params(model: str, r: int, targets: str) -> int:
    """What print_trainable_parameters() reports as 'all params': the base plus the adapter."""
    return params.count_trainable(model, "lora", r=r, target_modules=targets).total


@quantity("float")
def optimizer_8bit_bytes_per_param(blocksize: int) -> float:
    """8-bit Adam's state per parameter for a block size: two 1-byte codes plus two fp32 absmax per block."""
    if blocksize < 1:
        raise ValueError(f"blocksize: must be a positive integer, got {blocksize!r}")
    return 2 * (1 + 4 / blocksize)


@quantity("bytes")
def kv_cache_per_token_bytes(model: str, tokens: int = 1) -> int:
    """bf16 keys and values that `tokens` tokens of context occupy in every layer (one sequence)."""
    return preference.kv_cache_bytes(model, 1, tokens)


@quantity("percent")
def gib_over_gb_percent() -> float:
    """How much larger a GiB (2³⁰ bytes) is than a GB (10⁹ bytes), in percent."""
    return 100.0 * (2**30 / 10**9 - 1)


@quantity("count")
def lora_breakeven_rank(model: str, module: str) -> int:
    """The rank at which a module's adapter has as many parameters as the module: in·out / (in + out)."""
    linear = _module(model, module)
    return round(linear.in_features * linear.out_features / (linear.in_features + linear.out_features))


# --- the training recipe: autocast copies, attention heads, what fits -------------------------------


@quantity("bytes")
def autocast_copy_bytes(model: str) -> int:
    """bf16 copies of the fp32 linear weights that autocast makes and keeps in mixed-precision full fine-tuning."""
    return memory.autocast_weight_copies_bytes(model)


@quantity("count")
def model_heads(model: str) -> int:
    """Query heads per attention layer."""
    return architectures.get_architecture(model).num_attention_heads


@quantity("count")
def model_kv_heads(model: str) -> int:
    """Key/value heads per attention layer (fewer than the query heads under grouped-query attention)."""
    return architectures.get_architecture(model).num_key_value_heads


@quantity("count")
def fit_seq_len(model: str, method: str, r: int, targets: str, batch: int, ckpt: bool, gpu: str, kbit: bool = True) -> int:
    """The longest sequence (tokens) whose training step fits the GPU, CUDA context included (0: none)."""
    return memory.longest_fitting_seq_len(model, gpu, method=method, r=r, target_modules=targets, batch_size=batch,
                                          gradient_checkpointing=ckpt, prepare_kbit=kbit)


@quantity("count")
def lab_max_tokens() -> int:
    """Tokens in the longest training example of the lab's task (SmolLM2's chat template)."""
    return lab_task.LAB_TASK_MAX_TOKENS


@quantity("float")
def lab_default(field: str) -> float:
    """One of the lab's default settings (rank, alpha, steps, batch_size, lr, seed)."""
    return lab_task.lab_default(field)


@quantity("bytes")
def lab_accounted_bytes(model: str, method: str, r: int, targets: str, batch: int, seq: int = 0,
                        precision: str = "bf16") -> int:
    """What the lab's CPU accounting counts, as the estimator predicts it (fp32 weights, the steps
    under bf16 autocast or, precision fp32, without; QLoRA: an NF4 base): weights, adapters,
    gradients, optimizer state, saved activations, autocast's weight copies, the answers' logits.
    seq 0: the lab task's longest example (its widest batch)."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision: must be bf16 or fp32, got {precision!r}")
    seq = seq or lab_task.LAB_TASK_MAX_TOKENS
    return lab_task.accounted_bytes(model, method, r, targets, batch, seq, autocast=precision == "bf16")


@quantity("count")
def config_value(model: str, key: str) -> int:
    """A shape field of the model's config.json: num_hidden_layers, hidden_size, intermediate_size,
    num_attention_heads, num_key_value_heads, head_dim or vocab_size."""
    keys = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
            "head_dim", "vocab_size")
    if key not in keys:
        raise ValueError(f"key: must be one of {', '.join(keys)}, got {key!r}")
    arch = architectures.get_architecture(model)
    return arch.head_dim or arch.hidden_size // arch.num_attention_heads if key == "head_dim" else getattr(arch, key)
