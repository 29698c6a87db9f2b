"""Logging for every process: one format, and the request id on every record.

`request_id_var` holds the id of the request being served (the gateway's RequestContext sets it; the dispatcher
sets a job's id while it runs the job), and every log record carries it as `record.request_id` ("-" outside a
request), so the id an error body quotes finds its lines in the log. Loggers are named after their module
(`logging.getLogger(__name__)`).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_installed = False


def install_request_ids() -> None:
    """Stamp every log record, from any logger or library, with the current request id (idempotent)."""
    global _installed
    if _installed:
        return
    make = logging.getLogRecordFactory()

    def stamped(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.request_id = request_id_var.get()
        return record

    logging.setLogRecordFactory(stamped)
    _installed = True


def configure(level: int = logging.INFO) -> None:
    """The processes' logging: records to stderr in FORMAT, each with its request id."""
    install_request_ids()
    logging.basicConfig(level=level, format=FORMAT)
