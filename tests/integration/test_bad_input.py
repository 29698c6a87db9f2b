"""Moved: bad input is the gateway's rule, tested in process in tests/api/test_bad_input.py (issue 15).

`assert_error` stays importable from here for the modules that still use it."""

from __future__ import annotations

from tests.api.test_bad_input import assert_error

__all__ = ["assert_error"]
