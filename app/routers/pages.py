"""Reader-facing pages: the home page, chapters, and the health check."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.bibliography import sorted_for_listing
from app.content import Library
from app.rendering import page

router = APIRouter(tags=["pages"])


def library(request: Request) -> Library:
    return request.app.state.library()


@router.get("/", response_class=HTMLResponse, summary="Home page: the chapter list")
def home(request: Request):
    return page(request, "home.html", chapters=library(request).chapters)


@router.get("/chapters/{label}", response_class=HTMLResponse, summary="A chapter of the book")
def chapter(request: Request, label: str):
    book = library(request)
    found = book.by_label(label)
    if found is None:
        return page(request, "404.html", status_code=404, message=f"There is no chapter called “{label}”.")
    previous, following = book.neighbours(label)
    return page(
        request,
        "chapter.html",
        chapter=found,
        number=book.chapters.index(found) + 1,
        previous=previous,
        following=following,
        needs_katex=True,
        client_maths=found.client_maths,
    )


@router.get("/references", response_class=HTMLResponse, summary="The bibliography: every work the book cites")
def references(request: Request):
    book = library(request)
    cited_in = {key: [c for c in book.chapters if key in c.citations] for key in book.bibliography}
    return page(request, "references.html", references=sorted_for_listing(book.bibliography), cited_in=cited_in)


@router.get("/healthz", summary="Liveness check for containers and load balancers")
def healthz(request: Request) -> dict[str, object]:
    return {"status": "ok", "chapters": len(library(request).chapters)}


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
def api_docs(request: Request):
    """Swagger UI for the JSON API, from our own copy (FastAPI's default loads it from a CDN
    and initialises it with an inline script, which our Content-Security-Policy forbids)."""
    return request.app.state.templates.TemplateResponse(request, "api_docs.html", {})
