"""HTTP API for one-shot requests: classify, match, embed. Same models, cache, batching and limits as /ws.

Inputs come as a raw body (options in the query string) or as multipart/form-data (a ``file`` part,
options as fields). Errors are JSON ``{"error": {"code", "message"}}`` with a fitting status.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import msgpack
import numpy as np
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .audio import decode_pcm, decode_sound_file, resample, split_windows
from .errors import ErrorCode, InputError
from .imaging import decode_image, sniff_image_format
from .labelsets import LabelSet
from .protocol import DEFAULT_TOP_K, Modality
from .runtime import Runtime
from .scoring import normalize_rows, similarities, softmax_scores, top_labels
from .worker import ItemOutcome

DEFAULT_MATCH_THRESHOLD = 0.25
MAX_ADHOC_LABELS = 1000
MAX_TEXTS = 1000
# No type, a generic one, or the form type curl puts on --data-binary bodies: the bytes say what they are.
UNTYPED = {"", "application/octet-stream", "application/x-www-form-urlencoded"}
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", *UNTYPED}
AUDIO_FILE_TYPES = {"audio/wav", "audio/x-wav", "audio/wave", "audio/flac", "audio/x-flac", "audio/ogg", *UNTYPED}
RAW_AUDIO_TYPES = {"audio/l16", *UNTYPED}
STATUS = {
    ErrorCode.TOO_LARGE: 413,
    "unsupported_type": 415,
    "loading": 503,
}


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS.get(code, 400)


def routes(runtime: Runtime) -> list[Route]:
    api = HttpApi(runtime)
    return [
        Route("/v1/classify/image", api.endpoint(api.classify_image), methods=["POST"]),
        Route("/v1/classify/audio", api.endpoint(api.classify_audio), methods=["POST"]),
        Route("/v1/match", api.endpoint(api.match), methods=["POST"]),
        Route("/v1/embed/image", api.endpoint(api.embed_image), methods=["POST"]),
        Route("/v1/embed/audio", api.endpoint(api.embed_audio), methods=["POST"]),
        Route("/v1/embed/text", api.endpoint(api.embed_text), methods=["POST"]),
        Route("/v1/labels", api.endpoint(api.labels), methods=["GET"]),
        Route("/v1/labels/{modality}", api.endpoint(api.edit_labels), methods=["PUT"]),
    ]


class Params:
    """Options of a request: multipart fields, else the query string."""

    def __init__(self, request: Request, form: FormData | None) -> None:
        self._items: list[tuple[str, str]] = list(request.query_params.multi_items())
        if form is not None:
            self._items += [(k, v) for k, v in form.multi_items() if isinstance(v, str)]

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self._items if k == key]

    def get(self, key: str) -> str | None:
        values = self.getlist(key)
        return values[-1] if values else None

    def number(self, key: str, default: float, low: float, high: float) -> float:
        raw = self.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ApiError(ErrorCode.BAD_FIELD, f"'{key}' must be a number, got {raw!r}") from None
        if not low <= value <= high:
            raise ApiError(ErrorCode.BAD_FIELD, f"'{key}' must be between {low} and {high}, got {value}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.number(key, default, low, high)
        if value != int(value):
            raise ApiError(ErrorCode.BAD_FIELD, f"'{key}' must be an integer")
        return int(value)


class Upload:
    """The body of a request: its bytes, their media type, and the options that came with them."""

    def __init__(self, data: bytes, content_type: str, params: Params) -> None:
        self.data = data
        self.content_type = content_type
        self.params = params


class HttpApi:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.limit = runtime.settings.max_message_bytes

    def endpoint(self, handler: Callable[[Request], Awaitable[dict[str, Any]]]) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            try:
                if self.runtime.state != "ok":
                    raise ApiError("loading", f"the server is {self.runtime.state}; try again shortly")
                if self.runtime.draining:
                    raise ApiError(ErrorCode.SHUTTING_DOWN, "the server is shutting down", status=503)
                body = await handler(request)
            except ApiError as exc:
                return _error(exc.status, exc.code, exc.message)
            except InputError as exc:
                return _error(STATUS.get(exc.code, 400), exc.code, exc.message)
            if "application/msgpack" in request.headers.get("accept", ""):
                return Response(msgpack.packb(body, use_single_float=True), media_type="application/msgpack")
            return JSONResponse(body)

        return run

    # --- endpoints ----------------------------------------------------------------------

    async def classify_image(self, request: Request) -> dict[str, Any]:
        received = time.perf_counter()
        upload = await self._upload(request)
        image, decode_ms = await self._decode_image(upload, received)
        labels = await self._adhoc_labels("image", upload.params)
        outcome = await self._infer("image", image, upload.params, received, decode_ms, labels)
        return self._classification("image", outcome, labels, received, decode_ms, upload.params)

    async def classify_audio(self, request: Request) -> dict[str, Any]:
        received = time.perf_counter()
        upload = await self._upload(request)
        samples, decode_ms = self._decode_audio(upload, received)
        labels = await self._adhoc_labels("audio", upload.params)
        rate = self.runtime.audio_rate
        windows, outcomes = await self._infer_clip(samples, upload.params, received, decode_ms, labels)
        overall = self._score(mean_embedding(outcomes), outcomes[0], upload.params)
        body = self._classification("audio", outcomes[0], labels, received, decode_ms, upload.params)
        body.update(
            top=overall,
            duration_s=round(len(samples) / rate, 3),
            windows=[
                {
                    "start_s": round(start, 3),
                    "end_s": round(start + len(chunk) / rate, 3),
                    "top": self._top(o, upload.params),
                }
                for (start, chunk), o in zip(windows, outcomes, strict=True)
            ],
        )
        return body

    async def match(self, request: Request) -> dict[str, Any]:
        received = time.perf_counter()
        upload = await self._upload(request)
        texts = _texts(upload.params.getlist("texts") or upload.params.getlist("text"), "texts")
        threshold = upload.params.number("threshold", DEFAULT_MATCH_THRESHOLD, -1.0, 1.0)
        image, decode_ms = await self._decode_image(upload, received)
        outcome = await self._infer("image", image, upload.params, received, decode_ms, None)
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

    async def embed_image(self, request: Request) -> dict[str, Any]:
        received = time.perf_counter()
        upload = await self._upload(request)
        image, decode_ms = await self._decode_image(upload, received)
        outcome = await self._infer("image", image, upload.params, received, decode_ms, None)
        assert outcome.embedding is not None
        return self._embeddings("image", outcome.embedding[None, :])

    async def embed_audio(self, request: Request) -> dict[str, Any]:
        received = time.perf_counter()
        upload = await self._upload(request)
        samples, decode_ms = self._decode_audio(upload, received)
        windows, outcomes = await self._infer_clip(samples, upload.params, received, decode_ms, None)
        return {**self._embeddings("audio", mean_embedding(outcomes)), "windows": len(windows)}

    async def embed_text(self, request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await self._read_body(request))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(ErrorCode.BAD_MESSAGE, f"send a JSON object: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(ErrorCode.BAD_MESSAGE, 'send a JSON object like {"texts": ["a dog"], "modality": "image"}')
        modality = body.get("modality", "image")
        if modality not in ("image", "audio"):
            raise ApiError(ErrorCode.BAD_FIELD, "'modality' must be 'image' (CLIP) or 'audio' (CLAP)")
        source = self._source(modality)
        texts = _texts(body.get("texts"), "texts")
        return self._embeddings(modality, await source.embed_texts(texts))

    async def labels(self, request: Request) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for modality, source in self.runtime.label_sources.items():
            current = source.current
            assert current is not None
            out[modality] = {
                "version": current.version,
                "count": len(current.names),
                "path": str(source.path),
                "error": source.last_error,
                "editable": self.runtime.settings.allow_label_edits,
                "text": source.text(),
                "history": source.history,
                "labels": [
                    {"label": name, "prompts": list(prompts)}
                    for name, prompts in zip(current.names, current.prompts, strict=True)
                ],
            }
        return out

    async def edit_labels(self, request: Request) -> dict[str, Any]:
        if not self.runtime.settings.allow_label_edits:
            raise ApiError("forbidden", "label editing is off: start the server with --allow-label-edits", 403)
        modality = request.path_params["modality"]
        if modality not in ("image", "audio"):
            raise ApiError(ErrorCode.BAD_FIELD, "the modality is image or audio", 404)
        source = self._source(modality)
        from .labels import LabelFileError

        try:
            await asyncio.to_thread(source.write, await self._read_body(request))
        except LabelFileError as exc:
            raise ApiError(ErrorCode.BAD_FIELD, f"labels not saved: {exc}") from None
        return {"saved": str(source.path), "reload": "the server reloads the file in a second or two"}

    # --- pieces -------------------------------------------------------------------------

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise ApiError(ErrorCode.TOO_LARGE, f"the body is {declared} bytes; the limit is {self.limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limit:  # a body without a length header is cut off at the limit too
                raise ApiError(ErrorCode.TOO_LARGE, f"the body is over the limit of {self.limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _upload(self, request: Request) -> Upload:
        body = await self._read_body(request)
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            if not body:
                raise ApiError(ErrorCode.BAD_FIELD, "the request body is empty: send the file as the body")
            return Upload(body, content_type.split(";")[0].strip().lower(), Params(request, None))

        async def stream() -> AsyncGenerator[bytes, None]:
            yield body

        form = await MultiPartParser(request.headers, stream(), max_files=1, max_part_size=self.limit).parse()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(ErrorCode.BAD_FIELD, "the multipart form needs a 'file' part")
        data = await upload.read()
        if not data:
            raise ApiError(ErrorCode.BAD_FIELD, "the 'file' part is empty")
        media = (upload.content_type or "").split(";")[0].strip().lower()
        return Upload(data, media, Params(request, form))

    async def _decode_image(self, upload: Upload, received: float) -> tuple[Any, float]:
        self._require("image")
        fmt = sniff_image_format(upload.data)
        if fmt is None or (upload.content_type not in IMAGE_TYPES and not upload.content_type.startswith("image/")):
            raise ApiError(
                "unsupported_type", f"send a JPEG, PNG or WebP image (got {upload.content_type or 'no type'})"
            )
        image = await asyncio.to_thread(
            decode_image, upload.data, fmt, self.runtime.settings.max_image_pixels, self.runtime.image_side
        )
        return image, _ms_since(received)

    def _decode_audio(self, upload: Upload, received: float) -> tuple[np.ndarray, float]:
        self._require("audio")
        params = upload.params
        if params.get("sample_rate") is not None:
            if upload.content_type not in RAW_AUDIO_TYPES:
                raise ApiError(
                    "unsupported_type", f"raw PCM comes as application/octet-stream, not {upload.content_type}"
                )
            rate = params.integer("sample_rate", 0, 1000, 384_000)
            samples = decode_pcm(
                upload.data,
                rate,
                params.integer("channels", 1, 1, 32),
                _choice(params.get("dtype") or "int16", ("int16", "float32"), "dtype"),
                self.runtime.settings.max_clip_seconds,
            )
        else:
            if upload.content_type not in AUDIO_FILE_TYPES:
                raise ApiError(
                    "unsupported_type",
                    f"send a sound file (WAV, FLAC, OGG) or raw PCM with sample_rate (got {upload.content_type})",
                )
            samples, rate = decode_sound_file(upload.data)
            if not np.isfinite(samples).all():
                raise ApiError(ErrorCode.BAD_AUDIO, "the sound file contains NaN or infinity")
            if len(samples) > self.runtime.settings.max_clip_seconds * rate:
                raise ApiError(
                    ErrorCode.TOO_LARGE, f"the clip is over the limit of {self.runtime.settings.max_clip_seconds} s"
                )
        return resample(samples, rate, self.runtime.audio_rate), _ms_since(received)

    async def _adhoc_labels(self, modality: Modality, params: Params) -> LabelSet | None:
        names = [n for n in params.getlist("labels") if n.strip()]
        if not names:
            return None
        if len(names) > MAX_ADHOC_LABELS:
            raise ApiError(ErrorCode.TOO_LARGE, f"at most {MAX_ADHOC_LABELS} labels per request")
        from .labels import LabelFileError

        try:
            return await self._source(modality).adhoc(names)
        except LabelFileError as exc:
            raise ApiError(ErrorCode.BAD_FIELD, f"labels: {exc}") from None

    async def _infer(
        self,
        modality: Modality,
        payload: Any,
        params: Params,
        received: float,
        decode_ms: float,
        labels: LabelSet | None,
    ) -> ItemOutcome:
        outcome = await self.runtime.infer(
            modality,
            payload,
            received=received,
            decode_ms=decode_ms,
            labels=labels,
        )
        if outcome.scores is None:
            raise ApiError(ErrorCode.INFERENCE_FAILED, outcome.error or "inference failed", status=500)
        return outcome

    async def _infer_clip(
        self, samples: np.ndarray, params: Params, received: float, decode_ms: float, labels: LabelSet | None
    ) -> tuple[list[tuple[float, np.ndarray]], list[ItemOutcome]]:
        """A whole clip, window by window; the windows go to the worker together, so they share batches."""
        windows = split_windows(samples, self.runtime.audio_rate, self.runtime.settings.audio_window)
        outcomes = await asyncio.gather(
            *(self._infer("audio", chunk, params, received, decode_ms, labels) for _, chunk in windows)
        )
        return windows, list(outcomes)

    def _classification(
        self,
        modality: Modality,
        outcome: ItemOutcome,
        labels: LabelSet | None,
        received: float,
        decode_ms: float,
        params: Params,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.runtime.encoders[modality].name,
            "top": self._top(outcome, params),
            "timings": {
                "decode_ms": decode_ms,
                "queue_ms": outcome.queue_ms,
                "preprocess_ms": outcome.preprocess_ms,
                "encode_ms": outcome.encode_ms,
                "similarity_ms": outcome.similarity_ms,
                "total_ms": _ms_since(received),
            },
        }
        if labels is None and outcome.scores is not None:
            body["labels_version"] = outcome.scores.label_set.version
        return body

    def _top(self, outcome: ItemOutcome, params: Params) -> list[dict[str, Any]]:
        assert outcome.scores is not None
        return self._top_of(outcome.scores.label_set, outcome.scores.similarity[None, :], params)

    def _top_of(self, label_set: Any, similarity: np.ndarray, params: Params) -> list[dict[str, Any]]:
        scores = softmax_scores(similarity, self.runtime.encoders[label_set.modality].logit_scale)
        top_k = min(params.integer("top_k", DEFAULT_TOP_K, 1, 10_000), self.runtime.settings.max_top_k)
        return top_labels(label_set.names, scores[0], similarity[0], top_k, params.number("min_score", 0, 0, 1))

    def _score(self, embedding: np.ndarray, like: ItemOutcome, params: Params) -> list[Any]:
        """Score an embedding against the label set ``like`` was scored against."""
        assert like.scores is not None
        return self._top_of(like.scores.label_set, similarities(embedding, like.scores.label_set.matrix), params)

    def _embeddings(self, modality: Modality, matrix: np.ndarray) -> dict[str, Any]:
        return {
            "model": self.runtime.encoders[modality].name,
            "dim": int(matrix.shape[1]),
            "embeddings": matrix.astype(np.float32).tolist(),
        }

    def _require(self, modality: Modality) -> None:
        if modality not in self.runtime.workers:
            raise ApiError(ErrorCode.NOT_SERVED, f"this server does not serve {modality}", status=404)

    def _source(self, modality: Modality) -> Any:
        self._require(modality)
        return self.runtime.label_sources[modality]


def mean_embedding(outcomes: list[ItemOutcome]) -> np.ndarray:
    """A clip longer than one window is embedded as the normalized mean of its windows: (1, dim)."""
    rows = [o.embedding for o in outcomes if o.embedding is not None]
    return normalize_rows(np.mean(rows, axis=0)[None, :])


def _texts(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(t, str) and t.strip() for t in value):
        raise ApiError(ErrorCode.BAD_FIELD, f"'{key}' must be a non-empty list of non-empty strings")
    if len(value) > MAX_TEXTS:
        raise ApiError(ErrorCode.TOO_LARGE, f"at most {MAX_TEXTS} texts per request")
    return value


def _choice(value: str, choices: tuple[str, ...], key: str) -> str:
    if value not in choices:
        raise ApiError(ErrorCode.BAD_FIELD, f"'{key}' must be one of {', '.join(choices)}")
    return value


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
