"""Every log record carries the request id of the request (or job) it was written for."""

from __future__ import annotations

import asyncio
import logging

import pytest

from service.logs import FORMAT, install_request_ids, request_id_var


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def kept() -> _Keep:
    install_request_ids()
    handler = _Keep()
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def test_records_carry_the_request_id_of_their_context(kept: _Keep) -> None:
    log = logging.getLogger("tests.logs")
    log.info("outside")

    async def request(rid: str) -> None:
        request_id_var.set(rid)
        await asyncio.sleep(0)
        log.info("inside %s", rid)

    async def both() -> None:
        await asyncio.gather(request("req_a"), request("req_b"))

    asyncio.run(both())
    assert kept.lines[0].endswith("tests.logs [-]: outside")
    assert any(line.endswith("[req_a]: inside req_a") for line in kept.lines)
    assert any(line.endswith("[req_b]: inside req_b") for line in kept.lines)


def test_installing_twice_stamps_once(kept: _Keep) -> None:
    install_request_ids()
    token = request_id_var.set("req_c")
    try:
        logging.getLogger("tests.logs").warning("x")
    finally:
        request_id_var.reset(token)
    assert kept.lines == [kept.lines[0]] and "[req_c]: x" in kept.lines[0]


def test_every_module_logger_is_named_after_its_module() -> None:
    """One naming rule: `logging.getLogger(__name__)` (third-party loggers may be tuned by name)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "service"
    named = re.compile(r"^\w+ = logging\.getLogger\((?![^)\n]*__name__)", re.M)
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if named.search(p.read_text())]
    assert offenders == []
