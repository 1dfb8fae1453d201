"""The ASGI app: routes and a lifespan that starts the runtime (models load in the background)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from . import http_api
from .openapi import openapi_schema
from .runtime import Runtime
from .security import TokenGate
from .session import Session
from .settings import Settings

STATIC = Path(__file__).resolve().parent / "static"


def create_app(settings: Settings, on_fatal: Callable[[str], None] | None = None) -> Starlette:
    """Build the app. ``on_fatal`` is told when start-up fails (the CLI uses it to exit)."""
    runtime = Runtime(settings, on_fatal=on_fatal)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    async def health(request: Request) -> JSONResponse:
        body = runtime.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    async def stream(websocket: WebSocket) -> None:
        await Session(websocket, runtime.session_context()).run()

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(openapi_schema())

    async def dashboard(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    async def metrics(request: Request) -> Response:
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/", dashboard),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/health", health),
            Route("/openapi.json", openapi),
            Route("/metrics", metrics),
            WebSocketRoute("/ws", stream),
            *http_api.routes(runtime),
        ],
        lifespan=lifespan,
        # The page and its static files carry no secrets; the page itself brings the token to the API.
        middleware=[Middleware(TokenGate, token=settings.token, open_paths=frozenset({"/health", "/"}))],
    )
    app.state.runtime = runtime
    return app
