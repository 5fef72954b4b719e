"""Figure pages and the live figures' htmx fragments: parse the query, draw, render.

`GET /figures` shows every figure in its default state; `GET /figures/<name>` one figure with
the reader's arguments (the form of a live figure submits here without JavaScript); with
`HX-Request: true` only the drawing and its readout come back, for htmx to swap in place.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from app.errors import calculator_input
from app.figures import FIGURES, FigureSpec
from app.rendering import HtmxRequest, page

router = APIRouter(prefix="/figures", tags=["figures"])


def _drawn(spec: FigureSpec, values: dict[str, str]) -> dict:
    """Template context for one figure; bad arguments become a 422 naming the field."""
    try:
        query = spec.parse(values)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("query", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from exc
    with calculator_input():
        art = spec.render(query)
        controls = spec.controls(query) if spec.controls else ()
    return {"spec": spec, "art": art, "controls": controls}


@router.get("", response_class=HTMLResponse, summary="Every figure of the book, by chapter")
def gallery(request: Request):
    library = request.app.state.library()
    groups = []
    for chapter in library.chapters:
        specs = [spec for spec in FIGURES.values() if spec.chapter == chapter.meta.label]
        if specs:
            groups.append({"chapter": chapter.meta, "figures": [_drawn(spec, {}) for spec in specs]})
    return page(request, "figures_index.html", groups=groups)


@router.get("/{name}", response_class=HTMLResponse, summary="One figure; with HX-Request only its drawing")
def figure(request: Request, name: str, htmx: HtmxRequest):
    spec = FIGURES.get(name)
    if spec is None:
        return page(request, "404.html", status_code=404, message=f"There is no figure called “{name}”.")
    context = {**_drawn(spec, dict(request.query_params)), "fig_id": f"fig-{name}", "label": "Figure", "standalone": True}
    if htmx:
        response = request.app.state.templates.TemplateResponse(request, "_figure.html", context, block_name="body")
    else:
        chapter = request.app.state.library().by_label(spec.chapter)
        response = page(request, "figure_page.html", chapter=chapter.meta if chapter else None, **context)
    response.headers["Vary"] = "HX-Request"
    return response
