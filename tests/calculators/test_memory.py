"""calculators.memory: hand-computed cases, invariants (hypothesis) and input validation."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from calculators import memory
from calculators.architectures import Architecture, get_architecture
from calculators.gpus import GPUS, get_gpu
from calculators.memory import estimate_memory

LLAMA2_7B_PARAMS = 6_738_415_616
TOY = Architecture("toy", "Toy", "llama", "llama", "LlamaForCausalLM", hidden_size=64, intermediate_size=128,
                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                   max_position_embeddings=64, tie_word_embeddings=False)
SMALL_DECODERS = ("smollm-135m", "qwen2.5-0.5b", "tinyllama-1.1b", "llama-2-7b", "llama-3-8b", "mistral-7b")
FAST = settings(max_examples=25, deadline=None)


# --- exact cases -------------------------------------------------------------------------


def test_mixed_precision_adamw_is_16_bytes_per_param():
    b = memory.full_ft_bytes_per_param()
    assert (b["weights"], b["grads"], b["master"], b["optimizer"], b["total"]) == (2, 2, 4, 8, 16)
    assert sorted(b) == ["grads", "master", "optimizer", "total", "weights"]
    assert memory.full_ft_bytes_per_param("fp32").total == 4 + 4 + 0 + 8
    assert memory.full_ft_bytes_per_param(master_weights=False).total == 2 + 2 + 4  # pure bf16: bf16 Adam states


def test_llama2_7b_bf16_weights():
    assert memory.weight_bytes(LLAMA2_7B_PARAMS, "bf16") == 2 * 6_738_415_616
    est = estimate_memory("llama-2-7b", method="lora", base_dtype="bf16")
    assert est.weights_bytes == 2 * 6_738_415_616 and est.quant_constants_bytes == 0
    assert est.n_params == LLAMA2_7B_PARAMS


def test_llama2_7b_nf4_double_quant_by_hand():
    # Per layer: 4 attention tensors of 4096², 3 MLP tensors of 4096·11008.
    # Codes n/2; constants (double quant): n/64 one-byte absmax + 4 bytes per 256 blocks + fp32 offset
    # + the 16-entry fp32 code book of each QuantState + the 256-entry fp32 code of its nested state
    # (bitsandbytes 0.50, counted from real QuantStates in tests/training/test_memory_measured.py).
    attn, mlp = 4096 * 4096, 4096 * 11008
    const_attn = attn // 64 + 4 * (attn // 64 // 256) + 4 + 64 + 1024  # 267,332
    const_mlp = mlp // 64 + 4 * (mlp // 64 // 256) + 4 + 64 + 1024  # 716,612
    assert (const_attn, const_mlp) == (267_332, 716_612)
    quantized = 32 * (4 * attn + 3 * mlp)
    dense = LLAMA2_7B_PARAMS - quantized  # embeddings, lm_head, norms stay bf16
    assert dense == 2 * 32000 * 4096 + 65 * 4096
    base = memory.base_weights(get_architecture("llama-2-7b"), "nf4", double_quant=True)
    assert base.weights_bytes == quantized // 2 + 2 * dense == 3_762_823_168
    assert base.quant_constants_bytes == 32 * (4 * const_attn + 3 * const_mlp) == 103_013_248
    assert memory.qlora_base_bytes("llama-2-7b") == base.total_bytes
    single = memory.base_weights(get_architecture("llama-2-7b"), "nf4", double_quant=False)
    assert single.quant_constants_bytes == 32 * (4 * (attn // 64 * 4 + 64) + 3 * (mlp // 64 * 4 + 64))


def test_int8_base_keeps_a_scale_per_row():
    base = memory.base_weights(TOY, "int8")
    per_layer_rows = 64 + 32 + 32 + 64 + 128 + 128 + 64
    assert base.quant_constants_bytes == 2 * 4 * per_layer_rows
    assert base.weights_bytes == base.quantized_params + 2 * base.dense_params


def test_toy_layer_activations_by_hand():
    # T = 2·16 = 32 tokens, h 64, i 128, q 64, kv 32, 4 heads; LoRA r=8 on q_proj and v_proj.
    q_proj, v_proj = (m for m in TOY.linear_modules() if m.name in ("q_proj", "v_proj"))
    lora = memory.layer_activation_bytes(TOY, 2, 16, adapted=[(q_proj, 8), (v_proj, 8)])
    assert lora.norms == 2 * (4 * 32 * 64 + 4 * 32)  # two fp32 RMSNorm upcasts and their fp32 rsqrt
    assert lora.attention == 2 * 32 * (2 * 64 + 2 * 32) + 4 * 2 * 4 * 16  # q,k,v,out + fp32 logsumexp
    assert lora.mlp == 3 * 2 * 32 * 128  # gate, up, silu(gate)
    assert lora.adapters == 2 * 4 * 32 * (64 + 8)  # fp32 x and x·Aᵀ per adapted module
    assert lora.linear_inputs == 0  # frozen base linears keep no input
    assert lora.saved_bytes == 72_448
    full = memory.layer_activation_bytes(TOY, 2, 16, base_trainable=True)
    # each norm also keeps its normalized input (the weight's gradient); the linears keep each norm's
    # output once (q, k, v share one, gate and up another) and down_proj's input; o_proj's input is
    # the sdpa output flash already keeps in (b, s, a·d) layout.
    assert full.norms == 2 * (4 * 32 * 64 + 4 * 32 + 2 * 32 * 64)
    assert full.linear_inputs == 2 * 2 * 32 * 64 + 2 * 32 * 128
    assert full.saved_bytes == 78_592
    eager = memory.layer_activation_bytes(TOY, 2, 16, attn_impl="eager")
    assert eager.attention == 2 * 32 * 3 * 64 + (4 + 2) * 2 * 4 * 16 * 16  # q, repeated k, v; fp32 + bf16 probs


def test_logits_peak_is_twelve_bytes_per_logit():
    assert memory.logits_peak_bytes(2, 512, 128_256) == 12 * 2 * 512 * 128_256
    est = estimate_memory("llama-3-8b", method="qlora", seq_len=4096, gradient_checkpointing=True)
    assert est.phase("loss backward").logits_and_loss == 12 * 4096 * 128_256
    # the loss's forward: bf16 logits + their fp32 copy + the log-probs; prepared QLoRA's lm_head is fp32 already
    lora = estimate_memory("llama-3-8b", method="lora", seq_len=4096, gradient_checkpointing=True)
    assert lora.phase("loss forward").logits_and_loss == (2 + 4 + 4) * 4096 * 128_256
    assert est.phase("loss forward").logits_and_loss == (4 + 4) * 4096 * 128_256


def test_lora_state_is_16_bytes_per_trainable_param():
    est = estimate_memory("llama-2-7b", method="lora", r=16, target_modules="all-linear")
    assert est.trainable_params == 39_976_960
    assert est.adapter_weights_bytes == 4 * est.trainable_params  # fp32 adapters (peft autocast_adapter_dtype)
    assert est.optimizer_states_bytes == 8 * est.trainable_params
    assert est.master_weights_bytes == 0
    grads = next(p for p in est.phases if p.name == "optimizer step").gradients
    assert grads == 4 * est.trainable_params


def test_full_ft_optimizer_step_is_16_bytes_per_param():
    # mixed precision (the default): fp32 weights 4 + fp32 grads 4 + Adam 8
    est = estimate_memory("tinyllama-1.1b", method="full", seq_len=128)
    assert (est.base_dtype, est.autocast) == ("fp32", True)
    assert est.phase("optimizer step").total_bytes == 16 * est.n_params
    # ZeRO's accounting: bf16 weights 2 + bf16 grads 2 + fp32 master 4 + Adam 8
    zero = estimate_memory("tinyllama-1.1b", method="full", base_dtype="bf16", master_weights=True, seq_len=128)
    assert zero.phase("optimizer step").total_bytes == 16 * est.n_params
    # pure bf16: weights, grads and torch's zeros_like(p) Adam states all bf16
    pure = estimate_memory("tinyllama-1.1b", method="full", base_dtype="bf16", seq_len=128)
    assert pure.phase("optimizer step").total_bytes == 8 * pure.n_params
    # foreach AdamW (adamw_torch) adds sqrt(v) for every parameter during the step
    foreach = estimate_memory("tinyllama-1.1b", method="full", seq_len=128, optimizer="adamw_torch")
    assert foreach.phase("optimizer step").total_bytes == (16 + 4) * est.n_params


def test_8bit_adamw_states():
    est = estimate_memory("llama-2-7b", method="lora", r=16, target_modules="q,v", optimizer="adamw8bit")
    assert est.optimizer == "adamw_bnb_8bit"  # the old name is an alias of transformers' spelling
    # A: 16×4096 and B: 4096×16 on q and v in 32 layers; 65,536 values → 256 blocks of 256;
    # plus the two 256-entry fp32 quantization maps every 8-bit state shares.
    assert est.optimizer_states_bytes == 32 * 4 * 2 * (65_536 + 4 * 256) + 2 * 256 * 4
    paged_qv = estimate_memory("llama-2-7b", method="lora", target_modules="q,v", optimizer="paged_adamw_8bit")
    assert paged_qv.paged_optimizer_bytes == 0  # every tensor under bitsandbytes' 100,000-element paging threshold
    # all linear layers: gate's and up's B (11008 × 16) and down's A (16 × 11008) have 176,128 elements, 688 blocks
    paged = estimate_memory("llama-2-7b", method="lora", optimizer="paged_adamw_8bit")
    assert paged.paged_optimizer_bytes == 32 * 3 * 2 * (176_128 + 4 * 688) == 34_344_960
    full = estimate_memory("llama-2-7b", method="full", optimizer="paged_adamw_32bit", seq_len=64)
    embedding = 32_000 * 4096
    assert full.paged_optimizer_bytes >= 8 * embedding and any("unified memory" in n for n in full.notes)
    assert estimate_memory("llama-2-7b", method="lora", optimizer="sgd").optimizer_states_bytes == 0


def test_adafactor_keeps_a_row_and_a_column():
    # transformers' Adafactor (no first moment): fp32 row and column statistics per matrix, a full vector per vector
    est = estimate_memory("llama-2-7b", method="lora", r=16, target_modules="q,v", optimizer="adafactor")
    assert est.optimizer_states_bytes == 32 * 2 * 4 * ((16 + 4096) + (4096 + 16))


def test_breakdown_sums_to_total_and_context_is_separate():
    est = estimate_memory("mistral-7b", method="qlora", batch_size=2, seq_len=1024, cuda_context_bytes=400 * 2**20)
    assert sum(est.breakdown().values()) == est.total_bytes
    assert est.total_with_context_bytes == est.total_bytes + 400 * 2**20
    assert est.total_bytes == max(p.total_bytes for p in est.phases)


def test_gpu_catalogue_and_verdicts():
    names = {g.name for g in GPUS}
    for wanted in ("RTX 3090 24 GB", "RTX 4090 24 GB", "RTX A6000 48 GB", "L40S 48 GB", "A100 40 GB", "A100 80 GB",
                   "H100 80 GB", "H200 141 GB"):
        assert wanted in names
    assert get_gpu("h100-80gb").memory_bytes == 80 * 2**30
    assert get_gpu("rtx-3090").usable_bytes == 24_576 * 2**20
    # At the edge: nvidia-smi shows an RTX 4090 with 24,564 MiB, an RTX 3090 with 24,576 MiB, an L4 with 23,034 MiB.
    mib = 2**20
    exact = {v.slug: v for v in memory.gpu_verdicts(24_564 * mib)}
    assert exact["rtx-4090"].fits and exact["rtx-4090"].headroom_bytes == 0
    assert exact["rtx-3090"].fits and exact["rtx-3090"].headroom_bytes == 12 * mib
    assert not exact["l4"].fits and exact["l4"].headroom_bytes == -1_530 * mib
    over = {v.slug: v for v in memory.gpu_verdicts(24_564 * mib + 1)}
    assert not over["rtx-4090"].fits and over["rtx-4090"].headroom_bytes == -1
    est = estimate_memory("llama-2-7b", method="qlora", seq_len=1024, gradient_checkpointing=True)
    assert all(v.fits for v in est.verdicts if v.memory_bytes >= 24 * 2**30)
    assert not any(v.fits for v in estimate_memory("llama-2-70b", method="full").verdicts)


def test_memory_vs_model_size_curves():
    curves = memory.memory_vs_model_size(seq_len=512)
    sizes = [m.n_params for m in curves.models]
    assert sizes == sorted(sizes) and sizes[0] < 0.6e9 and sizes[-1] > 60e9
    for point in curves.models:
        full, lora, qlora = (point.by_method(m).total_bytes for m in ("full", "lora", "qlora"))
        assert qlora < lora < full  # checkpointing on, 512 tokens: the weights decide
    xs, ys = curves.series("qlora")
    assert len(xs) == len(ys) == len(curves.models)


# --- invariants --------------------------------------------------------------------------

models = st.sampled_from(SMALL_DECODERS)
methods = st.sampled_from(("full", "lora", "qlora", "dora"))
batches = st.integers(1, 16)
seqs = st.integers(1, 8192)


@FAST
@given(models, methods, batches, seqs, st.booleans(), st.sampled_from(memory.ATTN_IMPLS))
def test_total_is_monotone_in_batch_and_seq(model, method, batch, seq, ckpt, attn):
    kw = dict(method=method, gradient_checkpointing=ckpt, attn_impl=attn)
    base = estimate_memory(model, batch_size=batch, seq_len=seq, **kw).total_bytes
    assert estimate_memory(model, batch_size=batch + 1, seq_len=seq, **kw).total_bytes >= base
    assert estimate_memory(model, batch_size=batch, seq_len=seq + 1, **kw).total_bytes >= base


@FAST
@given(models, methods, batches, seqs, st.sampled_from(memory.ATTN_IMPLS))
@example("llama-3-8b", "lora", 3, 5, "eager")  # found by a full suite run: 1.2 MB more with checkpointing at 15 tokens
def test_checkpointing_never_increases_activations(model, method, batch, seq, attn):
    kw = dict(method=method, batch_size=batch, seq_len=seq, attn_impl=attn)
    on = estimate_memory(model, gradient_checkpointing=True, **kw)
    off = estimate_memory(model, gradient_checkpointing=False, **kw)
    assert on.saved_activations_bytes <= off.saved_activations_bytes
    if method == "dora":
        # DoRA recomputes its weight norm (three fp32 copies of the biggest weight) while the other
        # gradients exist: at short sequences checkpointing can raise DoRA's peak
        return
    # at a handful of tokens the recomputed block can outweigh what checkpointing saves: never by more
    # than that one block holds (what it keeps plus its forward and backward transients)
    block = on.layer
    assert on.total_bytes <= off.total_bytes + block.saved_bytes + block.forward_workspace + block.backward_workspace


@FAST
@given(st.sampled_from(SMALL_DECODERS[2:]), st.integers(1, 4), st.integers(1, 1024))
def test_with_checkpointing_qlora_below_lora_below_full(model, batch, seq):
    kw = dict(batch_size=batch, seq_len=seq, gradient_checkpointing=True)
    totals = [estimate_memory(model, method=m, **kw).total_bytes for m in ("qlora", "lora", "full")]
    assert totals[0] < totals[1] < totals[2]


def test_qlora_without_checkpointing_can_need_more_than_bf16_lora():
    """prepare_model_for_kbit_training makes the hidden states fp32 and, with grouped-query heads,
    sends SDPA to the math kernel: at 4 × 2,048 tokens QLoRA on TinyLlama needs far more than LoRA."""
    kw = dict(batch_size=4, seq_len=2048, gradient_checkpointing=False)
    qlora = estimate_memory("tinyllama-1.1b", method="qlora", **kw)
    lora = estimate_memory("tinyllama-1.1b", method="lora", **kw)
    assert (qlora.residual_dtype, qlora.attention_kernel, lora.attention_kernel) == ("fp32", "math", "flash")
    assert qlora.total_bytes > 2.5 * lora.total_bytes
    # with checkpointing (or without the preparation) the order is the familiar one again
    assert estimate_memory("tinyllama-1.1b", method="qlora", batch_size=4, seq_len=2048,
                           gradient_checkpointing=True).total_bytes < lora.total_bytes
    assert estimate_memory("tinyllama-1.1b", method="qlora", prepare_kbit=False, **kw).total_bytes < lora.total_bytes


def test_lora_activations_can_outgrow_full_ft_on_tiny_models():
    """peft casts x to the fp32 adapter dtype in every adapted module and keeps it: with all
    seven Llama linears adapted and many tokens, a 135M model's LoRA step outweighs full FT."""
    kw = dict(batch_size=1, seq_len=8192, target_modules="all-linear")
    lora = estimate_memory("smollm-135m", method="lora", **kw)
    full = estimate_memory("smollm-135m", method="full", **kw)
    assert lora.saved_activations_bytes > full.saved_activations_bytes and lora.total_bytes > full.total_bytes
    assert estimate_memory("smollm-135m", method="lora", **{**kw, "target_modules": "q,v"}).total_bytes < full.total_bytes


@FAST
@given(models, methods, batches, st.integers(128, 8192), st.booleans())
def test_flash_never_above_eager(model, method, batch, seq, ckpt):
    """From a few dozen tokens on: below that eager's b·a·s² probabilities weigh less than the
    attention output flash keeps (eager keeps no output), so eager is genuinely smaller."""
    kw = dict(method=method, batch_size=batch, seq_len=seq, gradient_checkpointing=ckpt)
    assert estimate_memory(model, attn_impl="flash", **kw).total_bytes <= estimate_memory(model, attn_impl="eager", **kw).total_bytes


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -1}, "batch_size"),
        ({"seq_len": 0}, "seq_len"),
        ({"r": 0}, "r"),
        ({"optimizer": "adam-9000"}, "optimizer"),
        ({"optimizer": "adamw", "fused_optimizer": "yes"}, "fused_optimizer"),
        ({"prepare_kbit": "yes"}, "prepare_kbit"),
        ({"autocast": 1}, "autocast"),
        ({"attention_kernel": "cudnn"}, "attention_kernel"),
        ({"method": "lokr"}, "method"),
        ({"base_dtype": "fp8"}, "base_dtype"),
        ({"method": "qlora", "base_dtype": "bf16"}, "base_dtype"),
        ({"method": "full", "base_dtype": "nf4"}, "base_dtype"),
        ({"method": "full", "base_dtype": "int8"}, "base_dtype"),
        ({"attn_impl": "xformers"}, "attn_impl"),
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"gradient_checkpointing": "yes"}, "gradient_checkpointing"),
        ({"master_weights": True, "method": "lora"}, "master_weights"),
        ({"momentum": 0.9, "optimizer": "adamw"}, "momentum"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"target_modules": "not_a_module"}, "target_modules"),
    ],
)
def test_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        estimate_memory("llama-2-7b", **kwargs)


def test_unknown_model_and_gpu_name_the_field():
    with pytest.raises(ValueError, match="^model:"):
        estimate_memory("gpt-5")
    with pytest.raises(ValueError, match="^gpu:"):
        get_gpu("rtx-9090")
    with pytest.raises(ValueError, match="^n_params:"):
        memory.weight_bytes(-1, "bf16")


def test_autocast_keeps_a_bf16_copy_of_every_linear_weight():
    # Llama-2-7B: every parameter but the embedding (32,000 × 4,096) and the 65 norm vectors is a linear weight
    linear = LLAMA2_7B_PARAMS - 32_000 * 4096 - 65 * 4096
    assert memory.autocast_weight_copies_bytes("llama-2-7b") == 2 * linear == 13_214_154_752
    est = estimate_memory("llama-2-7b", method="full", seq_len=256)  # fp32 weights + bf16 autocast, no checkpointing
    assert est.phase("loss backward").weight_copies == 2 * linear


def test_longest_fitting_sequence_is_the_edge():
    kw = dict(method="qlora", r=16, target_modules="all-linear", batch_size=1, gradient_checkpointing=True)
    longest = memory.longest_fitting_seq_len("llama-2-70b", "rtx-a6000", **kw)
    fits = {s: estimate_memory("llama-2-70b", seq_len=s, gpus=(get_gpu("rtx-a6000"),), **kw).verdicts[0].fits
            for s in (longest, longest + 1)}
    assert fits == {longest: True, longest + 1: False}
    assert 0 < memory.longest_fitting_seq_len("llama-2-70b", "rtx-a6000", **{**kw, "gradient_checkpointing": False}) < longest
    assert memory.longest_fitting_seq_len("llama-2-70b", "rtx-4090", method="full") == 0
