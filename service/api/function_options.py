"""The job options of a service-function row: what follows the source in `TRANSCRIBE(source, ...)` and
`TRANSCRIBE_SUBMIT(source, ...)` (routes_functions.py), as the JobRequest its job is made from.

Either the positional text arguments (`language`, then `translate_to`), or ONE object of job options:
`TRANSCRIBE(source, OBJECT_CONSTRUCT('speakers', TRUE, 'language', 'hi'))`. Snowflake sends an OBJECT argument as
a JSON object and NULL as JSON null (https://docs.snowflake.com/en/sql-reference/external-functions-data-format);
the object's JSON text (a VARIANT coerced to VARCHAR) is read the same way. Both overloads of one arity call one
path, so the value decides, never the signature Snowflake resolved (sql/03_service_functions.sql says why).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from service.api.intake import JobRequest


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class OptionsError(ValueError):
    """A row's options argument that is not an object of job options: that row's `validation_error`."""


def options_object(value: Any) -> dict[str, Any] | None:
    """The job options of an OBJECT argument (a dict, or its JSON text), keys lower-cased and NULLs dropped (as
    OBJECT_CONSTRUCT drops them; OBJECT_CONSTRUCT_KEEP_NULL's nulls mean unset too); None when `value` is a
    plain text argument (a language code)."""
    if isinstance(value, str) and value.lstrip().startswith("{"):  # no language code starts with "{"
        try:
            value = json.loads(value)
        except ValueError:
            raise OptionsError("the options text is not a JSON object") from None
    if not isinstance(value, dict):
        return None
    fields: dict[str, Any] = {}
    for key, item in value.items():
        name = str(key).strip().lower()
        if name in fields:
            raise OptionsError(f"option {name!r} given twice")
        if item is not None:
            fields[name] = item
    if "idempotency_key" in fields:
        raise OptionsError("idempotency_key is not an option of a service function: Snowflake's batch id is the key")
    return fields


def job_request(args: list[Any], key: str | None) -> JobRequest:
    """A row's JobRequest from its arguments after the source: `[options object]`, or `[language[,
    translate_to]]` as text."""
    fields = options_object(args[0]) if args else None
    if fields is not None:
        if len(args) > 1:
            raise OptionsError("an options object is the only argument after the source")
        return JobRequest(**fields, idempotency_key=key)
    if any(isinstance(a, dict | list) for a in args):
        raise OptionsError("the options must be an object, e.g. OBJECT_CONSTRUCT('speakers', TRUE)")
    language, translate_to = (list(args) + [None, None])[:2]
    return JobRequest(language=_text(language), translate_to=_text(translate_to) or None, idempotency_key=key)


def validation_message(exc: ValidationError) -> str:
    """Pydantic's errors, each naming its option (`speakers: ...`, `colour: Extra inputs are not permitted`)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e.get("loc") else e["msg"] for e in exc.errors())
