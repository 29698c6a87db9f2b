"""With an API token configured, every route of the public port but the health probes and the web page needs it;
the service functions answer on their own port only (tests/integration/test_security_access.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.harness import free_port, functions_url, start_gateway, stop_gateway
from tests.integration.helpers import DATA, submit


def test_api_token_guards_everything_but_health(tmp_path: Path) -> None:
    url, process = start_gateway(
        tmp_path / "data",
        f"http://127.0.0.1:{free_port()}/absent",
        tmp_path / "gw.log",
        SPCS_WHISPER_API_TOKEN="s3cret",
    )
    try:
        with httpx.Client(base_url=url, timeout=30) as anonymous:
            assert anonymous.get("/healthz").status_code == 200
            assert anonymous.get("/readyz").status_code == 503  # open, and honest: no Ray app behind it
            assert anonymous.get("/").status_code == 200  # the web page; its own requests send the token
            for method, path in [
                ("GET", "/v1/jobs"),
                ("GET", "/metrics"),
                ("GET", "/openapi.json"),
                ("GET", "/v1/jobs/job_x"),
                ("DELETE", "/v1/jobs/job_x"),
            ]:
                response = anonymous.request(method, path)
                assert response.status_code == 401, path
                assert response.json()["error"]["code"] == "unauthorized"
                assert response.headers["www-authenticate"] == "Bearer"
            assert submit(anonymous, DATA / "en_jfk.m4a").status_code == 401
            # Service functions are not on the public port at all...
            assert anonymous.post("/functions/job_status", json={"data": [[0, "job_x"]]}).status_code == 404
        # ...but on their own (non-public) port, where Snowflake sends no bearer token and SPCS authenticates
        # the callers itself; every request names its user (CONTEXT_HEADERS).
        with httpx.Client(base_url=functions_url(url), timeout=30) as snowflake:
            user = {"sf-context-current-user": "ANALYST"}
            status = snowflake.post("/functions/job_status", json={"data": [[0, "job_x"]]}, headers=user)
            assert status.status_code == 200 and status.json()["data"][0][1]["error"]["code"] == "job_not_found"
        with httpx.Client(base_url=url, timeout=30, headers={"authorization": "Bearer wrong"}) as wrong:
            assert wrong.get("/v1/jobs").status_code == 401
            assert wrong.get("/v1/jobs", headers={"x-api-key": "wrong"}).status_code == 401
        # Behind SPCS's public endpoint `Authorization` carries Snowflake's token; the API token goes in X-Api-Key.
        snowflake_auth = {"authorization": 'Snowflake Token="abc"', "x-api-key": "s3cret"}
        with httpx.Client(base_url=url, timeout=30, headers=snowflake_auth) as behind_spcs:
            assert behind_spcs.get("/v1/jobs").status_code == 200
        with httpx.Client(base_url=url, timeout=30, headers={"authorization": "Bearer s3cret"}) as client:
            assert client.get("/v1/jobs").status_code == 200
            assert submit(client, DATA / "en_jfk.m4a").status_code == 202
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).audio.transcriptions.create(
                model="whisper-1", file=(DATA / "en_jfk.m4a").open("rb")
            )
    finally:
        stop_gateway(process)
