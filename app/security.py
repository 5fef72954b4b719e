"""Security headers on every response, and a cap on request bodies.

The Content-Security-Policy allows our own origin only. Two exceptions, each needed by a
library we serve ourselves: 'wasm-unsafe-eval' lets the cells' Web Worker compile Pyodide's
WebAssembly (it does not allow eval of JavaScript), and style-src 'unsafe-inline' lets Plotly,
KaTeX and CodeMirror set element styles. No inline script runs anywhere in the book.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

MAX_BODY_BYTES = 64 * 1024  # the largest legitimate body, a training request, is under 1 kB


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response and refuses bodies over MAX_BODY_BYTES
    with a 413 (by Content-Length, and while streaming when there is none)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.raw_headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name, value) for name, value in self.raw_headers if name not in present
                ]
            await send(message)

        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send_with_headers)
            return

        # Without a Content-Length the body is counted as it arrives; past the limit the app is
        # told the client left, and whatever it answers is replaced by the 413.
        received = 0
        too_large = False
        answered = False

        async def bounded_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if not too_large:
                await send_with_headers(message)
            elif message["type"] == "http.response.start" and not answered:
                answered = True
                await self._too_large(scope, receive, send_with_headers)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not answered:
            await self._too_large(scope, receive, send_with_headers)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"body: larger than {self.max_body_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)
