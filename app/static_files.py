"""Static files with cache headers and precompressed siblings, and gzip for everything else.

The vendored libraries are pinned and large: scripts/precompress.py writes `x.js.gz` beside
each at set-up, and the server sends that to browsers that accept gzip, so they are never
compressed per request. Pages, fragments, JSON and our own small CSS/JS are gzipped on the fly.
"""

from __future__ import annotations

import mimetypes
import os
import stat

import anyio
from starlette.datastructures import Headers
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

VENDOR_MAX_AGE_S = 7 * 24 * 3600
VENDOR_PREFIX = "/static/vendor/"
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".mjs")


def _cache_control(vendored: bool) -> str:
    """Pinned vendor files may be cached for a week; the book's own assets revalidate (ETag)."""
    return f"public, max-age={VENDOR_MAX_AGE_S}" if vendored else "no-cache"


class BookStaticFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        request_headers = Headers(scope=scope)
        if "gzip" in request_headers.get("accept-encoding", ""):
            full_path, stat_result = await anyio.to_thread.run_sync(self.lookup_path, path + ".gz")
            if stat_result is not None and stat.S_ISREG(stat_result.st_mode):
                media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
                response = FileResponse(full_path, stat_result=stat_result, media_type=media_type,
                                        headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
                if self.is_not_modified(response.headers, request_headers):
                    return NotModifiedResponse(response.headers)
                response.headers["Cache-Control"] = _cache_control(True)
                return response
        return await super().get_response(path, scope)

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = _cache_control(f"{os.sep}vendor{os.sep}" in os.fspath(full_path))
        return response


class CompressResponses:
    """gzip on the fly, except under /static/vendor/ (precompressed, or already compressed
    such as wheels and zips); server-sent events are left alone by Starlette."""

    def __init__(self, app: ASGIApp, minimum_size: int = 1024) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size, compresslevel=6)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(VENDOR_PREFIX):
            await self.app(scope, receive, send)
        else:
            await self.gzip(scope, receive, send)
