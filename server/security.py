"""Who may connect, Sans-I/O: tokens and browser origins, from request headers in, verdicts out."""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

SUBPROTOCOL = "sensorium.v1"
TOKEN_SUBPROTOCOL_PREFIX = "sensorium.token."


def presented_token(authorization: str | None, query_token: str | None, subprotocols: list[str]) -> str | None:
    """The token a client sent: ``Authorization: Bearer``, ``?token=``, or (browsers, which cannot set
    headers on a WebSocket) a ``sensorium.token.<token>`` subprotocol."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if query_token:
        return query_token
    for protocol in subprotocols:
        if protocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return protocol[len(TOKEN_SUBPROTOCOL_PREFIX) :]
    return None


def token_accepted(expected: str | None, presented: str | None) -> bool:
    if expected is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())  # constant time: no timing oracle


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Browsers send Origin; a page from another site must not open a socket with the user's network
    position (cross-site WebSocket hijacking). Clients that are not browsers send no Origin."""
    if origin is None:
        return True
    normalized = origin.rstrip("/").lower()
    if "*" in allowed or normalized in {a.rstrip("/").lower() for a in allowed}:
        return True
    if host is None or normalized == "null":
        return False
    return urlsplit(normalized).netloc == host.lower()


class TokenGate:
    """ASGI middleware: with a token set, HTTP requests need it (but ``open_paths``); WebSocket
    connections are checked by the session, which can answer with a close code."""

    def __init__(self, app: Any, token: str | None, open_paths: frozenset[str]) -> None:
        self.app = app
        self.token = token
        self.open_paths = open_paths

    def _open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith("/static/")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.token is None or scope["type"] != "http" or self._open(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if token_accepted(self.token, presented_token(headers.get("authorization"), query.get("token"), [])):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": {"code": "unauthorized", "message": "a valid token is required"}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "http.response.body", "body": body})
