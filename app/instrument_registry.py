"""The book's instruments by name: what a chapter may embed with ```{instrument} name```."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstrumentSpec:
    name: str
    title: str
    blurb: str
    uses_plotly: bool = True


INSTRUMENTS: dict[str, InstrumentSpec] = {
    spec.name: spec
    for spec in (
        InstrumentSpec(
            "configurator",
            "LoRA configurator",
            "Pick a model, a method and a rank: trainable parameters, adapter size and the memory of a training step.",
        ),
        InstrumentSpec(
            "will-it-fit",
            "Will it fine-tune?",
            "Peak training memory against model size for full fine-tuning, LoRA and QLoRA, next to common GPUs.",
        ),
        InstrumentSpec(
            "nf4-viewer",
            "NF4 level viewer",
            "The 16 NF4 levels on the normal density, and a block of weights quantized to NF4, INT4 and FP4.",
        ),
        InstrumentSpec(
            "svd-rank",
            "SVD rank demo",
            "A low-rank update plus noise: how the best rank-r approximation's error falls with r.",
        ),
        InstrumentSpec(
            "scaling",
            "Scaling demo",
            "How α/r and rsLoRA's α/√r scale the update as the rank grows, and LoRA+'s learning-rate ratio.",
        ),
    )
}
