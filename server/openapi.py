"""The OpenAPI description of the HTTP API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from . import __version__

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_OPTIONS = {
    "labels": {"type": "array", "items": {"type": "string"}},
    "top_k": {"type": "integer"},
    "min_score": {"type": "number"},
}


def _upload_body(description: str, media_types: tuple[str, ...], fields: dict[str, Any]) -> dict[str, Any]:
    """A file as the raw body in one of ``media_types``, or as the ``file`` part of a multipart form."""
    form = {"type": "object", "required": ["file"], "properties": {"file": _BINARY["schema"], **fields}}
    return {
        "description": description,
        "required": True,
        "content": {**{media: _BINARY for media in media_types}, "multipart/form-data": {"schema": form}},
    }


_IMAGE_BODY = _upload_body(
    "A JPEG, PNG or WebP image as the raw body, or multipart/form-data with a `file` part and the options as fields.",
    ("image/jpeg", "image/png", "image/webp"),
    {**_OPTIONS, "texts": {"type": "array", "items": {"type": "string"}}, "threshold": {"type": "number"}},
)
_AUDIO_BODY = _upload_body(
    "A sound file (WAV, FLAC, OGG) as the raw body or a multipart `file` part; or raw interleaved "
    "little-endian PCM (application/octet-stream) with `sample_rate`, `channels`, `dtype`.",
    ("audio/wav", "audio/flac", "audio/ogg", "application/octet-stream"),
    {
        **_OPTIONS,
        "sample_rate": {"type": "integer"},
        "channels": {"type": "integer"},
        "dtype": {"type": "string", "enum": ["int16", "float32"]},
    },
)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_LABELS = _query(
    "labels",
    {"type": "array", "items": {"type": "string"}},
    "classify against these labels (repeat the parameter) instead of the label file's; "
    "`name = prompt | prompt` works as in label files",
)
_TOP_K = _query("top_k", {"type": "integer", "minimum": 1, "default": 5}, "labels to return")
_MIN_SCORE = _query("min_score", {"type": "number", "minimum": 0, "maximum": 1, "default": 0}, "drop labels under")
_PCM = [
    _query("sample_rate", {"type": "integer"}, "raw PCM only: samples per second (its presence means raw PCM)"),
    _query("channels", {"type": "integer", "default": 1}, "raw PCM only: interleaved channels"),
    _query("dtype", {"type": "string", "enum": ["int16", "float32"], "default": "int16"}, "raw PCM only"),
]


def _json(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _responses(ok: str, description: str) -> dict[str, Any]:
    error = {"description": "", **_json("Error")}
    return {
        "200": {"description": description, **_json(ok)},
        "400": {**error, "description": "bad input (the code says what)"},
        "404": {**error, "description": "the modality is not served"},
        "413": {**error, "description": "too large"},
        "415": {**error, "description": "unsupported media type"},
        "503": {**error, "description": "the models are still loading"},
    }


_TOP = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"label": {"type": "string"}, "score": {"type": "number"}, "similarity": {"type": "number"}},
    },
}
_TIMINGS = {
    "type": "object",
    "properties": {
        k: {"type": "number"}
        for k in ("decode_ms", "queue_ms", "preprocess_ms", "encode_ms", "similarity_ms", "total_ms")
    },
}
_CLASSIFICATION = {
    "model": {"type": "string"},
    "top": _TOP,
    "timings": _TIMINGS,
    "labels_version": {"type": "integer", "description": "absent with ad-hoc labels"},
}
_EMBEDDINGS = {
    "type": "object",
    "description": "With `Accept: application/msgpack` the same map comes as msgpack (float32 numbers).",
    "properties": {
        "model": {"type": "string"},
        "dim": {"type": "integer"},
        "embeddings": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        "windows": {"type": "integer", "description": "audio only: windows averaged"},
    },
}


def openapi_schema() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sensorium",
            "version": __version__,
            "description": "One-shot zero-shot classification, matching and embeddings. Streaming is on the "
            "/ws WebSocket (docs/protocol.md).",
        },
        "paths": {
            "/v1/classify/image": {
                "post": {
                    "summary": "Classify one image",
                    "parameters": [_LABELS, _TOP_K, _MIN_SCORE],
                    "requestBody": _IMAGE_BODY,
                    "responses": _responses("Classification", "the top labels"),
                }
            },
            "/v1/classify/audio": {
                "post": {
                    "summary": "Classify a whole sound clip (long clips window by window, plus overall)",
                    "parameters": [_LABELS, _TOP_K, _MIN_SCORE, *_PCM],
                    "requestBody": _AUDIO_BODY,
                    "responses": _responses("AudioClassification", "overall and per-window top labels"),
                }
            },
            "/v1/match": {
                "post": {
                    "summary": "Check texts against an image: cosine similarity and a verdict",
                    "parameters": [
                        _query("texts", {"type": "array", "items": {"type": "string"}}, "texts to check (repeat)"),
                        _query("threshold", {"type": "number", "default": 0.25}, "cosine at or above which it matches"),
                    ],
                    "requestBody": _IMAGE_BODY,
                    "responses": _responses("Match", "one verdict per text"),
                }
            },
            "/v1/embed/image": {
                "post": {
                    "summary": "Normalized image embedding",
                    "requestBody": _IMAGE_BODY,
                    "responses": _responses("Embeddings", "one embedding"),
                }
            },
            "/v1/embed/audio": {
                "post": {
                    "summary": "Normalized audio embedding (mean of the clip's windows)",
                    "parameters": _PCM,
                    "requestBody": _AUDIO_BODY,
                    "responses": _responses("Embeddings", "one embedding"),
                }
            },
            "/v1/embed/text": {
                "post": {
                    "summary": "Normalized text embeddings for CLIP (image) or CLAP (audio)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["texts"],
                                    "properties": {
                                        "texts": {"type": "array", "items": {"type": "string"}},
                                        "modality": {"type": "string", "enum": ["image", "audio"], "default": "image"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": _responses("Embeddings", "one embedding per text"),
                }
            },
            "/v1/labels": {
                "get": {
                    "summary": "The current label sets, with versions, prompts, the files' text and reload history",
                    "responses": {"200": {"description": "per modality", **_json("Labels")}},
                }
            },
            "/v1/labels/{modality}": {
                "put": {
                    "summary": "Replace a label file (only with --allow-label-edits); hot reload applies it",
                    "parameters": [
                        {
                            "name": "modality",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": ["image", "audio"]},
                        },
                    ],
                    "requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "responses": {
                        "200": {"description": "written; the reload follows"},
                        "400": {"description": "not a valid label file", **_json("Error")},
                        "403": {"description": "label editing is off", **_json("Error")},
                        "413": {"description": "over --max-label-file-bytes", **_json("Error")},
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                },
                "Classification": {"type": "object", "properties": _CLASSIFICATION},
                "AudioClassification": {
                    "type": "object",
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
                "Embeddings": _EMBEDDINGS,
                "Labels": {"type": "object", "additionalProperties": {"type": "object"}},
            }
        },
    }
