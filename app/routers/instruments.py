"""Instrument pages and their htmx fragments: parse the query, call one calculator, render.

Each registered instrument gets `GET /instruments/<name>`, documented in OpenAPI with its
query model. A page request renders the whole page; an htmx request (`HX-Request`) renders
only the template's `result` block, so the markup exists once.
"""

# No `from __future__ import annotations`: FastAPI reads each endpoint's query model from
# the annotation at registration time, and the model differs per instrument.
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from app.instrument_registry import INSTRUMENTS, InstrumentSpec
from app.rendering import HtmxRequest, page

router = APIRouter(prefix="/instruments", tags=["instruments"])


@router.get("", response_class=HTMLResponse, summary="All instruments")
def index(request: Request):
    return page(request, "instruments_index.html", instruments=list(INSTRUMENTS.values()))


def instrument_response(request: Request, spec: InstrumentSpec, query: BaseModel, htmx: bool, status_code: int = 200):
    """The fragment for htmx, the standalone page otherwise; both from one template."""
    context = spec.context(query, embed_id=spec.name, standalone=True)
    if htmx:
        templates = request.app.state.templates
        response = templates.TemplateResponse(
            request, spec.template, context, block_name="result", status_code=status_code
        )
    else:
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
