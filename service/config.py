"""The one settings object, read from the environment (prefix `SPCS_WHISPER_`), in three groups.

`Settings.gateway` (HTTP doors, admission, the queue, stages, URL sources, service functions, OpenAI routes),
`Settings.inference` (the Ray Serve app: the only part sent to Ray) and `Settings.snowflake` (connection,
export, Cortex translation). A field's environment variable is `SPCS_WHISPER_` + its name, whatever its group;
`Settings(max_batch_size=4, store="sqlite")` puts each keyword into its group.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, StringConstraints, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.inference.engines import check_engine

TranslateMethod = Literal["cortex-translate", "cortex-complete", "whisper"]
# A stage allow-list entry: Snowflake's unquoted identifier rules (as service/storage/stages.py), optionally db.schema.
StageName = Annotated[
    str, StringConstraints(pattern=r"^@?[A-Za-z_][A-Za-z0-9_$]{0,254}(\.[A-Za-z_][A-Za-z0-9_$]{0,254}){0,2}$")
]


def _env(name: str, *fallbacks: str) -> AliasChoices:
    """Read `SPCS_WHISPER_<NAME>`, else the plain names SPCS itself sets (e.g. `SNOWFLAKE_HOST`)."""
    return AliasChoices(f"SPCS_WHISPER_{name}", *fallbacks)


def gpu_present() -> bool:
    """True when an NVIDIA device is visible, without importing torch (the gateway stays light)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").exists()


GPU_BATCH_SIZE = 16  # MAX_BATCH_SIZE when unset, on a GPU...
CPU_BATCH_SIZE = 1  # ...and for a single-threaded CPU replica, which gains nothing from batches (docs/benchmarks.md)
_FROM_ENV = SettingsConfigDict(env_prefix="SPCS_WHISPER_", env_nested_delimiter="__", extra="ignore")


class GatewaySettings(BaseSettings):
    """The gateway: its two ports, limits and admission, the job queue and its retention, stages, URL sources,
    service functions and the OpenAI-compatible routes."""

    model_config = _FROM_ENV

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    functions_port: int = Field(
        8081,
        ge=1,
        le=65535,
        description="Snowflake's service functions (/functions/*) only, on a non-public endpoint; the public "
        "port answers everything else",
    )
    keep_alive_s: float = Field(
        75.0, gt=0, description="an idle connection, or one whose request head has not fully arrived, is closed"
    )
    request_read_timeout_s: float = Field(
        60.0, gt=0, description="a request body that sends nothing for this long is cut off (408)"
    )
    max_header_kb: int = Field(32, ge=4, le=1024, description="largest request head (request line and headers)")
    data_dir: Path = Path("./data")
    api_token: SecretStr | None = Field(
        None, description="when set, every route of the public port but /healthz, /readyz and the web page needs it"
    )
    admin_users: list[str] = Field(default_factory=list, description="Snowflake users who see every job")
    admin_role: str | None = Field(None, description="callers with this Snowflake role see every job")
    probe_full_decode_mb: float = Field(
        25.0, ge=0, description="uploads up to this size are fully decoded at submit time"
    )
    max_queued_jobs: int = Field(10_000, ge=1, description="backlog beyond which POST /v1/jobs answers 429")
    max_jobs_per_user: int | None = Field(
        None, ge=1, description="queued + running jobs one Snowflake user may have; beyond, 429"
    )
    dispatch_concurrency: int | None = Field(
        None,
        ge=1,
        description="jobs the gateway runs on Ray Serve at once; unset: what the Ray app says it can hold "
        "(job_capacity of its /ready: 2 × MAX_BATCH_SIZE per running Whisper replica, at least 16)",
    )
    scheduling: Literal["fair", "fifo"] = Field(
        "fair",
        description="fair: interactive jobs (service-function rows, the synchronous OpenAI routes, files of at most "
        "INTERACTIVE_MAX_SECONDS) go first, at the gateway and in the Ray app, and queued jobs are claimed fewest "
        "running per owner first; fifo: every job bulk, claimed in submission order (the Ray app still shares its "
        "replicas round robin between the jobs in flight)",
    )
    interactive_max_seconds: float = Field(
        30.0, ge=0, description="with fair scheduling, an uploaded file at most this long is interactive"
    )
    interactive_reserve: int = Field(
        4,
        ge=0,
        description="with fair scheduling, jobs in flight beyond DISPATCH_CONCURRENCY that only interactive jobs "
        "may take: a service function's row or a short file never waits for a slot a stage batch holds",
    )
    drain_timeout_s: float = Field(30.0, ge=0, description="on SIGTERM, how long running jobs may finish")
    max_attempts: int = Field(3, ge=1, description="tries per job before it fails")
    retry_backoff_s: float = Field(2.0, ge=0)
    request_timeout_s: float = Field(3600.0, gt=0, description="longest a single job call to Ray Serve may take")
    max_json_mb: float = Field(
        2.0, gt=0, description="largest JSON body (job, batch, service-function batch); larger: 413 as it streams"
    )
    max_long_polls: int = Field(
        256, ge=1, description="GET /v1/jobs/{id}?wait= requests held open at once; beyond, 429 too_many_waiters"
    )
    max_url_downloads: int = Field(
        4, ge=1, description="source URLs downloaded at once; beyond, 429 too_many_downloads"
    )
    audio_retention_days: float = Field(
        7.0, ge=0, description="uploaded audio of finished jobs is deleted this long after they finished; 0 = keep"
    )
    job_retention_days: float = Field(
        90.0, ge=0, description="finished jobs (rows, transcripts) are deleted locally this long after; 0 = keep"
    )
    retention_check_s: float = Field(3600.0, gt=0, description="how often the retention rules are applied")
    min_free_disk_mb: float = Field(
        1024.0, ge=0, description="below this much free space on the data volume new jobs are refused with 507"
    )
    serve_url: str | None = Field(None, description="Ray Serve app URL the gateway calls; default from host/port")
    store: Literal["sqlite", "snowflake"] = Field("sqlite", description="where jobs and results live")
    stage_mounts: dict[str, Path] = Field(
        default_factory=dict, description='stage volume mounts, e.g. {"AUDIO_FILES_STAGE": "/stages/audio"}'
    )
    max_batch_files: int = Field(10_000, ge=1, description="most files one POST /v1/batches may match")
    stage_allowlist: list[StageName] | dict[str, list[StageName]] | None = Field(
        None,
        description="the stages a caller may name (jobs, batches, service functions, the audio route): a list for "
        'every caller, or {"*": [...], "<ROLE>": [...]} by the Snowflake role a service function sends (the public '
        "port believes no role); unset: the mounted stages (STAGE_MOUNTS). Any other stage is 403 stage_not_allowed",
    )
    batch_match_timeout_s: float = Field(
        10.0, gt=0, description="longest a batch's pattern may take over the stage's file names (then 422)"
    )
    url_allow_http: bool = Field(False, description="accept http:// sources, not only https://")
    url_allowlist: list[str] = Field(
        default_factory=list, description="hosts or IP/CIDRs allowed even if they resolve to internal addresses"
    )
    url_timeout_s: float = Field(300.0, gt=0, description="longest a source download may take")
    function_wait_s: float = Field(
        10.0, ge=0, description="a service-function request waits this long for its rows, then answers 202 (polled)"
    )
    function_timeout_s: float = Field(
        3000.0, gt=0, description="without Snowflake's batch id (no polling possible): longest a request waits"
    )
    openai_keepalive_s: float = Field(
        20.0,
        ge=0,
        lt=90,
        description="a /v1/audio/* request waiting this long gets its 200 headers, then a whitespace keep-alive "
        "this often until the result; 0 = off",
    )
    openai_max_wait_s: float = Field(
        3600.0, gt=0, description="longest /v1/audio/* waits for its job; then the job link (202, or in the body)"
    )
    openai_disconnect_grace_s: float = Field(
        30.0,
        ge=0,
        description="a /v1/audio/* job whose client went away before its result is cancelled once no other "
        "request (an SDK retry) has waited on it for this long; not with `X-Keep-Job: true` or `Idempotency-Key`",
    )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"


class InferenceSettings(BaseSettings):
    """The Ray Serve app: engine and model, batching, replicas and autoscaling, decoding limits. The only group
    sent to the Ray deployments."""

    model_config = _FROM_ENV

    engine: str | None = Field(
        None,
        description="an engine of the registry (service/inference/engines.py): ctranslate2 on CPU, transformers on "
        "GPU when unset; `standin` is for scale tests only",
    )
    model: str = Field("base", description="tiny.en | base | a CTranslate2 or Hugging Face checkpoint folder")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = Field("auto", description="int8 on CPU, float16 on GPU when auto")
    cpu_threads: int = Field(
        0, ge=0, description="threads per Whisper replica on CPU; 0: the CPU layout (1 with one replica per core)"
    )
    beam_size: int = Field(5, ge=1, le=16)
    vad: bool = True
    max_batch_size: int | None = Field(
        None,
        ge=1,
        le=128,
        description="most 30 s windows per model call; unset: 1 for single-threaded CPU replicas, else 16",
    )
    batch_wait_timeout_s: float = Field(
        0.05, ge=0, description="an idle model starts a batch once no window has joined it for this long"
    )
    batch_max_wait_s: float = Field(0.5, ge=0, description="...and at the latest this long after its first window")
    whisper_replicas: int | None = Field(
        None,
        ge=1,
        description="Whisper replicas when WHISPER_MIN/MAX_REPLICAS are unset; unset: 1 with a GPU, else the CPU "
        "layout (one single-threaded replica per core, at most 8; cores ÷ CPU_THREADS when that is set)",
    )
    whisper_min_replicas: int | None = Field(
        None,
        ge=1,
        description="autoscaling floor of the Whisper replicas (capped by the GPUs present); unset: WHISPER_REPLICAS",
    )
    whisper_max_replicas: int | None = Field(
        None, ge=1, description="autoscaling ceiling: the GPUs the worker service may have; unset: WHISPER_REPLICAS"
    )
    whisper_target_windows: int | None = Field(
        None,
        ge=1,
        description="windows queued or running per Whisper replica that autoscaling aims at; unset: MAX_BATCH_SIZE",
    )
    decoder_min_replicas: int = Field(1, ge=1, description="autoscaling floor of the Decoder (decode/VAD/stitch)")
    decoder_max_replicas: int = Field(1, ge=1, description="autoscaling ceiling of the Decoder replicas")
    decoder_num_cpus: float = Field(1.0, gt=0, description="logical CPUs one Decoder replica claims (Ray placement)")
    decoders_per_node: int | None = Field(
        None, ge=1, description="most Decoder replicas on one Ray node (spreads them over the nodes); unset: no limit"
    )
    upscale_delay_s: float = Field(5.0, ge=0, description="load above target this long adds replicas")
    downscale_delay_s: float = Field(60.0, ge=0, description="load below target this long removes replicas")
    window_retries: int = Field(
        6, ge=0, description="times a window is sent again when its Whisper replica died (node lost) before answering"
    )
    standin_gpu: Literal["a10g", "h100"] = Field(
        "a10g", description="ENGINE=standin only: the published large-v3 timing curve it holds batches for"
    )
    standin_time_scale: float = Field(
        1.0, gt=0, description="ENGINE=standin only: multiplies every hold (slower than the GPU when > 1)"
    )
    speaker_model: Literal["resemblyzer", "pyannote"] = Field(
        "resemblyzer",
        description="speaker embeddings for the `speakers` option: Resemblyzer's GE2E encoder (its wheel's weights), "
        "or pyannote.audio's embedding model (needs pyannote.audio in the image and SPEAKER_MODEL_PATH)",
    )
    speaker_model_path: str | None = Field(
        None, description="the speaker model's checkpoint (file or folder); unset: the resemblyzer wheel's weights"
    )
    decode_concurrency: int = Field(
        4, ge=1, description="files one Decoder replica decodes at once; more wait for a slot, spooled to disk"
    )
    decode_interactive_reserve: int = Field(
        2,
        ge=0,
        description="files beyond DECODE_CONCURRENCY one Decoder replica decodes for interactive jobs only, so a "
        "short file or a service-function row never waits for a slot long bulk files hold",
    )
    decode_windows_in_flight: int | None = Field(
        None,
        ge=1,
        description="windows one Decoder replica has at Whisper at once, all jobs together (decoding pauses "
        "beyond); unset: 2 × MAX_BATCH_SIZE × WHISPER_REPLICAS",
    )
    whisper_num_gpus: float | None = Field(
        None, ge=0, description="GPUs per Whisper replica; unset: 1 when this node has a GPU, else 0"
    )
    ray_address: str | None = Field(None, description="join this Ray cluster; unset starts a local one")
    ray_num_cpus: int | None = Field(None, ge=1, description="logical CPUs of the local Ray instance")
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(8000, ge=1, le=65535)
    cache_dir: Path | None = Field(None, description="converted/joined model cache; default DATA_DIR/models")
    max_upload_mb: float = Field(512.0, gt=0)
    max_audio_seconds: float = Field(4 * 3600.0, gt=0, description="longest audio a job may hold")

    @model_validator(mode="after")
    def _engine_runs_here(self) -> InferenceSettings:
        """ENGINE must be registered and run on DEVICE, as the engine registry declares."""
        if self.engine is not None and (problem := check_engine(self.engine, self.device)):
            raise ValueError(problem)
        return self

    @property
    def effective_engine(self) -> str:
        if self.engine is not None:
            return self.engine
        return "transformers" if gpu_present() else "ctranslate2"

    @property
    def whisper_bounds(self) -> tuple[int, int]:
        """(floor, ceiling) of the Whisper replicas; both WHISPER_REPLICAS unless set."""
        replicas = self.whisper_replicas or 1
        ceiling = self.whisper_max_replicas or max(replicas, self.whisper_min_replicas or 1)
        return min(self.whisper_min_replicas or replicas, ceiling), ceiling

    @property
    def batch_size(self) -> int:
        """MAX_BATCH_SIZE, else 16 (`scaling.hardware_layout` sets it for the hardware before the app starts)."""
        return self.max_batch_size or GPU_BATCH_SIZE

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def model_cache_dir(self) -> Path:
        """Converted and joined checkpoints (`Settings` sets CACHE_DIR to DATA_DIR/models when unset)."""
        return self.cache_dir or Path("./data/models")


class SnowflakeSettings(BaseSettings):
    """Snowflake: the connection (SPCS sets most of it), the export of jobs to tables, Cortex translation."""

    model_config = _FROM_ENV

    snowflake_account: str | None = Field(None, validation_alias=_env("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_ACCOUNT"))
    snowflake_host: str | None = Field(None, validation_alias=_env("SNOWFLAKE_HOST", "SNOWFLAKE_HOST"))
    snowflake_user: str | None = None
    snowflake_password: SecretStr | None = None
    snowflake_private_key_file: Path | None = Field(None, description="key-pair auth (PEM, PKCS#8)")
    snowflake_private_key_passphrase: SecretStr | None = None
    snowflake_role: str | None = None
    snowflake_warehouse: str | None = Field(None, validation_alias=_env("SNOWFLAKE_WAREHOUSE", "SNOWFLAKE_WAREHOUSE"))
    snowflake_database: str | None = Field(None, validation_alias=_env("SNOWFLAKE_DATABASE", "SNOWFLAKE_DATABASE"))
    snowflake_schema: str | None = Field(None, validation_alias=_env("SNOWFLAKE_SCHEMA", "SNOWFLAKE_SCHEMA"))
    snowflake_connection_name: str | None = Field(None, description="a named connection in connections.toml")
    snowflake_token_path: Path = Field(Path("/snowflake/session/token"), description="SPCS OAuth token file")
    snowflake_local_testing: bool = Field(False, description="use Snowpark's local emulator (development only)")
    export_interval_s: float = Field(
        1.0, ge=0, description="group commit: changed rows are exported to Snowflake at most this often"
    )
    export_max_rows: int = Field(1000, ge=1, description="most rows one export MERGE carries per table")
    export_retry_s: float = Field(5.0, gt=0, description="first retry delay after a failed export (doubles, max 300 s)")
    translate_method: TranslateMethod | None = Field(
        None, description="cortex-translate with the Snowflake store, whisper without; or cortex-complete"
    )
    cortex_model: str = Field("openai-gpt-4.1", description="model for cortex-complete")
    cortex_prompt: str = Field(
        "Translate the following {source_language} text into {target_language}. "
        "Answer with the translation only.\n\n{text}",
        description="cortex-complete prompt template: {text}, {source_language}, {target_language}",
    )
    cortex_max_chars: int = Field(3000, ge=100, description="longest text piece sent to Cortex in one call")
    translate_max_attempts: int = Field(4, ge=1)


GROUPS: dict[str, type[BaseSettings]] = {
    "gateway": GatewaySettings,
    "inference": InferenceSettings,
    "snowflake": SnowflakeSettings,
}


class Settings(BaseModel):
    """Every knob of the service, by group; the README's configuration table lists them."""

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    snowflake: SnowflakeSettings = Field(default_factory=SnowflakeSettings)

    @model_validator(mode="before")
    @classmethod
    def _grouped(cls, values: Any) -> Any:
        """Flat keywords (as the environment names them) go to the group that declares them; each group reads
        the environment for the rest."""
        if not isinstance(values, dict):
            return values
        out = {name: values[name] for name in GROUPS if name in values}
        flat = {key: value for key, value in values.items() if key not in GROUPS}
        for name, group in GROUPS.items():
            mine = {key: flat[key] for key in flat if key in group.model_fields}
            if not mine:
                continue
            given = out.get(name)
            base = given.model_dump() if isinstance(given, BaseModel) else dict(given or {})
            out[name] = group(**{**base, **mine})
        return out

    @model_validator(mode="after")
    def _cache_under_data(self) -> Settings:
        if self.inference.cache_dir is None:
            self.inference.cache_dir = self.gateway.data_dir / "models"
        return self

    @property
    def effective_translate_method(self) -> TranslateMethod:
        if self.snowflake.translate_method is not None:
            return self.snowflake.translate_method
        return "cortex-translate" if self.gateway.store == "snowflake" else "whisper"

    @property
    def effective_serve_url(self) -> str:
        """The Ray Serve app's URL the gateway calls: SERVE_URL, else from SERVE_HOST and SERVE_PORT."""
        url = self.gateway.serve_url or f"http://{self.inference.serve_host}:{self.inference.serve_port}/whisper"
        return url.rstrip("/")


def setting_fields() -> dict[str, FieldInfo]:
    """Every setting of every group, by name (its environment variable is `SPCS_WHISPER_` + the name upper-cased,
    unless its field names others)."""
    return {name: field for group in GROUPS.values() for name, field in group.model_fields.items()}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
