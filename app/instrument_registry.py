"""The book's instruments by name: what a chapter may embed with ```{instrument} name```.

An instrument is a query model (validated reader input), a view that calls one calculator
and returns plain template context, and a template `fragments/<name>.html` whose `result`
block is what htmx swaps in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from urllib.parse import urlencode

from pydantic import BaseModel

from app import instrument_views as views
from app import planner_views


@dataclass(frozen=True)
class InstrumentSpec:
    name: str
    title: str
    blurb: str
    query_model: type[BaseModel]
    view: Callable[[Any], dict[str, Any]]
    chapters: tuple[tuple[str, str], ...] = field(default=())

    @property
    def template(self) -> str:
        return f"fragments/{self.name}.html"

    def parse(self, values: Mapping[str, Any]) -> BaseModel:
        """Validate initial settings (e.g. from a chapter's directive body)."""
        return self.query_model.model_validate(dict(values))

    def context(self, query: BaseModel, embed_id: str, standalone: bool) -> dict[str, Any]:
        permalink = urlencode(query.model_dump(mode="json"), doseq=True)
        return {"q": query, "embed_id": embed_id, "standalone": standalone, "spec": self, "permalink": permalink,
                **_view_result(self.name, query.model_dump_json())}


@lru_cache(maxsize=2048)
def _view_result(name: str, query_json: str) -> dict[str, Any]:
    """Views are pure functions of their settings, and readers share URLs (the chapters'
    defaults above all): remember recent results. Templates only read them."""
    spec = INSTRUMENTS[name]
    return spec.view(spec.query_model.model_validate_json(query_json))


INSTRUMENTS: dict[str, InstrumentSpec] = {
    spec.name: spec
    for spec in (
        InstrumentSpec(
            "gpu-planner",
            "What can I train on my GPU?",
            "Choose a GPU and a model, or paste its config.json: for full fine-tuning, LoRA and QLoRA, with and "
            "without gradient checkpointing, the largest batch and sequence length that fit.",
            planner_views.GpuPlannerQuery,
            planner_views.gpu_planner,
            (("memory", "Where the memory goes"),),
        ),
        InstrumentSpec(
            "configurator",
            "LoRA configurator",
            "Pick a model, a method and a rank: trainable parameters, adapter size and the memory of a training step.",
            views.ConfiguratorQuery,
            views.configurator,
            (("lora", "LoRA from first principles"), ("memory", "Where the memory goes")),
        ),
        InstrumentSpec(
            "will-it-fit",
            "Will it fine-tune?",
            "Peak training memory against model size for full fine-tuning, LoRA and QLoRA, next to common GPUs.",
            views.WillItFitQuery,
            views.will_it_fit,
            (("memory", "Where the memory goes"),),
        ),
        InstrumentSpec(
            "nf4-viewer",
            "NF4 level viewer",
            "The 16 NF4 levels on the normal density, and a block of weights quantized to NF4, INT4 and FP4.",
            views.Nf4ViewerQuery,
            views.nf4_viewer,
            (("qlora", "QLoRA"),),
        ),
        InstrumentSpec(
            "svd-rank",
            "SVD rank demo",
            "A low-rank update plus noise: how the best rank-r approximation's error falls with r.",
            views.SvdRankQuery,
            views.svd_rank,
            (("rank-and-targets", "Rank and where to attach"),),
        ),
        InstrumentSpec(
            "scaling",
            "Scaling demo",
            "How α/r and rsLoRA's α/√r scale the update as the rank grows, and LoRA+'s learning-rate ratio.",
            views.ScalingQuery,
            views.scaling,
            (("lora-family", "The LoRA family"),),
        ),
    )
}
