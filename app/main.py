"""create_app(): the LoRA Lab ASGI application."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.content import Library, load_library
from app.maths import MathTypesetter
from app.errors import describe
from app.rendering import is_htmx, make_templates, page
from app.jobs import JobManager
from app.lab import TrainRequest, run_config
from app.lab_store import Retention, RunStore
from app.routers import api, figures, instruments, lab, pages, plan_api
from app.settings import Settings, get_settings
from app.security import SecurityHeaders
from app.static_files import BookStaticFiles, CompressResponses


def _library_loader(settings: Settings, templates) -> Callable[[], Library]:
    """Render the book once; with reload_content, again whenever a chapter file changes."""
    state: dict[str, object] = {"stamp": None, "library": None}
    typesetter = MathTypesetter(settings.maths_cache_path, settings.static_dir / "vendor" / "katex" / "katex.min.js",
                                settings.node_path)

    def stamp() -> tuple:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in Path(settings.content_dir).glob("*.md")))

    def current() -> Library:
        if state["library"] is None or (settings.reload_content and stamp() != state["stamp"]):
            state["stamp"] = stamp()
            state["library"] = load_library(settings.content_dir, templates.env, typesetter)
        return state["library"]  # type: ignore[return-value]

    current()  # fail at start-up, not on the first request, if a chapter is broken
    return current


def _job_manager(settings: Settings) -> tuple[Callable[[], JobManager], Callable[[], None]]:
    """The lab's jobs, created on first use so the site starts without a worker process: a
    JobManager training in a child process, or, with a queue URL, a client of the shared
    queue that `loralab worker` processes drain (app/lab_queue.py)."""
    lock = threading.Lock()
    holder: list = []

    def get():
        with lock:
            if not holder:
                store = RunStore.open(settings.data_dir, Retention(settings.keep_runs, settings.keep_runs_mib * 2**20))
                if settings.queue_url:
                    from app.lab_queue import QueueClient

                    holder.append(QueueClient(store, settings.queue_url, settings.max_queued_jobs))
                else:
                    holder.append(JobManager(
                        store, settings.max_queued_jobs, settings.job_time_limit_s, settings.lab_model_dir,
                        settings.lab_task_dir, try_max_new_tokens=settings.try_max_new_tokens,
                        stop_grace_s=settings.job_stop_grace_s, threads=settings.train_threads,
                        baseline_dir=settings.baseline_dir, warm_config=run_config(TrainRequest(), settings),
                    ))
            return holder[0]

    def close() -> None:
        with lock:
            if holder:
                holder.pop().close()

    return get, close


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    get_jobs, close_jobs = _job_manager(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        close_jobs()

    app = FastAPI(
        lifespan=lifespan,
        title="LoRA Lab",
        docs_url=None,  # served by app.routers.pages from our own copy of swagger-ui (no CDN)
        redoc_url=None,
        version="0.1.0",
        description="An interactive textbook on parameter-efficient fine-tuning. "
        "The JSON API under /api/v1 exposes the calculators behind every number in the book.",
    )
    app.state.settings = settings
    app.state.templates = make_templates(settings)
    app.state.library = _library_loader(settings, app.state.templates)
    app.mount("/static", BookStaticFiles(directory=str(settings.static_dir)), name="static")
    app.add_middleware(CompressResponses)
    app.add_middleware(SecurityHeaders)
    app.state.jobs = get_jobs
    app.include_router(pages.router)
    app.include_router(instruments.router)
    app.include_router(figures.router)
    app.include_router(lab.router)
    app.include_router(api.router)
    app.include_router(plan_api.router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        wants_html = "text/html" in request.headers.get("accept", "") and not request.url.path.startswith("/api/")
        if exc.status_code == 404 and wants_html:
            return page(request, "404.html", status_code=404, message="We could not find that page.")
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_input(request: Request, exc: RequestValidationError):
        """422 naming each bad field: JSON for the API, a readable message for pages."""
        messages = describe(list(exc.errors()))
        if request.url.path.startswith(("/instruments/", "/figures/")):
            if is_htmx(request):
                return page(request, "_result_error.html", status_code=422, messages=messages)
            return page(request, "404.html", status_code=422, code=422, heading="Some settings were not valid.", message="; ".join(messages))
        detail = [
            {"loc": list(error.get("loc", ())), "msg": message, "type": error.get("type", "value_error")}
            for error, message in zip(exc.errors(), messages)
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    return app
