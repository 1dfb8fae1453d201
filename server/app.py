"""The ASGI app: routes and a lifespan that starts the runtime (models load in the background)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from .errors import ErrorCode
from .http_api import HttpApi, error_response
from .openapi import openapi_schema
from .runtime import EmbedderFactory, LabelsFactory, Runtime, local_embedder
from .security import TokenGate
from .session import Session
from .settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
# Codes for the statuses Starlette itself raises (no such route, a method the route does not take, ...).
HTTP_EXCEPTION_CODES = {
    400: ErrorCode.BAD_MESSAGE,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_TYPE,
}


async def http_exception(request: Request, exc: Exception) -> Response:
    """Every HTTP error is the documented JSON body, Starlette's own 404 and 405 included."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in {204, 304}:  # not errors: no body
        return Response(status_code=exc.status_code, headers=exc.headers)
    code = HTTP_EXCEPTION_CODES.get(exc.status_code)
    if exc.status_code == 404:
        message = f"no such route: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.url.path} does not take {request.method}" + (f"; it takes {allowed}" if allowed else "")
    else:
        message = exc.detail
    if code is None:  # a status the error table has no code for: keep the status
        code = ErrorCode.INTERNAL if exc.status_code >= 500 else ErrorCode.BAD_MESSAGE
        body = {"error": {"code": code, "message": message}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
    return error_response(code, message, exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    """An unexpected exception: the JSON body here, the traceback in the log (Starlette re-raises it)."""
    return error_response(ErrorCode.INTERNAL, "the server failed on this request; its log has the details")


def create_app(
    settings: Settings,
    on_fatal: Callable[[str], None] | None = None,
    embedders: EmbedderFactory = local_embedder,
    labels: LabelsFactory | None = None,
) -> Starlette:
    """Build the app. ``on_fatal`` is told when start-up fails (the CLI uses it to exit); ``embedders`` says where
    the models run and ``labels`` where the labels come from (in this process, from the label files, unless
    ``sensorium cluster`` says otherwise)."""
    runtime = Runtime(settings, on_fatal=on_fatal, embedders=embedders, labels=labels)

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

    api = HttpApi(runtime)
    schema = openapi_schema(settings, api.operations)

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(schema)

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
            *api.routes(),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception, Exception: server_error},
        # The page and its static files carry no secrets; the page itself brings the token to the API.
        middleware=[Middleware(TokenGate, token=settings.token, open_paths=frozenset({"/health", "/"}))],
    )
    app.state.runtime = runtime
    app.state.http_api = api
    return app
