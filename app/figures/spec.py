"""What a figure is: a name, a title, validated arguments, and a drawing with its caption.

A figure module defines a query model (the arguments a chapter's ```{figure}``` body or a
reader's form may set), a `draw` function that asks `calculators` for the numbers and returns
`Art`, and, for a live figure, the controls that change it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlencode

from markupsafe import Markup
from pydantic import BaseModel, ConfigDict

from app.figures.svg import NARROW, WIDE, Svg


class FigureQuery(BaseModel):
    """Arguments of a figure: every field has a default and bounds; unknown names are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArguments(FigureQuery):
    """A figure with nothing to set."""


@dataclass(frozen=True)
class Art:
    """One rendering of a figure.

    `wide` is drawn for the text column, `narrow` (when the layout must change, not just
    shrink) for phones; `caption` explains the figure and may quote computed numbers;
    `readout` (live figures) states the current values in one sentence.
    """

    wide: Markup
    caption: str
    narrow: Markup | None = None
    readout: str = ""


def drawn(draw: Callable[[float], Svg], caption: str, readout: str = "") -> Art:
    """Art from one drawing function, laid out for the text column (WIDE) and for phones (NARROW)."""
    return Art(wide=draw(WIDE).markup(), narrow=draw(NARROW).markup(), caption=caption, readout=readout)


@dataclass(frozen=True)
class Control:
    """A form control of a live figure. `choice`: a row of radio buttons (keyboard: arrows);
    `select`: a drop-down; `toggle`: a checkbox; `hidden`: carried along unchanged."""

    kind: Literal["choice", "select", "toggle", "hidden"]
    name: str
    label: str
    value: str
    options: tuple[tuple[str, str], ...] = ()  # (value, label)


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure: what ```{figure} name``` draws."""

    name: str
    title: str
    chapter: str  # label of the chapter that explains it
    query_model: type[FigureQuery]
    draw: Callable[[Any], Art]
    controls: Callable[[Any], tuple[Control, ...]] | None = None

    @property
    def live(self) -> bool:
        return self.controls is not None

    def parse(self, values: Mapping[str, Any]) -> FigureQuery:
        """Validate arguments (pydantic's ValidationError names the field)."""
        return self.query_model.model_validate(dict(values))

    def query_string(self, controls: Sequence[Control]) -> str:
        """A live figure's current settings as a URL query: its own page shows the same drawing."""
        return urlencode([(c.name, c.value) for c in controls])

    def render(self, query: FigureQuery) -> Art:
        """The drawing for validated arguments (remembered: figures are pure functions of them)."""
        return _render(self.name, query.model_dump_json())


_SPECS: dict[str, FigureSpec] = {}


def register(*specs: FigureSpec) -> tuple[FigureSpec, ...]:
    for spec in specs:
        if spec.name in _SPECS:
            raise ValueError(f"figure {spec.name!r} is registered twice")
        _SPECS[spec.name] = spec
    return specs


@lru_cache(maxsize=512)
def _render(name: str, query_json: str) -> Art:
    spec = _SPECS[name]
    return spec.draw(spec.query_model.model_validate_json(query_json))
