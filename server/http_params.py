"""What each HTTP endpoint takes, declared once: the handlers parse requests with these declarations and
server/openapi.py writes the schema from them, so the server and its schema cannot disagree.

A parameter comes in the query string or as a multipart field (a raw body leaves only the query string);
an array parameter is repeated, or sent as one JSON array (``labels=["cat","dog"]``, the form the CLIP and
CLAP demo services take), or both. JSON bodies are checked against the same declarations.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ErrorCode, InputError
from .eventlog import MAX_LIMIT as MAX_EVENTS
from .events_api import INSTANT, INSTANT_RULE
from .protocol import DEFAULT_TOP_K
from .settings import Settings

MAX_ADHOC_LABELS = 1000
MAX_TEXTS = 1000
DEFAULT_MATCH_THRESHOLD = 0.25
DEFAULT_EVENTS = 100

# The body media types the schema lists; the server also takes a few aliases and untyped bodies (http_api).
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp")
AUDIO_MEDIA_TYPES = ("audio/wav", "audio/flac", "audio/ogg", "application/octet-stream")

# Patterns are written for both readers, JSON Schema's (ECMA-262) and Python's: whitespace is spelled out,
# since the two (and schema tools) disagree on what ``\s`` covers. These are exactly the characters
# ``str.isspace`` knows, which the label parser strips; _BREAKS are those ``str.splitlines`` splits at.
_BREAKS = r"\n\x0b\x0c\r\x1c-\x1e\x85\u2028\u2029"
_BLANKS = r"\t\x1f \xa0\u1680\u2000-\u200a\u202f\u205f\u3000"
_SPACE = _BLANKS + _BREAKS
# A value that starts (after spaces) with '[' or '{' is read as JSON, so a plain value cannot start so.
FIELD_TEXT = rf"^[{_SPACE}]*[^{_SPACE}\[{{]"
# One label line: not blank, no '#' (a comment) or line break, not a directive ('@') or JSON, and '=' only
# as ``name = prompt | prompt`` with a name and at least one prompt.
LABEL = rf"^[{_SPACE}]*[^{_SPACE}#=@\[{{][^{_BREAKS}#=]*(?:=[^{_BREAKS}#]*[^{_SPACE}#|][^{_BREAKS}#]*)?$"
NOT_BLANK = rf"[^{_SPACE}]"

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

ParamType = Literal["integer", "number", "string", "array"]
Location = Literal["query", "path", "body"]


def _compile(pattern: str) -> re.Pattern[str]:
    # JSON Schema's '$' is the end of the string; Python's also matches before a final newline.
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)


@dataclass(frozen=True)
class Param:
    """One parameter: its name, type, range and default, and what it means."""

    name: str
    type: ParamType
    description: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] = ()
    pattern: str | None = None  # a string's, or each item's of an array
    rule: str = "a string"  # the pattern in words, for error messages
    max_items: int | None = None
    required: bool = False
    location: Location = "query"  # query parameters may come as multipart fields as well

    # --- the schema -------------------------------------------------------------

    def schema(self) -> dict[str, Any]:
        if self.type == "array":
            items = {**self._scalar_schema("string"), "description": self.rule}
            schema: dict[str, Any] = {"type": "array", "items": items, "minItems": 1}
            if self.max_items is not None:
                schema["maxItems"] = self.max_items
            return schema
        schema = self._scalar_schema(self.type)
        if self.default is not None:
            schema["default"] = self.default
        return schema

    def _scalar_schema(self, kind: str) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": kind}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        return schema

    # --- parsing ----------------------------------------------------------------

    def from_strings(self, values: list[str]) -> Any:
        """The value of a query or form parameter given ``values`` (each occurrence); every one must be valid."""
        if not values:
            return self._absent()
        if self.type == "array":
            items: list[Any] = []
            for value in values:
                # str.lstrip strips what _SPACE spells out, so this agrees with FIELD_TEXT and LABEL.
                items.extend(self._json_array(value) if value.lstrip()[:1] in ("[", "{") else [value])
            return self._array(items)
        parsed = [self._scalar_from_string(value) for value in values]
        return parsed[-1]

    def from_json(self, present: bool, value: Any) -> Any:
        """The value of a member of a JSON body."""
        if not present:
            return self._absent()
        if self.type == "array":
            if not isinstance(value, list):
                raise self._error(f"'{self.name}' must be an array of {self.rule}s")
            return self._array(value)
        if self.type in ("integer", "number"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._error(f"'{self.name}' must be a number")
            number = float(value) if abs(value) < 1e300 else (math.inf if value > 0 else -math.inf)
            return self._number(number, repr(value))
        return self._string(value)

    def _absent(self) -> Any:
        if self.required:
            what = "at least one" if self.type == "array" else "a value"
            raise self._error(f"'{self.name}' is required: give {what}")
        return self.default

    def _json_array(self, value: str) -> list[Any]:
        try:
            items = json.loads(value)
        except (ValueError, RecursionError):
            raise self._error(f"'{self.name}' starts like JSON but is not valid JSON: send a JSON array") from None
        if not isinstance(items, list):
            raise self._error(f"'{self.name}' must be a JSON array of {self.rule}s, not a JSON {type(items).__name__}")
        return items

    def _array(self, items: list[Any]) -> list[str]:
        if not items:
            raise self._error(f"'{self.name}' must not be empty")
        if self.max_items is not None and len(items) > self.max_items:
            raise self._error(f"'{self.name}' takes at most {self.max_items} per request, got {len(items)}")
        return [self._string(item) for item in items]

    def _string(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._error(
                f"'{self.name}' must be {self.rule}s" if self.type == "array" else f"'{self.name}' must be a string"
            )
        if self.enum and value not in self.enum:
            raise self._error(f"'{self.name}' must be one of {', '.join(self.enum)}, got {value!r}")
        if self.pattern is not None and not _compile(self.pattern).search(value):
            each = "each must be" if self.type == "array" else "must be"
            raise self._error(f"'{self.name}': {each} {self.rule}, got {value!r}")
        return value

    def _scalar_from_string(self, value: str) -> Any:
        if self.type == "string":
            return self._string(value)
        if not _NUMBER.fullmatch(value):
            raise self._error(
                f"'{self.name}' must be {'an integer' if self.type == 'integer' else 'a number'}, got {value!r}"
            )
        return self._number(float(value), value)

    def _number(self, number: float, raw: str) -> float | int:
        low = -float("inf") if self.minimum is None else self.minimum
        high = float("inf") if self.maximum is None else self.maximum
        if not low <= number <= high or not math.isfinite(number):
            raise self._error(f"'{self.name}' must be between {_num(low)} and {_num(high)}")
        if self.type == "integer":
            if number != int(number):
                raise self._error(f"'{self.name}' must be an integer, got {raw}")
            return int(number)
        return number

    def _error(self, message: str) -> InputError:
        if self.location == "path":
            return InputError(ErrorCode.NOT_FOUND, message)
        return InputError(ErrorCode.BAD_FIELD, message)


def _num(value: float) -> str:
    return f"{value:g}" if math.isinf(value) or value != int(value) else str(int(value))


BodyKind = Literal["image", "audio", "json", "text"]


@dataclass(frozen=True)
class Operation:
    """One endpoint: what it takes and what it may answer (error codes of server/errors.py)."""

    name: str  # the operationId, and the HttpApi method that serves it
    method: str
    path: str
    summary: str
    response: str  # the name of its 200 body's schema (openapi.py)
    response_description: str
    params: tuple[Param, ...] = ()
    body: BodyKind | None = None
    body_params: tuple[Param, ...] = ()  # members of a JSON body
    modality: Literal["image", "audio"] | None = None  # the model it needs, when the path says
    errors: tuple[str, ...] = ()  # beyond those every endpoint may answer (API_ERRORS)
    uses_models: bool = True  # counts against --max-requests
    msgpack_float32: bool = True  # msgpack answers carry float32 numbers, unless that would spoil them (epoch times)

    def parse(self, items: list[tuple[str, str]], path_params: dict[str, str]) -> dict[str, Any]:
        """Every declared query or path parameter, checked; ``items`` are the query's and the form's."""
        values: dict[str, Any] = {}
        for param in self.params:
            if param.location == "path":
                values[param.name] = param.from_strings([path_params[param.name]])
            else:
                values[param.name] = param.from_strings([v for k, v in items if k == param.name])
        return values

    def parse_json(self, body: dict[str, Any]) -> dict[str, Any]:
        return {p.name: p.from_json(p.name in body, body.get(p.name)) for p in self.body_params}


# Every endpoint may answer these: the models are loading, the server is draining, or it failed.
API_ERRORS = (ErrorCode.LOADING, ErrorCode.SHUTTING_DOWN, ErrorCode.INTERNAL)
_UPLOAD_ERRORS = (
    ErrorCode.BAD_FIELD,
    ErrorCode.BAD_MESSAGE,
    ErrorCode.TOO_LARGE,
    ErrorCode.UNSUPPORTED_TYPE,
    ErrorCode.NOT_SERVED,
    ErrorCode.INFERENCE_FAILED,
    ErrorCode.BUSY,
)
_IMAGE_ERRORS = (*_UPLOAD_ERRORS, ErrorCode.BAD_IMAGE)
_AUDIO_ERRORS = (*_UPLOAD_ERRORS, ErrorCode.BAD_AUDIO)


def operations(settings: Settings) -> tuple[Operation, ...]:
    """The endpoints of the HTTP API as this server's settings make them (``top_k`` ends at ``--max-top-k``)."""
    labels = Param(
        "labels",
        "array",
        "classify against these labels instead of the label file's (repeat it, or send one JSON array); "
        "`name = prompt | prompt` works as in label files",
        pattern=LABEL,
        rule="a label line (not blank, no '#', not starting with '@', '[' or '{', '=' only as 'name = prompt')",
        max_items=MAX_ADHOC_LABELS,
    )
    encode = Param(
        "encode",
        "string",
        "with `labels`: `new` runs only the prompts not in the label cache through the text tower, `all` runs every "
        "one (to time the text encoder against the label count); the label file's own set is encoded when it loads",
        default="new",
        enum=("new", "all"),
    )
    top_k = Param(
        "top_k",
        "integer",
        "how many labels to return",
        default=min(DEFAULT_TOP_K, settings.max_top_k),
        minimum=1,
        maximum=settings.max_top_k,
    )
    min_score = Param("min_score", "number", "leave out labels scoring under this", default=0.0, minimum=0, maximum=1)
    pcm = (
        Param(
            "sample_rate",
            "integer",
            "raw PCM: samples per second; with it an `application/octet-stream` body is raw PCM (a sound file "
            "carries its own rate)",
            minimum=1000,
            maximum=384_000,
        ),
        Param("channels", "integer", "raw PCM: interleaved channels", default=1, minimum=1, maximum=32),
        Param("dtype", "string", "raw PCM: sample type (little-endian)", default="int16", enum=("int16", "float32")),
    )
    texts = Param(
        "texts",
        "array",
        "texts to check against the image (repeat it, or send one JSON array)",
        pattern=FIELD_TEXT,
        rule="a text (not blank, not starting with '[' or '{')",
        max_items=MAX_TEXTS,
        required=True,
    )
    threshold = Param(
        "threshold",
        "number",
        "the cosine similarity at or above which a text matches",
        default=DEFAULT_MATCH_THRESHOLD,
        minimum=-1,
        maximum=1,
    )
    return (
        Operation(
            "classify_image", "POST", "/v1/classify/image", "Classify one image", "Classification",
            "the top labels", params=(labels, encode, top_k, min_score), body="image", modality="image",
            errors=_IMAGE_ERRORS,
        ),
        Operation(
            "classify_audio", "POST", "/v1/classify/audio",
            "Classify a whole sound clip (long clips window by window, plus overall)", "AudioClassification",
            "overall and per-window top labels", params=(labels, encode, top_k, min_score, *pcm), body="audio",
            modality="audio", errors=_AUDIO_ERRORS,
        ),
        Operation(
            "match", "POST", "/v1/match", "Check texts against an image: cosine similarity and a verdict", "Match",
            "one verdict per text", params=(texts, threshold), body="image", modality="image", errors=_IMAGE_ERRORS,
        ),
        Operation(
            "embed_image", "POST", "/v1/embed/image", "Normalized image embedding", "Embeddings", "one embedding",
            body="image", modality="image", errors=_IMAGE_ERRORS,
        ),
        Operation(
            "embed_audio", "POST", "/v1/embed/audio", "Normalized audio embedding (mean of the clip's windows)",
            "Embeddings", "one embedding", params=pcm, body="audio", modality="audio", errors=_AUDIO_ERRORS,
        ),
        Operation(
            "embed_text", "POST", "/v1/embed/text", "Normalized text embeddings for CLIP (image) or CLAP (audio)",
            "Embeddings", "one embedding per text", body="json",
            body_params=(
                Param("texts", "array", "the texts, embedded as given (no template)", pattern=NOT_BLANK,
                      rule="a text (not blank)", max_items=MAX_TEXTS, required=True, location="body"),
                Param("modality", "string", "`image`: CLIP's text tower; `audio`: CLAP's", default="image",
                      enum=("image", "audio"), location="body"),
            ),
            errors=(ErrorCode.BAD_MESSAGE, ErrorCode.BAD_FIELD, ErrorCode.TOO_LARGE, ErrorCode.NOT_SERVED,
                    ErrorCode.BUSY),
        ),
        Operation(
            "labels", "GET", "/v1/labels",
            "The current label sets, with versions, prompts, the files' text and reload history", "Labels",
            "per modality", uses_models=False,
        ),
        Operation(
            "edit_labels", "PUT", "/v1/labels/{modality}",
            "Replace a label file (only with --allow-label-edits); hot reload applies it", "Saved",
            "written; the reload follows",
            params=(Param("modality", "string", "whose label file", enum=("image", "audio"), required=True,
                          location="path"),),
            body="text",
            errors=(ErrorCode.FORBIDDEN, ErrorCode.BAD_FIELD, ErrorCode.NOT_FOUND, ErrorCode.NOT_SERVED,
                    ErrorCode.TOO_LARGE),
            uses_models=False,
        ),
        Operation(
            "events", "GET", "/v1/events",
            "Logged events (the SQLite event log, --data-dir): the newest `limit` that match, oldest first",
            "Events", "the events", params=_event_filters(), errors=(ErrorCode.BAD_FIELD, ErrorCode.NOT_FOUND),
            uses_models=False, msgpack_float32=False,
        ),
    )  # fmt: skip


def _event_filters() -> tuple[Param, ...]:
    def instant(name: str, meaning: str) -> Param:
        return Param(name, "string", f"{meaning}: {INSTANT_RULE}; a time without an offset is UTC",
                     pattern=INSTANT, rule=INSTANT_RULE)  # fmt: skip

    return (
        Param("stream", "string", "only this stream's events (the name its client gave it; empty: any)"),
        Param("label", "string", "only this label's events (a group's own events have no label; empty: any)"),
        Param("group", "string", "only this group's events: the group's own and its labels' (empty: any)"),
        Param("modality", "string", "only this modality's events", enum=("image", "audio")),
        instant("since", "events decided at or after this time (the server's clock)"),
        instant("until", "events decided before this time"),
        Param("limit", "integer", "the newest this many that match", default=DEFAULT_EVENTS, minimum=1,
              maximum=MAX_EVENTS),
    )  # fmt: skip
