"""The OpenAPI description of the HTTP API, served at /openapi.json.

Written from the declarations the handlers parse requests with (server/http_params.py) and from the error
table (server/errors.py), for one server's settings: ``top_k`` ends at its ``--max-top-k``, and with a
token every operation needs it and may answer 401.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .errors import ERRORS, ErrorCode, http_status
from .http_params import API_ERRORS, AUDIO_MEDIA_TYPES, IMAGE_MEDIA_TYPES, Operation, Param
from .settings import Settings

_BINARY = {"type": "string", "format": "binary"}
_UPLOADS = {
    "image": (
        IMAGE_MEDIA_TYPES,
        "A JPEG, PNG or WebP image as the raw body, or a multipart/form-data `file` part. Options go in the "
        "query string; a multipart request may send them as form fields instead.",
    ),
    "audio": (
        AUDIO_MEDIA_TYPES,
        "A sound file (WAV, FLAC, OGG) as the raw body or a multipart `file` part; or raw interleaved "
        "little-endian PCM as `application/octet-stream` with `sample_rate` (and `channels`, `dtype`). Options go "
        "in the query string; a multipart request may send them as form fields instead.",
    ),
}


def openapi_schema(settings: Settings, operations: tuple[Operation, ...]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, settings)
    schema: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Sensorium",
            "version": __version__,
            "description": "One-shot zero-shot classification, matching and embeddings. Streaming is on the "
            '/ws WebSocket (docs/protocol.md). Errors are `{"error": {"code", "message"}}`; every 503 '
            "comes with `Retry-After`.",
        },
        "paths": paths,
        "components": {"schemas": _COMPONENTS},
    }
    if settings.token is not None:
        schema["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "the server's --token (`?token=` works too)",
            }
        }
        schema["security"] = [{"bearer": []}]
    return schema


def _operation(op: Operation, settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.name, "summary": op.summary}
    if op.params:
        out["parameters"] = [_parameter(p) for p in op.params]
    if op.body is not None:
        out["requestBody"] = _request_body(op)
    codes = [*op.errors, *API_ERRORS]
    if settings.token is not None:
        codes.append(ErrorCode.UNAUTHORIZED)
    out["responses"] = {"200": _ok(op), **_error_responses(codes)}
    return out


def _parameter(param: Param) -> dict[str, Any]:
    out = {
        "name": param.name,
        "in": param.location,
        "required": param.required,
        "description": param.description,
        "schema": param.schema(),
    }
    if param.type == "array":
        out.update(style="form", explode=True)
    return out


def _request_body(op: Operation) -> dict[str, Any]:
    if op.body == "json":
        properties = {p.name: {**p.schema(), "description": p.description} for p in op.body_params}
        required = [p.name for p in op.body_params if p.required]
        body_schema = {"type": "object", "required": required, "properties": properties}
        return {"required": True, "content": {"application/json": {"schema": body_schema}}}
    if op.body == "text":
        return {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}}
    assert op.body in _UPLOADS, op.body
    media_types, description = _UPLOADS[op.body]
    # The options are documented as query parameters only, though a multipart request may send them as form
    # fields instead (the server reads both): a schema cannot say "required in the query or in the form", and
    # on the wire a form field is text, so a typed form schema would promise distinctions no server can see
    # (the number 5 from the text "5", one repeated field from a single one).
    form = {"type": "object", "required": ["file"], "properties": {"file": _BINARY}}
    # Raw PCM is a raw body of its own type; a `file` part is a file (the server takes PCM there too).
    file_types = [media for media in media_types if media != "application/octet-stream"]
    return {
        "description": description,
        "required": True,
        "content": {
            **{media: {"schema": _BINARY} for media in media_types},
            "multipart/form-data": {"schema": form, "encoding": {"file": {"contentType": ", ".join(file_types)}}},
        },
    }


def _ok(op: Operation) -> dict[str, Any]:
    body = {"schema": {"$ref": f"#/components/schemas/{op.response}"}}
    # With `Accept: application/msgpack` the same map comes as msgpack (float32 numbers where op.msgpack_float32).
    return {"description": op.response_description, "content": {"application/json": body, "application/msgpack": body}}


def _error_responses(codes: list[str]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(http_status(code), []).append(code)
    out: dict[str, Any] = {}
    for status, status_codes in sorted(by_status.items()):
        response: dict[str, Any] = {
            "description": "; ".join(f"`{code}`: {ERRORS[code].when}" for code in status_codes),
            "content": {"application/json": {"schema": _error_schema(status_codes)}},
        }
        if status == 400:
            # uvicorn itself answers a request it cannot parse (a URL over 64 KiB, say) before the API sees it.
            response["description"] += "; or, as text/plain, a request the HTTP server refuses to parse"
            response["content"]["text/plain"] = {"schema": {"type": "string"}}
        if status == 503:
            response["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before trying again",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                }
            }
        out[str(status)] = response
    return out


def _error_schema(codes: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string", "enum": codes}, "message": {"type": "string"}},
            }
        },
    }


_TOP = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["label", "score", "similarity"],
        "properties": {"label": {"type": "string"}, "score": {"type": "number"}, "similarity": {"type": "number"}},
    },
}
_TIMINGS = {
    "type": "object",
    "required": ["decode_ms", "queue_ms", "preprocess_ms", "encode_ms", "similarity_ms", "text_ms", "total_ms"],
    "properties": {
        **{
            k: {"type": "number"}
            for k in ("decode_ms", "queue_ms", "preprocess_ms", "encode_ms", "similarity_ms", "total_ms")
        },
        "text_ms": {
            "type": "number",
            "description": "encoding the request's `labels` (only those not cached, unless `encode=all`); 0 without",
        },
    },
}
_LABEL_ENCODING = {
    "type": "object",
    "description": "the labels scored against and what encoding them cost: `encoded` + `cached` = `count`",
    "required": ["source", "count", "encoded", "cached"],
    "properties": {
        "source": {
            "type": "string",
            "enum": ["request", "file"],
            "description": "the request's `labels` or the file's",
        },
        "count": {"type": "integer", "minimum": 1},
        "encoded": {"type": "integer", "minimum": 0, "description": "labels the text tower encoded for this request"},
        "cached": {"type": "integer", "minimum": 0, "description": "labels wholly from the label cache"},
    },
}
_CLASSIFICATION = {
    "model": {"type": "string"},
    "top": _TOP,
    "timings": _TIMINGS,
    "labels": _LABEL_ENCODING,
    "labels_version": {"type": "integer", "description": "absent with ad-hoc labels"},
}
_COMPONENTS: dict[str, Any] = {
    "Classification": {
        "type": "object",
        "required": ["model", "top", "timings", "labels"],
        "properties": _CLASSIFICATION,
    },
    "AudioClassification": {
        "type": "object",
        "required": ["model", "top", "timings", "labels", "duration_s", "windows"],
        "properties": {
            **_CLASSIFICATION,
            "duration_s": {"type": "number"},
            "windows": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"start_s": {"type": "number"}, "end_s": {"type": "number"}, "top": _TOP},
                },
            },
        },
    },
    "Match": {
        "type": "object",
        "required": ["model", "threshold", "results"],
        "properties": {
            "model": {"type": "string"},
            "threshold": {"type": "number"},
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string"},
                        "similarity": {"type": "number"},
                        "verdict": {"type": "string", "enum": ["match", "mismatch"]},
                    },
                },
            },
        },
    },
    "Embeddings": {
        "type": "object",
        "required": ["model", "dim", "embeddings"],
        "properties": {
            "model": {"type": "string"},
            "dim": {"type": "integer"},
            "embeddings": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "windows": {"type": "integer", "description": "audio only: windows averaged"},
        },
    },
    "Labels": {"type": "object", "additionalProperties": {"type": "object"}},
    "Events": {
        "type": "object",
        "required": ["events"],
        "properties": {
            "events": {
                "type": "array",
                "description": "oldest first (docs/event-log.md)",
                "items": {
                    "type": "object",
                    "required": ["type", "modality", "stream", "state", "time"],
                    "properties": {
                        "type": {"type": "string", "enum": ["event"]},
                        "modality": {"type": "string"},
                        "stream": {"type": "string"},
                        "client": {"type": "integer"},
                        "label": {"type": ["string", "null"]},
                        "group": {"type": ["string", "null"]},
                        "state": {"type": "string", "enum": ["start", "end"]},
                        "score": {"type": "number"},
                        "seq": {"type": "integer"},
                        "ts": {"type": "number"},
                        "time": {"type": "number", "description": "the server's clock, seconds since the epoch"},
                        "duration_s": {"type": "number", "description": "only on end"},
                    },
                },
            }
        },
    },
    "Saved": {
        "type": "object",
        "properties": {"saved": {"type": "string"}, "reload": {"type": "string"}},
    },
}
