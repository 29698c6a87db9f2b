"""`GET /metrics` in Prometheus text format reflects real work."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Service
from tests.integration.helpers import DATA, transcribe


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize("service", ["ctranslate2"], indirect=True)  # engine-agnostic: one engine is enough
def test_metrics_count_jobs_audio_latency_and_batches(service: Service) -> None:
    with service.client() as client:
        transcribe(client, DATA / "en_jfk.m4a")
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("spcs_whisper_jobs", (("status", "succeeded"),))] >= 1
    assert samples[("spcs_whisper_audio_seconds_total", ())] >= 11
    assert samples[("spcs_whisper_jobs_finished_total", (("status", "succeeded"),))] >= 1
    assert ("spcs_whisper_queue_depth", ()) in samples
    posted = [
        v
        for (name, labels), v in samples.items()
        if name == "spcs_whisper_http_request_seconds_count"
        and ("route", "/v1/jobs") in labels
        and ("method", "POST") in labels
    ]
    assert posted and sum(posted) >= 1
    assert samples[("spcs_whisper_job_seconds_count", ())] >= 1
    assert ("spcs_whisper_whisper_mean_batch_size", ()) in samples
