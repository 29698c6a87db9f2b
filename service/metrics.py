"""Prometheus metrics of the gateway (one registry per app, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """Everything `/metrics` exposes; gauges that mirror the store are set just before each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Gauge("spcs_whisper_jobs", "Jobs in the store by status", ["status"], registry=r)
        self.queue_depth = Gauge("spcs_whisper_queue_depth", "Jobs waiting to run", registry=r)
        self.in_flight = Gauge("spcs_whisper_jobs_in_flight", "Jobs running on Ray Serve now", registry=r)
        self.finished = Counter("spcs_whisper_jobs_finished", "Jobs finished, by outcome", ["status"], registry=r)
        self.attempts_failed = Counter(
            "spcs_whisper_attempts_failed", "Job attempts that failed, by error code", ["code"], registry=r
        )
        self.audio_seconds = Counter("spcs_whisper_audio_seconds", "Seconds of audio transcribed", registry=r)
        self.job_seconds = Histogram(
            "spcs_whisper_job_seconds", "Processing time of succeeded jobs", buckets=JOB_BUCKETS, registry=r
        )
        self.request_seconds = Histogram(
            "spcs_whisper_http_request_seconds",
            "HTTP request latency by route",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batches = Gauge("spcs_whisper_whisper_batches", "Batched calls made by the Whisper deployment", registry=r)
        self.batch_windows = Gauge(
            "spcs_whisper_whisper_batch_windows", "Windows decoded in those batched calls", registry=r
        )
        self.mean_batch_size = Gauge("spcs_whisper_whisper_mean_batch_size", "Windows per batched call", registry=r)
        self.export_pending = Gauge(
            "spcs_whisper_snowflake_export_pending", "Changed rows not yet exported to Snowflake", registry=r
        )
        self.export_statements = Gauge(
            "spcs_whisper_snowflake_export_statements", "Statements the Snowflake export has run", registry=r
        )
        self.export_failures = Gauge(
            "spcs_whisper_snowflake_export_failures", "Consecutive failed exports (0: Snowflake answers)", registry=r
        )
        self.translations = Counter(
            "spcs_whisper_translations", "Translations by method and outcome", ["method", "outcome"], registry=r
        )
