"""Every error the server reports, in one table: WebSocket error codes with their HTTP status, and close codes.

An input that cannot be served raises ``InputError`` wherever that is found (a parser, a decoder, a
limit); the WebSocket session turns it into an ``error`` message, the HTTP API into a JSON body with the
table's status. docs/protocol.md holds the same tables, and a test holds the two together.
"""

from __future__ import annotations

from dataclasses import dataclass


class ErrorCode:
    """Values of the ``code`` field of an ``error`` message and of an HTTP error body."""

    BAD_MSGPACK = "bad_msgpack"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"
    BAD_IMAGE = "bad_image"
    BAD_AUDIO = "bad_audio"
    TOO_LARGE = "too_large"
    NOT_SERVED = "not_served"
    INFERENCE_FAILED = "inference_failed"
    TOO_MANY_STREAMS = "too_many_streams"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal_error"
    # HTTP only
    UNSUPPORTED_TYPE = "unsupported_type"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    LOADING = "loading"
    BUSY = "busy"


@dataclass(frozen=True)
class ErrorKind:
    status: int  # the HTTP status of this code
    when: str  # what it means, as documented


ERRORS: dict[str, ErrorKind] = {
    ErrorCode.BAD_MSGPACK: ErrorKind(400, "the bytes are not one msgpack value"),
    ErrorCode.BAD_MESSAGE: ErrorKind(400, "not a map, no string `type`, a text WebSocket message, or a bad body"),
    ErrorCode.UNKNOWN_TYPE: ErrorKind(400, "`type` is not one of frame, audio, end, config, ping"),
    ErrorCode.BAD_FIELD: ErrorKind(400, "a field or parameter is missing, of the wrong type, or out of range"),
    ErrorCode.BAD_IMAGE: ErrorKind(400, "the image cannot be decoded (corrupt, truncated, not the declared format)"),
    ErrorCode.BAD_AUDIO: ErrorKind(400, "audio that cannot be decoded, or PCM that is not whole frames or not finite"),
    ErrorCode.TOO_LARGE: ErrorKind(413, "an image, audio chunk, clip or body over its limit"),
    ErrorCode.NOT_SERVED: ErrorKind(404, "an input for a modality this server does not serve"),
    ErrorCode.INFERENCE_FAILED: ErrorKind(500, "the model failed on this input (its batch-mates are unaffected)"),
    ErrorCode.TOO_MANY_STREAMS: ErrorKind(400, "one stream more than `--max-streams` on this connection"),
    ErrorCode.SHUTTING_DOWN: ErrorKind(503, "an input that arrived after the server began draining"),
    ErrorCode.INTERNAL: ErrorKind(500, "the server failed for a reason of its own (logged with a traceback)"),
    ErrorCode.UNSUPPORTED_TYPE: ErrorKind(415, "HTTP: a media type the endpoint does not take"),
    ErrorCode.UNAUTHORIZED: ErrorKind(401, "HTTP: no valid token"),
    ErrorCode.FORBIDDEN: ErrorKind(403, "HTTP: label editing is off"),
    ErrorCode.NOT_FOUND: ErrorKind(404, "HTTP: no such route"),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorKind(405, "HTTP: the route does not take this method"),
    ErrorCode.LOADING: ErrorKind(503, "HTTP: the models are still loading (or failed to)"),
    ErrorCode.BUSY: ErrorKind(503, "HTTP: `--max-requests` one-shot requests are already in flight; retry after"),
}


def http_status(code: str) -> int:
    return ERRORS[code].status


class InputError(Exception):
    """An input or request that cannot be served; a WebSocket connection stays open.

    ``seq`` is the offending message's sequence number when it is known where the error is found;
    the session fills in ``seq``, ``stream`` and ``modality`` from the message otherwise.
    """

    def __init__(
        self, code: str, message: str, seq: int | None = None, *, modality: str | None = None, stream: str | None = None
    ) -> None:
        assert code in ERRORS, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.seq = seq
        self.modality = modality
        self.stream = stream

    @property
    def status(self) -> int:
        return http_status(self.code)


class CloseCode:
    """WebSocket close codes the server uses."""

    NORMAL = 1000
    GOING_AWAY = 1001  # shutting down
    POLICY = 1008  # too many bad messages
    MESSAGE_TOO_BIG = 1009  # by the WebSocket layer itself, or by the session behind a proxy with its own limit
    MODELS_FAILED = 1011
    TOO_MANY_CONNECTIONS = 1013  # "try again later"
    UNAUTHORIZED = 4401
    FORBIDDEN_ORIGIN = 4403
    IDLE = 4408


CLOSE_CODES: dict[int, str] = {
    CloseCode.NORMAL: "normal closure",
    CloseCode.GOING_AWAY: "the server is shutting down (after sending the results of inputs it already held)",
    CloseCode.POLICY: "too many bad messages (more than `--max-errors` within 10 s)",
    CloseCode.MESSAGE_TOO_BIG: "a message over `limits.max_message_bytes`",
    CloseCode.MODELS_FAILED: "the models failed to load",
    CloseCode.TOO_MANY_CONNECTIONS: "the server is full (`--max-connections`); try again later",
    CloseCode.UNAUTHORIZED: "no valid token; do not reconnect without one",
    CloseCode.FORBIDDEN_ORIGIN: "the page's origin is not allowed; do not reconnect",
    CloseCode.IDLE: "idle: no message for `--idle-timeout` seconds",
}

# Close codes after which reconnecting with the same credentials cannot succeed.
FINAL_CLOSE_CODES = frozenset({CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN_ORIGIN})
