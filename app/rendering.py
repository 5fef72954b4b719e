"""The one render path: Jinja templates (with named-block fragments for htmx)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from jinja2_fragments.fastapi import Jinja2Blocks

from app import formatting
from app.lab import lab_context
from app.settings import Settings


@dataclass(frozen=True)
class NavLink:
    href: str
    label: str
    blurb: str


def make_templates(settings: Settings) -> Jinja2Blocks:
    """Jinja2 templates with the book's number filters and site-wide globals."""
    templates = Jinja2Blocks(directory=str(settings.templates_dir))
    env = templates.env
    env.filters["int"] = formatting.format_int
    env.filters["bytes"] = formatting.format_bytes
    env.filters["pct"] = formatting.format_percent
    env.filters["short"] = formatting.format_count_short
    env.filters["urlencode"] = lambda mapping: urlencode(mapping)
    # where a power-of-two slider sits for a value: the nearest exponent, within the slider's range
    env.filters["log2_step"] = lambda value, top: max(0, min(top, round(math.log2(max(value, 1)))))
    env.globals["site_title"] = settings.site_title
    env.globals["lab_context"] = lambda: lab_context(settings)
    env.globals["nav_links"] = [
        NavLink("/instruments/gpu-planner", "What fits my GPU?",
                "Pick a GPU and a model, or paste its config.json: the largest batch and sequence that full "
                "fine-tuning, LoRA and QLoRA fit."),
        NavLink("/instruments", "Instruments", "Live calculators: parameters, memory, NF4, rank, scaling."),
        NavLink("/lab", "Training lab", "Run a real LoRA or QLoRA fine-tune and watch it learn."),
        NavLink("/references", "References", "Every paper the book relies on: authors, year, arXiv id."),
    ]
    return templates


def is_htmx(request: Request) -> bool:
    """True when htmx asked for a fragment rather than a whole page."""
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-Boosted") != "true"


HtmxRequest = Annotated[bool, Depends(is_htmx)]


def page(request: Request, template: str, status_code: int = 200, **context: Any):
    """Render a whole page through the app's templates."""
    templates: Jinja2Blocks = request.app.state.templates
    return templates.TemplateResponse(request, template, context, status_code=status_code)
