"""`JobOptions`: what a job asks of the model, declared once.

The API validates requests with it (the job, batch, function and OpenAI routes add only their own request
fields), the job record keeps it whole (one JSON / VARIANT column), the dispatcher sends it to the Ray app as
query parameters (`query()`), and the Ray app validates them with this same model. Adding an option means:
a field here, the code that uses it, its tests.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.languages import normalise_language

Task = Literal["transcribe", "translate"]
# Which queue a job waits in: `interactive` (a service-function row, the synchronous OpenAI routes, or a short
# file) goes before `bulk` at every step: the gateway's claims, the Ray app's decode slots, window budget and
# batches. The gateway decides it (GatewaySettings.scheduling); the Ray app takes it as the `lane` parameter.
Lane = Literal["interactive", "bulk"]
# Options the Ray app does not need: the gateway acts on them after transcription.
GATEWAY_ONLY = frozenset({"translate_to"})


class JobOptions(BaseModel):
    """A job's decode and translation options; unknown fields are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")

    language: str | None = Field(None, description="ISO-639-1 code; unset or `auto`: detected")
    task: Task = "transcribe"
    word_timestamps: bool = False
    prompt: str | None = Field(
        None,
        max_length=16_000,
        description="text that primes Whisper's vocabulary, e.g. the previous transcript: its last 223 tokens are "
        "used, as Whisper does",
    )
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    hotwords: str | None = Field(None, max_length=1000, description="words or phrases to bias decoding towards")
    vad_filter: bool | None = Field(None, description="cut the audio at speech (Silero VAD); unset: the service's")
    vad_threshold: float | None = Field(None, ge=0.0, le=1.0, description="speech probability threshold")
    vad_min_silence_ms: int | None = Field(None, ge=0, le=10_000, description="silence that ends a speech region")
    vad_speech_pad_ms: int | None = Field(None, ge=0, le=2000, description="padding kept around each speech region")
    translate_to: str | None = Field(None, description="translate the transcript into this language afterwards")

    @field_validator("language", "translate_to")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return normalise_language(value)

    @field_validator("prompt", "hotwords")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return value if value and value.strip() else None

    def english_only_problem(self, model: str) -> str | None:
        """Why an English-only model cannot run these options (another language, or Whisper's translate task,
        which is into English from another language); None when it can."""
        if self.language not in (None, "en") or self.task == "translate":
            return f"model {model!r} is English-only"
        return None

    def stored(self) -> dict[str, Any]:
        """The job record's OPTIONS column: the options that differ from their defaults."""
        return self.model_dump(exclude_defaults=True)

    def query(self) -> dict[str, str]:
        """The Ray app's query parameters (the options it decodes with, as strings; defaults left out)."""
        out = {}
        for name, value in self.model_dump(exclude_defaults=True, exclude=set(GATEWAY_ONLY)).items():
            if value is not None:
                out[name] = str(value).lower() if isinstance(value, bool) else str(value)
        return out
