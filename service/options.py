"""`JobOptions`: what a job asks of the model, declared once.

The API validates requests with it (the job, batch, function and OpenAI routes add only their own request
fields), the job record keeps it whole (one JSON / VARIANT column), the dispatcher sends it to the Ray app as
query parameters (`query()`), and the Ray app validates them with this same model. Adding an option means:
a field here, the code that uses it, its tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema, field_validator

from service.languages import normalise_language

Task = Literal["transcribe", "translate"]
# Which queue a job waits in: `interactive` (a service-function row, the synchronous OpenAI routes, or a short
# file) goes before `bulk` at every step: the gateway's claims, the Ray app's decode slots, window budget and
# batches. The gateway decides it (GatewaySettings.scheduling); the Ray app takes it as the `lane` parameter.
Lane = Literal["interactive", "bulk"]
# Options the Ray app does not need: the gateway acts on them after transcription.
GATEWAY_ONLY = frozenset({"translate_to"})


# The most speakers diarization looks for when the job does not bound the count.
MAX_SPEAKERS = 8


@dataclass(frozen=True)
class SpeakerCount:
    """How many speakers diarization may find: `auto` (1 to MAX_SPEAKERS), an exact count, or a min-max range.
    Written as text everywhere it travels (`str()`): "auto", "3", "2-4"."""

    min: int = 1
    max: int = MAX_SPEAKERS

    def __str__(self) -> str:
        if (self.min, self.max) == (1, MAX_SPEAKERS):
            return "auto"
        return str(self.min) if self.min == self.max else f"{self.min}-{self.max}"

    @classmethod
    def parse(cls, value: object) -> SpeakerCount | None:
        """From what a request may send: false/none/off (None: no diarization), true/auto, a count, "min-max",
        or {"min": , "max": }; a ValueError says what is wrong."""
        if value is None or isinstance(value, SpeakerCount):
            return value
        if isinstance(value, bool):
            return cls() if value else None
        if isinstance(value, dict):
            low, high = value.get("min", 1), value.get("max", value.get("min", MAX_SPEAKERS))
        elif isinstance(value, int):
            low = high = value
        elif isinstance(value, str):
            text = value.strip().lower()
            if text in ("", "false", "0", "no", "off", "none"):
                return None
            if text in ("true", "yes", "on", "auto"):
                return cls()
            low_text, _, high_text = text.partition("-")
            try:
                low = int(low_text)
                high = int(high_text) if high_text else low
            except ValueError:
                raise ValueError(f"speakers must be true, a count or a min-max range, not {value!r}") from None
        else:
            raise ValueError(f"speakers must be true, a count or a min-max range, not {value!r}")
        if not (isinstance(low, int) and isinstance(high, int)) or not 1 <= low <= high <= MAX_SPEAKERS:
            raise ValueError(f"speakers: counts from 1 to {MAX_SPEAKERS}, min not above max ({value!r})")
        return cls(low, high)


Speakers = Annotated[
    SpeakerCount | None,
    BeforeValidator(SpeakerCount.parse),
    PlainSerializer(lambda value: None if value is None else str(value)),
    WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "integer"}, {"type": "string"}, {"type": "null"}]}),
]


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
    speakers: Speakers = Field(
        None,
        description="label who spoke when (SPEAKER_00, ...): true for an automatic count, a count, or min-max "
        f"such as 2-4 (at most {MAX_SPEAKERS})",
    )
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
