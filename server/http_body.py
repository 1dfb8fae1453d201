"""Reading an HTTP request's body within the size limit: raw, a JSON object, or a multipart upload."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from .errors import ErrorCode, InputError


@dataclass
class Upload:
    """The file of a request: its bytes and their media type."""

    data: bytes
    content_type: str


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError(ErrorCode.TOO_LARGE, f"the body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # a body without a length header is cut off at the limit too
            raise InputError(ErrorCode.TOO_LARGE, f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request: Request, limit: int) -> dict[str, Any]:
    try:
        body = json.loads(await read_body(request, limit))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(ErrorCode.BAD_MESSAGE, f"send a JSON object: {exc}") from None
    if not isinstance(body, dict):
        raise InputError(ErrorCode.BAD_MESSAGE, 'send a JSON object like {"texts": ["a dog"], "modality": "image"}')
    return body


async def read_upload(request: Request, limit: int) -> tuple[Upload, list[tuple[str, str]]]:
    """The file (the raw body, or a multipart ``file`` part) and the form's other fields."""
    body = await read_body(request, limit)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        if not body:
            raise InputError(ErrorCode.BAD_FIELD, "the request body is empty: send the file as the body")
        return Upload(body, media_type(content_type)), []

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_part_size=limit).parse()
    except MultiPartException as exc:
        raise InputError(ErrorCode.BAD_MESSAGE, f"malformed multipart body: {exc.message}") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InputError(ErrorCode.BAD_FIELD, "the multipart form needs a 'file' part")
    data = await upload.read()
    if not data:
        raise InputError(ErrorCode.BAD_FIELD, "the 'file' part is empty")
    fields = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    return Upload(data, media_type(upload.content_type or "")), fields


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()
