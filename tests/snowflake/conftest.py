"""The `sessions` fixture: one Snowpark local-testing session per test, with a switchable outage (outage.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def sessions() -> Iterator[object]:
    from tests.snowflake.outage import FlakySessions

    provider = FlakySessions()
    yield provider
    provider.close()
