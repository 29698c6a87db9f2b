"""What clients send: the multipart form or JSON body of a job, validated into options (one 422 shape).

Shared by the job, batch, function and OpenAI-compatible routes; `admission.py` then stores the job.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from service.api.errors import ApiError, BodyTooLarge
from service.config import Settings
from service.options import JobOptions

MAX_FIELD_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32  # a job body nests 1 level, a service-function batch 3
SMALL_JSON_BYTES = 64 * 1024  # checked and parsed in well under a millisecond


def multipart_body(required: list[str], properties: dict[str, dict]) -> dict[str, Any]:
    """OpenAPI `openapi_extra` for a route that reads its multipart form itself (with an audio `file`)."""
    fields: dict[str, dict] = {"file": {"type": "string", "format": "binary"}}
    fields.update(properties)
    schema = {"type": "object", "required": required, "properties": fields}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def form_fields(model: type[BaseModel]) -> dict[str, dict]:
    """A request model's fields as multipart form properties (its JSON schema's, a nullable one as its type, one
    of several types as text: a form field is text, e.g. `speakers` true / 3 / 2-4)."""
    properties = {}
    for name, field in model.model_json_schema()["properties"].items():
        variants = [v for v in field.pop("anyOf", [{}]) if v.get("type") != "null"]
        field.pop("title", None)
        if field.get("default", 0) is None:
            del field["default"]
        properties[name] = {**(variants[0] if len(variants) == 1 else {"type": "string"}), **field}
    return properties


class JobRequest(JobOptions):
    """A job as a client asks for it: its options (service/options.py) and the request-only fields."""

    model: str | None = None
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)

    def job_options(self) -> JobOptions:
        """What the job keeps and the Ray app decodes with (the request-only fields dropped)."""
        return JobOptions(**self.model_dump(include=set(JobOptions.model_fields), exclude_unset=True))


class SourceJob(JobRequest):
    """`POST /v1/jobs` as JSON: the audio is a file on a stage instead of an upload."""

    source: str = Field(
        ..., min_length=2, max_length=2048, examples=["@AUDIO_FILES_STAGE/calls/a.mp4", "https://host/a.mp3"]
    )


class BatchRequest(JobRequest):
    """`POST /v1/batches`: one job per file under `stage` whose relative path fully matches `pattern`."""

    stage: str = Field(..., min_length=2, max_length=1200, examples=["@AUDIO_FILES_STAGE"])
    pattern: str = Field(".*", max_length=500, examples=[".*[.]mp4"])


_STRING = re.compile(rb'"[^"]*"')  # once escapes are gone; linear: no quote inside, nothing to backtrack
_OTHER_BYTES = bytes(sorted(set(range(256)) - set(b"[]{}")))
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")


def nesting_problem(body: bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """Why the JSON text `body` (UTF-8) must not be parsed: nested deeper than `limit`, or brackets that do
    not match; None when neither. Cheap and linear, at C speed: escape pairs and strings are dropped, the
    brackets left are stripped of innermost pairs at most `limit` times. Exact for valid JSON (its
    backslashes are all inside strings), and for the valid prefix of invalid JSON, which is all a parser reads."""
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = _STRING.sub(b"", text).translate(_AS_SQUARE, _OTHER_BYTES)
    too_deep = f"it nests arrays and objects deeper than {limit} levels"
    run = b"[" * (limit + 1)  # so many opening brackets in a row: too deep at once (the usual attack)
    for _ in range(limit):
        if not brackets:
            return None
        if run in brackets:
            return too_deep
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            return "its brackets do not match"
        brackets = inner
    return too_deep if brackets else None


async def json_body(request: Request, settings: Settings) -> bytes:
    """The request body, refused with 413 once it is known to exceed the JSON limit (MAX_JSON_MB): by its
    Content-Length, else while it streams in (never read whole first)."""
    limit = int(settings.gateway.max_json_mb * 1024 * 1024)
    too_large = ApiError(
        413, "json_too_large", f"the JSON body exceeds the limit of {limit / 1024 / 1024:g} MB (MAX_JSON_MB)"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except BodyTooLarge:  # the gateway's upload limit, when it is the smaller one
        raise too_large from None
    return bytes(body)


async def json_fields(request: Request, settings: Settings) -> dict[str, Any]:
    """The request body as a JSON object: 413 when larger than the JSON limit, 400 when it is not UTF-8 JSON
    or nests deeper than MAX_JSON_DEPTH (checked before parsing), 422 when it is not an object."""
    raw = await json_body(request, settings)
    # A large body (up to MAX_JSON_MB) is checked and parsed off the event loop; a small one is not worth a thread.
    body = parse_json(raw) if len(raw) <= SMALL_JSON_BYTES else await asyncio.to_thread(parse_json, raw)
    if not isinstance(body, dict):
        raise ApiError(422, "validation_error", "the body must be a JSON object")
    return body


def parse_json(raw: bytes) -> Any:
    """UTF-8 JSON text to Python, with its nesting checked before the parser sees it (400 otherwise)."""
    if problem := nesting_problem(raw):
        code = "json_too_deep" if problem.startswith("it nests") else "invalid_json"
        raise ApiError(400, code, f"the body is not acceptable JSON: {problem}")
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except ValueError as exc:  # UnicodeDecodeError included
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # not reached after the check above: the parser's stack is never the limit
        raise ApiError(400, "json_too_deep", "the body nests arrays and objects too deeply") from None


def validated(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    """`model(**fields)`, with pydantic's complaints turned into one 422 error body."""
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = [{"field": ".".join(str(p) for p in e["loc"]) or "form", "problem": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise ApiError(422, "validation_error", f"invalid fields: {summary}", fields=problems) from None


@asynccontextmanager
async def multipart(request: Request) -> AsyncIterator[tuple[UploadFile, dict[str, str | list[str]]]]:
    """The `file` part and the other fields (repeated fields become lists) of a multipart request."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media", "send multipart/form-data with the audio in a `file` part")
    async with request.form(max_files=1, max_fields=32, max_part_size=MAX_FIELD_BYTES) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "missing_file", "the form has no `file` part holding the audio")
        fields: dict[str, str | list[str]] = {}
        for key, value in form.multi_items():
            if key == "file" or not isinstance(value, str):
                continue
            name = key.removesuffix("[]")
            held = fields.get(name)
            if (held is not None) and (isinstance(held, list) != key.endswith("[]")):
                raise ApiError(422, "validation_error", f"the field {name!r} is sent both as `{name}` and `{name}[]`")
            if key.endswith("[]"):
                fields[name] = [*(held or []), value]
            else:
                fields[name] = value
        yield upload, fields
