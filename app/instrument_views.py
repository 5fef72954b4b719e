"""Instrument views: validate the reader's settings, call one calculator, shape the context.

Each view returns plain data for its template: headline numbers, table rows and Plotly
figure dicts (app.figures). The maths is all in `calculators`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app.figures import plotly as figures
from app.formatting import GIB, format_bytes, format_count_short, format_gpu_bytes, format_int
from app.errors import calculator_input
from app.queries import AttnImpl, BaseDtype, Optimizer, StrictQuery, split_modules
from pydantic import field_validator


class ConfiguratorQuery(StrictQuery):
    model: str = Field("llama-2-7b", max_length=64)
    method: Literal["full", "lora", "qlora", "dora", "ia3", "prefix", "prompt"] = "lora"
    rank: int = Field(16, ge=1, le=1024)
    alpha: float = Field(32.0, gt=0, le=4096)
    rslora: bool = False
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    dropout: float = Field(0.05, ge=0, lt=1)
    seq_len: int = Field(2048, ge=16, le=131072)
    batch_size: int = Field(1, ge=1, le=256)
    gradient_checkpointing: bool = True
    optimizer: Optimizer = "adamw_torch_fused"
    prepare_kbit: bool = True
    base_dtype: BaseDtype = "bf16"
    attn_impl: AttnImpl = "sdpa"
    num_virtual_tokens: int = Field(20, ge=1, le=512)

    _split = field_validator("target_modules", mode="before")(split_modules)


class WillItFitQuery(StrictQuery):
    model: str = Field("llama-3-8b", max_length=64)
    rank: int = Field(16, ge=1, le=1024)
    seq_len: int = Field(2048, ge=16, le=131072)
    batch_size: int = Field(1, ge=1, le=256)
    gradient_checkpointing: bool = True
    prepare_kbit: bool = True


class Nf4ViewerQuery(StrictQuery):
    distribution: Literal["normal", "heavy-tailed", "outliers"] = "normal"
    blocksize: int = Field(64, ge=16, le=1024)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    model: str = Field("llama-2-70b", max_length=64)


class SvdRankQuery(StrictQuery):
    intrinsic_rank: int = Field(8, ge=1, le=64)
    noise: float = Field(0.05, ge=0, le=1)
    size: int = Field(128, ge=16, le=512)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class ScalingQuery(StrictQuery):
    alpha: float = Field(16.0, gt=0, le=1024)
    rank: int = Field(16, ge=1, le=4096)
    max_rank: int = Field(512, ge=8, le=4096)
    lr: float = Field(2e-4, gt=0, le=1, description="LoRA+: the learning rate of A")
    loraplus_lr_ratio: float = Field(16.0, ge=1, le=256, description="LoRA+: λ = learning rate of B / of A")


METHOD_LABELS = {"full": "Full fine-tuning", "lora": "LoRA", "qlora": "QLoRA", "dora": "DoRA", "ia3": "(IA)³",
                 "prefix": "Prefix tuning", "prompt": "Prompt tuning"}
COMPONENT_LABELS = {
    "weights": "Base weights", "quant_constants": "Quantization constants", "adapter_weights": "Adapter weights",
    "gradients": "Gradients", "optimizer_states": "Optimizer states", "master_weights": "Master weights (fp32)",
    "weight_copies": "16-bit weight copies (autocast)",
    "activations": "Activations", "logits_and_loss": "Logits and loss", "temporary": "Temporary buffers",
}
# One card per memory class the issue asks for: 24, 48, 80 and 141 GB.
VERDICT_GPUS = ("rtx-4090", "rtx-a6000", "h100-80gb", "h200-141gb")
PRESET_LABELS = {"q,v": "q,v", "attention": "attention", "all-linear": "all linear"}


def _headroom(headroom_bytes: int) -> str:
    return f"{format_gpu_bytes(headroom_bytes)} free" if headroom_bytes >= 0 else f"short by {format_gpu_bytes(-headroom_bytes)}"


def _module_choices(arch: Any) -> list[str]:
    """Checkbox names: the family's preset names first (peft's spelling), then any other block linear."""
    from calculators.architectures import presets

    names: list[str] = []
    for preset in presets(arch).values():
        names.extend(n for n in preset if n not in names)
    names.extend(m.name for m in arch.linear_modules() if m.group in ("attention", "mlp") and m.name not in names)
    return names


def _chosen_targets(arch: Any, requested: list[str], notes: list[str]) -> tuple[str, ...]:
    """The reader's modules, resolved for this family; switching model keeps what still exists."""
    from calculators.architectures import presets, resolve_targets

    family_presets = presets(arch)
    if len(requested) == 1 and requested[0] in family_presets:
        return family_presets[requested[0]]
    choices = _module_choices(arch)
    kept = [name for name in requested if name in choices]
    dropped = [name for name in requested if name not in choices]
    if dropped:
        notes.append(f"{arch.display_name} has no module named {', '.join(dropped)}; "
                     f"its names are {', '.join(choices)}.")
    if not kept:
        notes.append("No target module selected: showing the q,v preset.")
        return family_presets["q,v"]
    with calculator_input({"target_modules": "target_modules"}):
        return resolve_targets(arch, kept)


def _recipe_line(estimate: Any) -> str:
    """What the estimate assumes, in the reader's terms: dtypes, the attention kernel, the optimizer."""
    parts = [f"hidden states {estimate.residual_dtype}"]
    if estimate.autocast:
        parts.append("bf16 autocast")
    if estimate.base_dtype in ("nf4", "int8"):
        parts.append("prepare_model_for_kbit_training" if estimate.prepare_kbit else "no kbit preparation")
    parts.append(f"{estimate.attention_kernel} attention kernel")
    parts.append(f"optim={estimate.optimizer}")
    return ", ".join(parts)


def _smallest_fit(verdicts: Any) -> str:
    fitting = sorted((v for v in verdicts if v.fits), key=lambda v: v.usable_bytes)
    return fitting[0].name if fitting else "none listed"


def configurator(q: ConfiguratorQuery) -> dict[str, Any]:
    """Trainable parameters (peft's count) and the peak memory of one training step."""
    from calculators import memory, params, scaling as sc
    from calculators.architectures import get_architecture, presets
    from calculators.optimizers import OPTIMIZER_LABELS, canonical_optimizer

    notes: list[str] = []
    with calculator_input():
        arch = get_architecture(q.model)
    adapter_method = q.method in ("lora", "qlora", "dora")
    targets = _chosen_targets(arch, q.target_modules, notes) if adapter_method else ()
    base_dtype = q.base_dtype
    if q.method == "qlora" and base_dtype != "nf4":
        if base_dtype != "bf16":
            notes.append("QLoRA keeps the base in NF4: the base-weights setting is overridden.")
        base_dtype = "nf4"
    elif q.method != "qlora" and base_dtype == "nf4":
        notes.append("An NF4 base with adapters is QLoRA: choose the QLoRA method to train on a 4-bit base.")
        base_dtype = "bf16"
    memory_method = "rslora" if q.method == "lora" and q.rslora else q.method
    with calculator_input():
        counted = params.count_trainable(arch, {"qlora": "lora"}.get(memory_method, memory_method), r=q.rank,
                                         target_modules=targets or "q,v", num_virtual_tokens=q.num_virtual_tokens)
        estimate = memory.estimate_memory(
            arch, method=memory_method, r=q.rank, target_modules=targets or "q,v", base_dtype=base_dtype,
            optimizer=q.optimizer, batch_size=q.batch_size, seq_len=q.seq_len,
            gradient_checkpointing=q.gradient_checkpointing, attn_impl=q.attn_impl,
            lora_dropout=q.dropout if adapter_method else 0.0, num_virtual_tokens=q.num_virtual_tokens,
            prepare_kbit=q.prepare_kbit,
        )
        # the comparison bar: mixed-precision full fine-tuning (fp32 weights, bf16 autocast) with the same optimizer
        full = estimate if q.method == "full" else memory.estimate_memory(
            arch, method="full", optimizer=q.optimizer, batch_size=q.batch_size, seq_len=q.seq_len,
            gradient_checkpointing=q.gradient_checkpointing, attn_impl=q.attn_impl,
        )
        scale = sc.lora_scaling(q.alpha, q.rank, use_rslora=q.rslora) if adapter_method else None
    notes.extend(estimate.notes)

    breakdown = estimate.breakdown()
    memory_rows = [{"label": COMPONENT_LABELS[k], "value": format_gpu_bytes(v), "total": False} for k, v in breakdown.items()]
    memory_rows += [
        {"label": "Peak allocated (max_memory_allocated)", "value": format_gpu_bytes(estimate.total_bytes), "total": True},
        {"label": "+ CUDA context", "value": format_gpu_bytes(estimate.cuda_context_bytes), "total": False},
        {"label": "On the device", "value": format_gpu_bytes(estimate.total_with_context_bytes), "total": True},
    ]
    by_slug = {v.slug: v for v in estimate.verdicts}
    verdicts = [{"name": by_slug[s].name, "fits": by_slug[s].fits, "headroom": _headroom(by_slug[s].headroom_bytes)}
                for s in VERDICT_GPUS]

    module_rows = [
        {"name": m.path or m.name, "shape": f"{m.in_features:,} → {m.out_features:,}", "count": f"{m.count:,}",
         "trainable": format_int(m.n_params)}
        for m in counted.per_module
    ]
    bars_labels = [m.path or m.name for m in counted.per_module]
    bars_values = [m.n_params for m in counted.per_module]
    trained_note = {
        "full": f"Full fine-tuning trains every parameter: {format_int(counted.trainable)}, no adapter.",
        "prefix": f"Prefix tuning trains {q.num_virtual_tokens} virtual key and value vectors in each of the "
                  f"{arch.num_hidden_layers} layers: {format_int(counted.trainable)} parameters.",
        "prompt": f"Prompt tuning trains {q.num_virtual_tokens} virtual token embeddings of width {arch.hidden_size:,}: "
                  f"{format_int(counted.trainable)} parameters.",
    }.get(q.method)

    stacks_for = [("This configuration", estimate)] + ([] if q.method == "full" else [("Full fine-tuning", full)])
    gpu_lines = [(by_slug[s].memory_bytes / GIB, f"{by_slug[s].memory_bytes / GIB:.0f} GB") for s in VERDICT_GPUS]
    percent = counted.percent
    return {
        "model_options": model_options(),
        "base_dtype": base_dtype,
        "trained_note": trained_note,
        "announce": f"{METHOD_LABELS[q.method]} on {arch.display_name}: {format_int(counted.trainable)} trainable parameters, "
                    f"peak {format_gpu_bytes(estimate.total_with_context_bytes)}.",
        "optimizer_options": list(OPTIMIZER_LABELS.items()),
        "optimizer": canonical_optimizer(q.optimizer),
        "recipe": _recipe_line(estimate),
        "module_names": _module_choices(arch),
        "selected_modules": list(targets),
        "presets": [(PRESET_LABELS.get(k, k), list(v)) for k, v in presets(arch).items()],
        "adapter_method": adapter_method,
        "headline": {
            "trainable": format_int(counted.trainable),
            "percent": f"{percent:.3f}%" if percent < 1 else f"{percent:.2f}%",
            "adapter": format_bytes(counted.adapter_bytes) if q.method != "full" else "— (whole model)",
            "total": format_gpu_bytes(estimate.total_with_context_bytes),
            "scale": f"{scale:.4g}" if scale is not None else "—",
            "fit": _smallest_fit(estimate.verdicts),
        },
        "memory_rows": memory_rows,
        "peak_phase": estimate.peak_phase,
        "verdicts": verdicts,
        "module_rows": module_rows,
        "notes": notes,
        "figures": {
            "memory": figures.stacked_bar(
                f"Peak memory of one step, {arch.display_name}",
                [label for label, _ in stacks_for],
                [(COMPONENT_LABELS[k], [e.breakdown()[k] / GIB for _, e in stacks_for]) for k in breakdown],
                "GiB", hover_unit="GiB", vlines=gpu_lines,
            ),
            "modules": figures.bars(
                "Trainable parameters per module kind", bars_labels, bars_values, "parameters",
                text=[format_int(v) for v in bars_values], show_text=False,
            ) if bars_values else None,
        },
    }


FIT_METHODS = {"full": "Full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}


def _breakdown_hover(name: str, estimate: Any) -> str:
    parts = [f"<b>{name}</b>: {format_gpu_bytes(estimate.total_with_context_bytes)}"]
    parts += [f"{COMPONENT_LABELS[k]}: {format_gpu_bytes(v)}" for k, v in estimate.breakdown().items() if v]
    return "<br>".join(parts)


def will_it_fit(q: WillItFitQuery) -> dict[str, Any]:
    """Peak memory of full FT, LoRA and QLoRA across real model sizes, with GPU lines."""
    from calculators import memory
    from calculators.architectures import get_architecture
    from calculators.gpus import get_gpu

    with calculator_input():
        selected = get_architecture(q.model)
        models = list(memory.default_curve_models())
        if selected.slug not in models:
            models.append(selected.slug)
        curves = memory.memory_vs_model_size(
            models, methods=tuple(FIT_METHODS), r=q.rank, target_modules="all-linear", batch_size=q.batch_size,
            seq_len=q.seq_len, gradient_checkpointing=q.gradient_checkpointing, prepare_kbit=q.prepare_kbit,
        )
    series = []
    for method, label in FIT_METHODS.items():
        xs, ys = curves.series(method)
        hover = [_breakdown_hover(f"{m.display_name} · {label}", m.by_method(method).estimate) for m in curves.models]
        series.append({"name": label, "x": xs, "y": [y / GIB for y in ys], "text": hover})
    point = next(m for m in curves.models if m.model == selected.slug)
    series.append({
        "name": selected.display_name, "mode": "markers", "marker_size": 13, "color": "#d1495b",
        "x": [point.n_params] * len(FIT_METHODS), "y": [point.by_method(m).total_with_context_bytes / GIB for m in FIT_METHODS],
        "text": [_breakdown_hover(f"{selected.display_name} · {label}", point.by_method(m).estimate)
                 for m, label in FIT_METHODS.items()],
    })
    shapes, notes = [], []
    for slug in VERDICT_GPUS:
        gpu = get_gpu(slug)
        shape, note = figures.hline(gpu.memory_bytes / GIB, gpu.name, log_axis=True)
        shapes.append(shape)
        notes.append(note)
    rows = [
        {"name": m.display_name, "params": format_count_short(m.n_params), "selected": m.model == selected.slug,
         **{method: format_gpu_bytes(m.by_method(method).total_with_context_bytes) for method in FIT_METHODS}}
        for m in curves.models
    ]
    headline = [
        {"label": f"{label}, {selected.display_name}",
         "value": format_gpu_bytes(point.by_method(m).total_with_context_bytes),
         "note": f"smallest card: {_smallest_fit(point.by_method(m).estimate.verdicts)}"}
        for m, label in FIT_METHODS.items()
    ]
    return {
        "model_options": model_options(),
        "headline": headline,
        "rows": rows,
        "figures": {
            "fit": figures.lines(
                "Peak training memory against model size",
                series,
                {"title": {"text": "parameters"}, "type": "log"},
                {"title": {"text": "GiB (with CUDA context)"}, "type": "log", "dtick": 1},
                shapes=shapes, annotations=notes, height=460,
            ),
        },
    }


def model_options() -> list[tuple[str, str]]:
    from calculators.architectures import ARCHITECTURES

    return [(slug, arch.display_name) for slug, arch in ARCHITECTURES.items()]


CODEBOOK_LABELS = {"nf4": "NF4 (normal quantiles)", "int4": "INT4 (uniform)", "fp4": "FP4 (e2m1)"}


def nf4_viewer(q: Nf4ViewerQuery) -> dict[str, Any]:
    """NF4 levels on N(0,1); one sample quantized by three 4-bit code books; constant overhead."""
    from calculators import memory, nf4
    from calculators.architectures import get_architecture

    with calculator_input():
        bins = nf4.nf4_bins()
        density = nf4.normal_pdf_series(z_max=bins.z_max, n_points=241)
        sample = nf4.sample_weights(q.distribution, n=q.blocksize * 64, seed=q.seed)
        stats = [nf4.quantization_error(sample, method, q.blocksize, n_bins=41) for method in ("nf4", "int4", "fp4")]
        arch = get_architecture(q.model)
        # The QLoRA base as bitsandbytes stores it, the same call as the chapter's figures
        # (nf4_model_bytes): NF4 block linears with their constants, embeddings, norms and head in bf16.
        single = memory.base_weights(arch, "nf4", "bf16", double_quant=False, blocksize=q.blocksize)
        double = memory.base_weights(arch, "nf4", "bf16", double_quant=True, blocksize=q.blocksize)
    errors = [
        {
            "label": CODEBOOK_LABELS[s.method], "n_values": f"{sample.size:,}",
            "mse_text": f"{s.mse:.3g}", "mean_text": f"{s.mean_abs_error:.3g}", "max_text": f"{s.max_abs_error:.3g}",
        }
        for s in stats
    ]
    return {
        "model_options": model_options(),
        "error_rows": errors,
        "announce": f"Block size {q.blocksize}: NF4 error {errors[0]['mse_text']}, INT4 {errors[1]['mse_text']}, "
                    f"FP4 {errors[2]['mse_text']}; {arch.display_name} base {format_bytes(double.total_bytes)}.",
        "figures": {
            "levels": figures.nf4_levels_figure(bins, density),
            "errors": figures.error_histograms([(CODEBOOK_LABELS[s.method], s.bin_edges, s.counts) for s in stats]),
        },
        "overhead": {
            "model": arch.display_name,
            "quantized": format_count_short(single.quantized_params),
            "dense": format_count_short(single.dense_params),
            "rows": [
                {"label": "4-bit codes (+ bf16 rest)", "bits": "4.000", "size": format_bytes(single.weights_bytes)},
                {"label": f"+ fp32 absmax per {q.blocksize}", "bits": f"{4 + nf4.bits_per_param(q.blocksize, False):.3f}",
                 "size": format_bytes(single.total_bytes)},
                {"label": "+ double quantization instead",
                 "bits": f"{4 + nf4.bits_per_param(q.blocksize, True):.3f}", "size": format_bytes(double.total_bytes)},
            ],
        },
    }


SVD_TABLE_RANKS = (1, 2, 4, 8, 16, 32, 64)


def svd_rank(q: SvdRankQuery) -> dict[str, Any]:
    """A rank-k update plus noise: truncated-SVD error against r and the spectrum."""
    from calculators import lowrank

    with calculator_input({"noise_ratio": "noise"}):
        update = lowrank.make_low_rank_update(
            q.size, q.size, q.intrinsic_rank, lowrank.noise_std_for_ratio(q.size, q.size, q.noise), q.seed
        )
        ranks = sorted(set(range(1, min(q.size, 4 * q.intrinsic_rank + 16) + 1)))
        curve = lowrank.svd_error_curve(update.matrix, ranks)
    error_at = dict(zip(curve.ranks, curve.relative_errors))
    floor_shape, floor_note = figures.hline(update.noise_floor, f"noise floor {update.noise_floor:.3f}", "#e76f51")
    marker = {"type": "line", "xref": "x", "yref": "paper", "x0": q.intrinsic_rank, "x1": q.intrinsic_rank, "y0": 0, "y1": 1,
              "line": {"color": "#8d99ae", "width": 1, "dash": "dash"}}
    spectrum = curve.singular_values[: len(ranks)]
    return {
        "headline": {
            "at_intrinsic": f"{error_at[q.intrinsic_rank]:.4f}",
            "noise_floor": f"{update.noise_floor:.4f}",
            "at_one": f"{error_at[1]:.4f}",
        },
        "table": [{"r": r, "error": f"{error_at[r]:.4f}"} for r in SVD_TABLE_RANKS if r in error_at],
        "figures": {
            "error": figures.lines(
                "Best rank-r approximation (Eckart–Young)",
                [{"name": "relative error", "x": curve.ranks, "y": curve.relative_errors, "marker_size": 4}],
                {"title": {"text": "rank r"}}, {"title": {"text": "‖ΔW − ΔW_r‖ / ‖ΔW‖"}, "rangemode": "tozero"},
                shapes=[floor_shape, marker], annotations=[floor_note],
            ),
            "spectrum": figures.lines(
                "Singular values",
                [{"name": "σᵢ", "x": list(range(1, len(spectrum) + 1)), "y": spectrum, "mode": "markers", "marker_size": 5}],
                {"title": {"text": "index i"}}, {"title": {"text": "σᵢ"}, "type": "log", "dtick": 1}, shapes=[marker],
            ),
        },
    }


def scaling(q: ScalingQuery) -> dict[str, Any]:
    """α/r vs α/√r across ranks (the scale, and the update size it implies), and LoRA+'s two learning rates."""
    from calculators import scaling as sc

    with calculator_input({"lr_A": "lr"}):
        ranks = [r for r in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if r <= q.max_rank]
        series = sc.scaling_series(q.alpha, ranks)
        at_rank = sc.scaling_series(q.alpha, [q.rank])
        loraplus = sc.loraplus_learning_rates(q.lr, q.loraplus_lr_ratio)
    marker = {"type": "line", "xref": "x", "yref": "paper", "x0": q.rank, "x1": q.rank, "y0": 0, "y1": 1,
              "line": {"color": "#8d99ae", "width": 1, "dash": "dash"}}
    rank_axis = {"title": {"text": "rank r"}, "type": "log", "tickvals": ranks, "ticktext": [str(r) for r in ranks]}
    lora_colour, rslora_colour = figures.PALETTE[0], figures.PALETTE[1]
    return {
        "announce": f"At r = {q.rank}: LoRA scale {at_rank.lora_scaling[0]:.4g}, rsLoRA scale {at_rank.rslora_scaling[0]:.4g}; "
                    f"LoRA+ learning rate of B {loraplus.lr_B:.3g}.",
        "headline": {
            "lora": f"{at_rank.lora_scaling[0]:.4g}",
            "rslora": f"{at_rank.rslora_scaling[0]:.4g}",
            "lora_update": f"{at_rank.lora_effective_scale[0]:.4g}",
            "rslora_update": f"{at_rank.rslora_effective_scale[0]:.4g}",
            "lr_a": f"{loraplus.lr_A:.3g}",
            "lr_b": f"{loraplus.lr_B:.3g}",
            "loraplus": f"{loraplus.loraplus_lr_ratio:g}×",
        },
        "note": (
            f"The first plot is the factor s that multiplies B·A; the second, s·√r, is how large the update s·B·A·x comes "
            f"out. B·A·x sums "
            f"r rank-one terms, so its size grows like √r: with LoRA's α/r the update shrinks like α/√r as the rank "
            f"grows; with rsLoRA's α/√r it stays at α = {q.alpha:g} (flat). How fast each trains depends on the optimizer: under Adam a fixed α keeps the first "
            f"step the same at every rank (chapter 2, 'The scaling factor')."
        ),
        "figures": {
            "scale": figures.lines(
                f"Scale factor s, α = {q.alpha:g}",
                [{"name": "LoRA: α/r", "x": series.ranks, "y": series.lora_scaling, "color": lora_colour},
                 {"name": "rsLoRA: α/√r", "x": series.ranks, "y": series.rslora_scaling, "color": rslora_colour}],
                rank_axis, {"title": {"text": "s"}, "type": "log", "dtick": 1}, shapes=[marker],
            ),
            "update_size": figures.lines(
                "Update size s·√r",
                [{"name": "LoRA: (α/r)·√r = α/√r", "x": series.ranks, "y": series.lora_effective_scale, "color": lora_colour},
                 {"name": "rsLoRA: (α/√r)·√r = α", "x": series.ranks, "y": series.rslora_effective_scale,
                  "color": rslora_colour}],
                rank_axis, {"title": {"text": "s·√r"}, "type": "log", "dtick": 1}, shapes=[marker],
            ),
        },
    }
