"""Instrument pages and their htmx fragments: parse the query, call one calculator, render.

Each registered instrument gets `GET /instruments/<name>`, documented in OpenAPI with its
query model. A page request renders the whole page; an htmx request (`HX-Request`) renders
only the template's `result` block, so the markup exists once.
"""

# No `from __future__ import annotations`: FastAPI reads each endpoint's query model from
# the annotation at registration time, and the model differs per instrument.
from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from app.instrument_registry import INSTRUMENTS, InstrumentSpec
from app.rendering import HtmxRequest, page

router = APIRouter(prefix="/instruments", tags=["instruments"])


@router.get("", response_class=HTMLResponse, summary="All instruments")
def index(request: Request):
    return page(request, "instruments_index.html", instruments=list(INSTRUMENTS.values()))


@lru_cache(maxsize=512)
def _rendered_fragment(templates: Jinja2Templates, name: str, query_json: str) -> str:
    """An instrument's `result` block for some settings. Like the views (`_view_result`), a
    fragment is a pure function of its settings (its template reads nothing from the request), and
    readers share URLs, so a repeated request skips the view and the template: its cost is then
    the server's floor, which is what keeps a fragment's p99 low under load."""
    spec = INSTRUMENTS[name]
    context = spec.context(spec.query_model.model_validate_json(query_json), embed_id=name, standalone=True)
    template = templates.get_template(spec.template)
    return "".join(template.blocks["result"](template.new_context(context)))


def instrument_response(request: Request, spec: InstrumentSpec, query: BaseModel, htmx: bool, status_code: int = 200):
    """The fragment for htmx, the standalone page otherwise; both from one template."""
    if htmx:
        html = _rendered_fragment(request.app.state.templates, spec.name, query.model_dump_json())
        response = HTMLResponse(html, status_code=status_code)
    else:
        context = spec.context(query, embed_id=spec.name, standalone=True)
        response = page(request, "instrument_page.html", status_code=status_code, **context)
    response.headers["Vary"] = "HX-Request"
    return response


def _endpoint_for(spec: InstrumentSpec):
    def endpoint(request: Request, query: Annotated[spec.query_model, Query()], htmx: HtmxRequest):  # type: ignore[name-defined]
        return instrument_response(request, spec, query, htmx)

    endpoint.__name__ = f"instrument_{spec.name.replace('-', '_')}"
    endpoint.__doc__ = spec.blurb
    return endpoint


for _spec in INSTRUMENTS.values():
    router.add_api_route(
        f"/{_spec.name}",
        _endpoint_for(_spec),
        methods=["GET"],
        response_class=HTMLResponse,
        summary=_spec.title,
        description=f"{_spec.blurb} Returns the whole page, or with `HX-Request: true` only the result fragment.",
    )
