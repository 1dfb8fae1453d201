"""HTTP API for one-shot requests: classify, match, embed. Same models, cache, batching and limits as /ws.

Inputs come as a raw body (options in the query string) or as multipart/form-data (a ``file`` part,
options as fields), read within the size limit by server/http_body.py. What each endpoint takes is declared
in server/http_params.py, which also writes the OpenAPI schema. Errors are JSON ``{"error": {"code",
"message"}}`` with the status of server/errors.py's table. At most ``--max-requests`` requests are inside
the models at once; one more is answered 503 ``busy`` at once, never queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .audio import decode_pcm, decode_sound_file, resample, split_windows
from .errors import ErrorCode, InputError
from .events_api import answer as events_answer
from .http_body import Upload, json_object, read_body, read_upload
from .http_params import AUDIO_MEDIA_TYPES, IMAGE_MEDIA_TYPES, Operation, operations
from .imaging import decode_image, sniff_image_format
from .labels import LabelFileError
from .labelsets import LabelSet
from .protocol import Modality
from .runtime import Runtime
from .scoring import normalize_rows, score_batch, similarities
from .timing import ms_since
from .worker import ItemOutcome

# No type, a generic one, or the form type curl puts on --data-binary bodies: the bytes say what they are.
UNTYPED = frozenset({"", "application/octet-stream", "application/x-www-form-urlencoded"})
IMAGE_TYPES = frozenset({*IMAGE_MEDIA_TYPES, *UNTYPED})
SOUND_FILE_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/flac", "audio/x-flac", "audio/ogg"})
RAW_AUDIO_TYPES = frozenset({"audio/l16", *UNTYPED})
AUDIO_TYPES = frozenset({*AUDIO_MEDIA_TYPES, *SOUND_FILE_TYPES, *RAW_AUDIO_TYPES})
RETRY_AFTER_S = 1  # told to clients on every 503


@dataclass
class Call:
    """One request on its way through an endpoint: its input, its checked parameters, its timing."""

    values: dict[str, Any]
    received: float  # perf_counter() when the request came
    upload: Upload | None = None
    body: bytes = b""
    in_models: bool = False  # holds one of the --max-requests places

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def file(self) -> Upload:
        assert self.upload is not None
        return self.upload


Handler = Callable[[Call], Awaitable[dict[str, Any]]]


class HttpApi:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.limit = runtime.settings.max_message_bytes
        self.operations = operations(runtime.settings)
        self.in_models = 0  # requests between the start of their inference and their answer

    def routes(self) -> list[Route]:
        return [
            Route(op.path, self.endpoint(op, getattr(self, op.name)), methods=[op.method]) for op in self.operations
        ]

    def endpoint(self, op: Operation, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            received = time.perf_counter()
            call: Call | None = None
            try:
                if self.runtime.state != "ok":
                    raise InputError(ErrorCode.LOADING, f"the server is {self.runtime.state}; try again shortly")
                if self.runtime.draining:
                    raise InputError(ErrorCode.SHUTTING_DOWN, "the server is shutting down")
                if op.modality is not None:
                    self._require(op.modality)
                call = await self._call(op, request, received)
                body = await handler(call)
                if "application/msgpack" in request.headers.get("accept", ""):
                    packed = msgpack.packb(body, use_single_float=op.msgpack_float32)
                    return Response(packed, media_type="application/msgpack")
                return JSONResponse(body)
            except InputError as exc:
                return error_response(exc.code, exc.message)
            finally:
                if call is not None and call.in_models:
                    self.in_models -= 1

        return run

    # --- endpoints ----------------------------------------------------------------------

    async def classify_image(self, call: Call) -> dict[str, Any]:
        image, decode_ms = await self._decode_image(call)
        self._enter_models(call)
        labels = await self._adhoc_labels("image", call)
        outcome = await self._infer("image", image, call.received, decode_ms, labels)
        return self._classification("image", outcome, labels, call, decode_ms)

    async def classify_audio(self, call: Call) -> dict[str, Any]:
        samples, decode_ms = await self._decode_audio(call)
        self._enter_models(call)
        labels = await self._adhoc_labels("audio", call)
        rate = self.runtime.audio_rate
        windows, outcomes = await self._infer_clip(samples, call.received, decode_ms, labels)
        body = self._classification("audio", outcomes[0], labels, call, decode_ms)
        body.update(
            top=self._score(mean_embedding(outcomes), outcomes[0], call),
            duration_s=round(len(samples) / rate, 3),
            windows=[
                {"start_s": round(start, 3), "end_s": round(start + len(chunk) / rate, 3), "top": self._top(o, call)}
                for (start, chunk), o in zip(windows, outcomes, strict=True)
            ],
        )
        return body

    async def match(self, call: Call) -> dict[str, Any]:
        texts: list[str] = call["texts"]
        threshold: float = call["threshold"]
        image, decode_ms = await self._decode_image(call)
        self._enter_models(call)
        outcome = await self._infer("image", image, call.received, decode_ms, None)
        text_embeddings = await self.runtime.label_sources["image"].embed_texts(texts)
        assert outcome.embedding is not None
        cosines = similarities(outcome.embedding[None, :], text_embeddings)[0]
        return {
            "model": self.runtime.encoders["image"].name,
            "threshold": threshold,
            "results": [
                {"text": text, "similarity": float(c), "verdict": "match" if c >= threshold else "mismatch"}
                for text, c in zip(texts, cosines, strict=True)
            ],
        }

    async def embed_image(self, call: Call) -> dict[str, Any]:
        image, decode_ms = await self._decode_image(call)
        self._enter_models(call)
        outcome = await self._infer("image", image, call.received, decode_ms, None)
        assert outcome.embedding is not None
        return self._embeddings("image", outcome.embedding[None, :])

    async def embed_audio(self, call: Call) -> dict[str, Any]:
        samples, decode_ms = await self._decode_audio(call)
        self._enter_models(call)
        windows, outcomes = await self._infer_clip(samples, call.received, decode_ms, None)
        return {**self._embeddings("audio", mean_embedding(outcomes)), "windows": len(windows)}

    async def embed_text(self, call: Call) -> dict[str, Any]:
        modality: Modality = call["modality"]
        source = self._source(modality)
        self._enter_models(call)
        return self._embeddings(modality, await source.embed_texts(call["texts"]))

    async def labels(self, call: Call) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for modality, source in self.runtime.label_sources.items():
            current = source.current
            assert current is not None
            out[modality] = {
                "version": current.version,
                "count": len(current.names),
                "path": str(source.path),
                "error": source.last_error,
                "editable": self.settings.allow_label_edits and source.editable,
                "text": source.text(),
                "history": source.history,
                "labels": [
                    {"label": name, "prompts": list(prompts)}
                    for name, prompts in zip(current.names, current.prompts, strict=True)
                ],
            }
        return out

    async def edit_labels(self, call: Call) -> dict[str, Any]:
        if not self.settings.allow_label_edits:
            raise InputError(ErrorCode.FORBIDDEN, "label editing is off: start the server with --allow-label-edits")
        source = self._source(call["modality"])
        if len(call.body) > self.settings.max_label_file_bytes:
            raise InputError(
                ErrorCode.TOO_LARGE,
                f"labels not saved: {len(call.body)} bytes is over the limit of {self.settings.max_label_file_bytes}",
            )
        try:
            await asyncio.to_thread(source.write, call.body)
        except LabelFileError as exc:
            raise InputError(ErrorCode.BAD_FIELD, f"labels not saved: {exc}") from None
        return {"saved": str(source.path), "reload": "the server reloads the file in a second or two"}

    async def events(self, call: Call) -> dict[str, Any]:
        return await events_answer(self.runtime.event_log, call.values)

    # --- the request --------------------------------------------------------------------

    async def _call(self, op: Operation, request: Request, received: float) -> Call:
        """Read the request as ``op`` takes it and check every declared parameter."""
        items = list(request.query_params.multi_items())
        if op.body == "json":
            body = await json_object(request, self.limit)
            return Call({**op.parse(items, request.path_params), **op.parse_json(body)}, received)
        if op.body in ("image", "audio"):
            upload, fields = await read_upload(request, self.limit)
            return Call(op.parse(items + fields, request.path_params), received, upload=upload)
        data = await read_body(request, self.limit) if op.body == "text" else b""
        return Call(op.parse(items, request.path_params), received, body=data)

    # --- decoding (off the event loop) ---------------------------------------------------

    async def _decode_image(self, call: Call) -> tuple[np.ndarray, float]:
        upload = call.file
        if upload.content_type not in IMAGE_TYPES:
            raise InputError(
                ErrorCode.UNSUPPORTED_TYPE, f"send a JPEG, PNG or WebP image (got {upload.content_type or 'no type'})"
            )
        fmt = sniff_image_format(upload.data)
        if fmt is None:
            raise InputError(
                ErrorCode.BAD_IMAGE,
                f"the body is not a JPEG, PNG or WebP image (sent as {upload.content_type or 'no type'})",
            )
        image = await asyncio.to_thread(
            decode_image, upload.data, fmt, self.settings.max_image_pixels, self.runtime.image_side
        )
        return image, ms_since(call.received)

    async def _decode_audio(self, call: Call) -> tuple[np.ndarray, float]:
        upload = call.file
        if upload.content_type not in AUDIO_TYPES:
            raise InputError(
                ErrorCode.UNSUPPORTED_TYPE,
                f"send a sound file (WAV, FLAC, OGG) or raw PCM with sample_rate (got {upload.content_type})",
            )
        # A sound file says its own rate and channels; only a body of no particular type can be raw PCM.
        pcm = call["sample_rate"] is not None and upload.content_type in RAW_AUDIO_TYPES
        if upload.content_type == "audio/l16" and not pcm:
            raise InputError(ErrorCode.BAD_FIELD, "raw PCM (audio/l16) needs 'sample_rate'")
        # A clip may be minutes long: decoding and resampling it would stall every other client.
        samples = await asyncio.to_thread(self._decode_clip, upload.data, pcm, call.values)
        return samples, ms_since(call.received)

    def _decode_clip(self, data: bytes, pcm: bool, values: dict[str, Any]) -> np.ndarray:
        max_seconds = self.settings.max_clip_seconds
        if pcm:
            rate = values["sample_rate"]
            samples = decode_pcm(data, rate, values["channels"], values["dtype"], max_seconds)
        else:
            samples, rate = decode_sound_file(data)
            if not np.isfinite(samples).all():
                raise InputError(ErrorCode.BAD_AUDIO, "the sound file contains NaN or infinity")
            if len(samples) > max_seconds * rate:
                raise InputError(ErrorCode.TOO_LARGE, f"the clip is over the limit of {max_seconds:g} s")
        return resample(samples, rate, self.runtime.audio_rate)

    # --- the models ---------------------------------------------------------------------

    def _enter_models(self, call: Call) -> None:
        """Take one of the --max-requests places, or answer 503 busy: a request never queues for one."""
        if self.in_models >= self.settings.max_requests:
            raise InputError(
                ErrorCode.BUSY,
                f"{self.settings.max_requests} requests are already being served (--max-requests); retry shortly",
            )
        self.in_models += 1
        call.in_models = True

    async def _adhoc_labels(self, modality: Modality, call: Call) -> LabelSet | None:
        """The request's own labels, encoded through the label cache (or afresh, with ``encode=all``)."""
        names: list[str] | None = call["labels"]
        if names is None:
            return None
        try:
            return await self._source(modality).adhoc(names, refresh=call["encode"] == "all")
        except LabelFileError as exc:
            raise InputError(ErrorCode.BAD_FIELD, f"labels: {exc}") from None

    async def _infer(
        self, modality: Modality, payload: Any, received: float, decode_ms: float, labels: LabelSet | None
    ) -> ItemOutcome:
        outcome = await self.runtime.infer(modality, payload, received=received, decode_ms=decode_ms, labels=labels)
        if outcome.scores is None:
            raise InputError(ErrorCode.INFERENCE_FAILED, outcome.error or "inference failed")
        return outcome

    async def _infer_clip(
        self, samples: np.ndarray, received: float, decode_ms: float, labels: LabelSet | None
    ) -> tuple[list[tuple[float, np.ndarray]], list[ItemOutcome]]:
        """A whole clip, window by window; the windows go to the worker together, so they share batches."""
        windows = split_windows(samples, self.runtime.audio_rate, self.settings.audio_window)
        outcomes = await asyncio.gather(
            *(self._infer("audio", chunk, received, decode_ms, labels) for _, chunk in windows)
        )
        return windows, list(outcomes)

    # --- answers ------------------------------------------------------------------------

    def _classification(
        self, modality: Modality, outcome: ItemOutcome, labels: LabelSet | None, call: Call, decode_ms: float
    ) -> dict[str, Any]:
        assert outcome.scores is not None
        body: dict[str, Any] = {
            "model": self.runtime.encoders[modality].name,
            "top": self._top(outcome, call),
            "timings": {
                "decode_ms": decode_ms,
                "queue_ms": outcome.queue_ms,
                "preprocess_ms": outcome.preprocess_ms,
                "encode_ms": outcome.encode_ms,
                "similarity_ms": outcome.similarity_ms,
                # The request's labels through the text tower (before the input's own stages); the file's
                # labels were encoded when the file loaded.
                "text_ms": 0.0 if labels is None else labels.encode_ms,
                "total_ms": ms_since(call.received),
            },
            "labels": label_encoding(outcome.scores.label_set, adhoc=labels is not None),
        }
        if labels is None:
            body["labels_version"] = outcome.scores.label_set.version
        return body

    def _top(self, outcome: ItemOutcome, call: Call) -> list[dict[str, Any]]:
        """The request's top of the scores the worker already computed over the whole label set."""
        assert outcome.scores is not None
        return outcome.scores.top(call["top_k"], call["min_score"])

    def _score(self, embedding: np.ndarray, like: ItemOutcome, call: Call) -> list[Any]:
        """Score an embedding against the label set ``like`` was scored against."""
        assert like.scores is not None
        label_set = like.scores.label_set
        (scores,) = score_batch(embedding, [label_set], self.runtime.encoders[label_set.modality].scoring)
        return scores.top(call["top_k"], call["min_score"])

    def _embeddings(self, modality: Modality, matrix: np.ndarray) -> dict[str, Any]:
        return {
            "model": self.runtime.encoders[modality].name,
            "dim": int(matrix.shape[1]),
            "embeddings": matrix.astype(np.float32).tolist(),
        }

    def _require(self, modality: Modality) -> None:
        if modality not in self.runtime.workers:
            raise InputError(ErrorCode.NOT_SERVED, f"this server does not serve {modality}")

    def _source(self, modality: Modality) -> Any:
        self._require(modality)
        return self.runtime.label_sources[modality]


def mean_embedding(outcomes: list[ItemOutcome]) -> np.ndarray:
    """A clip longer than one window is embedded as the normalized mean of its windows: (1, dim)."""
    rows = [o.embedding for o in outcomes if o.embedding is not None]
    return normalize_rows(np.mean(rows, axis=0)[None, :])


def label_encoding(label_set: LabelSet, *, adhoc: bool) -> dict[str, Any]:
    """What a request's labels cost: how many the text tower encoded and how many came from the cache."""
    count = len(label_set.names)
    encoded = label_set.new_labels if adhoc else 0
    return {"source": "request" if adhoc else "file", "count": count, "encoded": encoded, "cached": count - encoded}


def error_response(code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The one shape of every HTTP error: ``{"error": {"code", "message"}}``, the table's status for the code."""
    error = InputError(code, message)
    headers = dict(headers or {})
    if error.status == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=error.status, headers=headers)
