"""In-process gateway for the API tests: `create_app` with a real SQLite store in tmp_path and a fake inference
(tests/fakes.py), driven through Starlette's TestClient (its lifespan runs: dispatcher, store, pools). The
gateway's two doors are two clients on one app: RequestContext tells them apart by the ASGI scope's `server`
port, which the TestClient takes from the request URL."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from service.api.app import Backends, create_app
from service.api.deps import Services
from service.config import Settings
from service.inference.client import Inference
from service.storage.sqlite import SQLiteStore
from service.storage.stages import StageReader
from tests.fakes import FakeInference

PUBLIC_PORT, FUNCTIONS_PORT = 8080, 8081


@dataclass
class Gateway:
    """One app: `public` (the public port), `functions` (the service-function port), its fake inference."""

    public: TestClient
    functions: TestClient
    inference: Any
    settings: Settings

    @property
    def services(self) -> Services:
        return self.public.app.state.services  # type: ignore[attr-defined]

    def client(self, name: str = "public", **kwargs: Any) -> TestClient:
        """Another client on a door of the same app (e.g. its own default `headers`)."""
        return door(self.public, name, **kwargs)


@contextmanager
def gateway(data_dir: Path, inference: Inference | None = None, **settings: Any) -> Iterator[Gateway]:
    """A gateway app on `data_dir` with `settings` (Settings fields), its lifespan running meanwhile."""
    config = Settings(data_dir=data_dir, port=PUBLIC_PORT, functions_port=FUNCTIONS_PORT, **settings)
    inference = inference if inference is not None else FakeInference()
    db, schema = config.snowflake.snowflake_database, config.snowflake.snowflake_schema  # the home, as build_backends
    home = f"{db}.{schema}" if db and schema else None
    stages = StageReader(config.gateway.stage_mounts, temp_dir=data_dir, home=home)
    backends = Backends(SQLiteStore(data_dir), stages, inference)
    app = create_app(config, backends)
    with TestClient(app, base_url=f"http://testserver:{PUBLIC_PORT}", raise_server_exceptions=False) as public:
        yield Gateway(public, door(public, "functions"), inference, config)


class Door(TestClient):
    """A client of an app whose lifespan another client runs: `with` only closes the client."""

    def __enter__(self) -> Door:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


def door(public: TestClient, name: str, **kwargs: Any) -> TestClient:
    """A client of `public`'s app on the named door ("public" or "functions"), on its running event loop."""
    port = FUNCTIONS_PORT if name == "functions" else PUBLIC_PORT
    client = Door(public.app, base_url=f"http://testserver:{port}", raise_server_exceptions=False, **kwargs)
    client.portal = public.portal  # the lifespan's loop: the dispatcher and the store live there
    return client


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """`make_gateway(inference=None, **settings)`: a gateway in tmp_path, stopped at the test's end."""
    with contextlib.ExitStack() as stack:
        count = 0

        def make(inference: Inference | None = None, **settings: Any) -> Gateway:
            nonlocal count
            count += 1
            return stack.enter_context(gateway(tmp_path / f"gw{count}", inference, **settings))

        yield make


@pytest.fixture
def client(gw: Gateway) -> Iterator[TestClient]:
    """The public port of the module's `gw` gateway."""
    with gw.client("public") as public:
        yield public


@pytest.fixture
def functions(gw: Gateway) -> Iterator[TestClient]:
    """The service-function port of the module's `gw` gateway, as Snowflake's service functions reach it."""
    with gw.client("functions") as door:
        yield door
