"""Issue 13, rule 9: caller identity. SPCS ingress passes `Sf-Context-Current-User` only, and a service function
sends only the context headers its CONTEXT_HEADERS lists; TRANSCRIPTION_STATUS listed none, so its reads were
unscoped, and no function sent the role that SPCS_WHISPER_ADMIN_ROLE is matched against. Every function now
asks for (CURRENT_USER, CURRENT_ROLE). https://docs.snowflake.com/en/sql-reference/sql/create-function-spcs
Parsed from sql/03_service_functions.sql with sqlglot; the headers' effect on scoping is tested against the
gateway (tests/integration/test_stages.py, tests/integration/test_function_async.py)."""

from __future__ import annotations

from sqlglot import exp

from tests.unit.test_sql import FUNCTIONS, properties, service_functions


def _headers(create: exp.Create) -> set[str]:
    value = properties(create).get("CONTEXT_HEADERS")
    if value is None:
        return set()
    items = value.expressions if isinstance(value, exp.Tuple) else [value]
    return {"CURRENT_USER" if isinstance(i, exp.CurrentUser) else i.sql("snowflake").upper() for i in items}


def test_every_function_sends_the_callers_user_and_role() -> None:
    functions = service_functions()
    assert set(functions) == set(FUNCTIONS)
    for key, create in functions.items():
        assert _headers(create) >= {"CURRENT_USER", "CURRENT_ROLE"}, key
