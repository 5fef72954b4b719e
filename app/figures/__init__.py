"""The book's figures: SVG drawn by code, fed numbers by `calculators`, placed with ```{figure} name```.

A module per subject registers its figures (`FigureSpec`); `FIGURES` holds them all by name.
Plotly specs for the instruments' interactive plots live in `app.figures.plotly`.
"""

from __future__ import annotations

from app.figures import adaptation, corrections, family, lab, lora, memory, nf4, peft_methods, practice, review, serving, spectrum, transformer
from app.figures.spec import Art, Control, FigureQuery, FigureSpec

SUBJECTS = (memory, peft_methods, lora, transformer, spectrum, nf4, family, practice, lab, adaptation, serving, review, corrections)
FIGURES: dict[str, FigureSpec] = {spec.name: spec for subject in SUBJECTS for spec in subject.FIGURES}

__all__ = ["FIGURES", "Art", "Control", "FigureQuery", "FigureSpec", "get_figure"]


def get_figure(name: str) -> FigureSpec:
    """A figure by name; ValueError lists the registered names."""
    spec = FIGURES.get(name)
    if spec is None:
        raise ValueError(f"unknown figure {name!r}; registered: {', '.join(sorted(FIGURES))}")
    return spec
