"""create_app(): the LoRA Lab ASGI application."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.content import Library, load_library
from app.rendering import make_templates, page
from app.routers import pages
from app.settings import Settings, get_settings


def _library_loader(settings: Settings, templates) -> Callable[[], Library]:
    """Render the book once; with reload_content, again whenever a chapter file changes."""
    state: dict[str, object] = {"stamp": None, "library": None}

    def stamp() -> tuple:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in Path(settings.content_dir).glob("*.md")))

    def current() -> Library:
        if state["library"] is None or (settings.reload_content and stamp() != state["stamp"]):
            state["stamp"] = stamp()
            state["library"] = load_library(settings.content_dir, templates.env)
        return state["library"]  # type: ignore[return-value]

    current()  # fail at start-up, not on the first request, if a chapter is broken
    return current


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="LoRA Lab",
        version="0.1.0",
        description="An interactive textbook on parameter-efficient fine-tuning. "
        "The JSON API under /api/v1 exposes the calculators behind every number in the book.",
    )
    app.state.settings = settings
    app.state.templates = make_templates(settings)
    app.state.library = _library_loader(settings, app.state.templates)
    app.mount("/static", StaticFiles(directory=str(settings.static_dir)), name="static")
    app.include_router(pages.router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        wants_html = "text/html" in request.headers.get("accept", "") and not request.url.path.startswith("/api/")
        if exc.status_code == 404 and wants_html:
            return page(request, "404.html", status_code=404, message="We could not find that page.")
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    return app
