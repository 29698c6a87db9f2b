"""Whisper on 🤗 transformers: batched 30 s windows, one `generate` call per batch.

Per batch: log-mel features for every window (padded to 30 s), one encoder pass, one `generate` call
(beam search, timestamp tokens, one decoding pass per window), then one teacher-forced decoder pass for
`avg_logprob` / `no_speech_prob`, and, when asked, one more pass over the text tokens whose cross-attention
(alignment heads) gives word times by dynamic time warping (`alignment.py`), as OpenAI's `timing.py` does.
Segment times come from the timestamp tokens and are relative to the window start.

This module and `alignment.py` are the only ones of the service that import torch and transformers for decoding.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizer,
)
from transformers.modeling_outputs import BaseModelOutput

from service.audio import SAMPLE_RATE
from service.inference.alignment import SECONDS_PER_TOKEN, Aligned, WordAligner, attach_words
from service.inference.convert import LOAD_LOCK, ensure_hf_checkpoint
from service.inference.engines import from_checkpoint
from service.inference.loops import CHECK_EVERY, SEED, ends_in_loop, fallback_temperatures, looping_rows
from service.inference.models import ModelFiles
from service.inference.prompting import prompt_tokens
from service.inference.timestamps import split_at_timestamps
from service.inference.types import DecodeOptions, WindowResult, by_options
from service.transcript import Segment

if TYPE_CHECKING:
    from service.config import InferenceSettings

log = logging.getLogger(__name__)

WINDOW_SECONDS = 30.0
MIN_SAMPLES = 400  # one STFT frame
CHUNK = 8  # windows per teacher-forced decoder pass (full-vocabulary logits for every token)


class TransformersEngine:
    """Whisper via transformers' `WhisperForConditionalGeneration` (fp16 + SDPA on CUDA, fp32 on CPU)."""

    name = "transformers"

    def __init__(
        self,
        files: ModelFiles,
        cache_dir: Path,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
    ) -> None:
        if cpu_threads > 0:
            torch.set_num_threads(cpu_threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = _torch_dtype(compute_type, self.device)
        with LOAD_LOCK:  # model loading in transformers is not thread-safe
            path = ensure_hf_checkpoint(files, Path(cache_dir))
            self.model = WhisperForConditionalGeneration.from_pretrained(
                path, dtype=self.dtype, attn_implementation="sdpa"
            )
        if any(p.device.type == "meta" for p in self.model.parameters()):
            raise RuntimeError(f"{path}: weights left on the meta device (a concurrent load in this process?)")
        self.model.to(self.device).eval()  # type: ignore[arg-type]  # transformers' `to` wrapper is mistyped
        self.tokenizer = WhisperTokenizer.from_pretrained(path)
        self.feature_extractor = WhisperFeatureExtractor.from_pretrained(path)
        self.model_name = files.name

        gen = self.model.generation_config
        config = self.model.config
        self.multilingual: bool = bool(getattr(gen, "is_multilingual", config.vocab_size >= 51865))
        self.eot = _token_id(config.eos_token_id, "eos_token_id")
        self.sot = int(config.decoder_start_token_id)
        # Model-specific generation keys are set as attributes at load time: not declared on GenerationConfig.
        self.no_timestamps = int(gen.no_timestamps_token_id)  # type: ignore[attr-defined]
        self.timestamp_begin = self.no_timestamps + 1
        self.no_speech = self.no_timestamps - 1  # <|nocaptions|> / <|nospeech|>
        self.prev_sot = int(getattr(gen, "prev_sot_token_id", self.tokenizer.convert_tokens_to_ids("<|startofprev|>")))
        self.lang_to_id: dict[str, int] = dict(getattr(gen, "lang_to_id", None) or {}) if self.multilingual else {}
        self.task_to_id: dict[str, int] = dict(getattr(gen, "task_to_id", None) or {})
        layers, heads = config.decoder_layers, config.decoder_attention_heads
        self.alignment_heads: list[tuple[int, int]] = [
            (int(layer), int(head))
            for layer, head in (
                getattr(gen, "alignment_heads", None)
                or [(layer, head) for layer in range(layers // 2, layers) for head in range(heads)]
            )
        ]
        self.max_frames = int(config.max_source_positions)  # encoder frames in a 30 s window
        self.aligner = WordAligner(
            self.model,
            self.tokenizer,
            self.alignment_heads,
            no_timestamps=self.no_timestamps,
            eot=self.eot,
            max_frames=self.max_frames,
            chunk=CHUNK,
        )

    @classmethod
    def load(cls, settings: InferenceSettings, files: ModelFiles | None) -> TransformersEngine:
        """The registry's constructor (`engines.load_engine`)."""
        return from_checkpoint(cls, settings, files)

    # ------------------------------------------------------------------------------------------ public

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """Most likely language code and its probability for (the first 30 s of) `audio`."""
        if not self.multilingual or not self.lang_to_id:
            return "en", 1.0
        with torch.inference_mode():
            hidden = self._encode([_as_window(audio)])
            start = torch.tensor([[self.sot]], device=self.device)
            logits = self.model(encoder_outputs=(hidden,), decoder_input_ids=start, use_cache=False).logits[0, -1]
            tokens = list(self.lang_to_id)
            ids = torch.tensor([self.lang_to_id[t] for t in tokens], device=self.device)
            probs = logits[ids].float().softmax(-1)
            best = int(probs.argmax())
        return tokens[best].strip("<|>"), float(probs[best])

    def transcribe_batch(
        self, windows: list[np.ndarray], options: DecodeOptions | Sequence[DecodeOptions]
    ) -> list[WindowResult]:
        """Decode ≤ 30 s windows of 16 kHz mono audio; one result per window. One `generate` per distinct
        options (its language and task are the call's); rows to detect are detected first, one by one."""
        return by_options(windows, options, self._transcribe, self.detect_language)

    def _transcribe(self, windows: list[np.ndarray], options: DecodeOptions) -> list[WindowResult]:
        """Decode ≤ 30 s windows sharing `options` in one batch."""
        if not windows:
            return []
        audio = [_as_window(w) for w in windows]
        durations = [min(len(w), len(a)) / SAMPLE_RATE for w, a in zip(windows, audio, strict=True)]
        with torch.inference_mode():
            hidden = self._encode(audio)
            rows, temperatures = self._generate_with_fallback(hidden, durations, options)
            prefix_lengths = [self._prefix_length(row) for row in rows]
            generated = [_generated_tokens(row, n, self.eot) for row, n in zip(rows, prefix_lengths)]
            width = max(len(row) for row in rows)
            sequences = torch.tensor([row + [self.eot] * (width - len(row)) for row in rows], device=self.device)
            avg_logprobs, no_speech_probs = self._score(hidden, sequences, prefix_lengths, generated)
            words = self._align(hidden, generated, durations, options) if options.word_timestamps else None

        results = []
        for i, tokens in enumerate(generated):
            located = self._segments(tokens, durations[i])
            if words is not None:
                attach_words(located, words[i], durations[i])
            segments = [segment for segment, _ in located]
            text = self.tokenizer.decode([t for s in segments for t in s.tokens])
            results.append(
                WindowResult(
                    segments=segments,
                    avg_logprob=avg_logprobs[i],
                    no_speech_prob=no_speech_probs[i],
                    compression_ratio=_compression_ratio(text),
                    temperature=temperatures[i],
                )
            )
        return results

    # ------------------------------------------------------------------------------------------ decoding

    def _encode(self, audio: list[np.ndarray]) -> torch.Tensor:
        """Encoder hidden states (batch, 1500, d_model) for windows padded/truncated to 30 s."""
        features = self.feature_extractor(
            [a[: int(WINDOW_SECONDS * SAMPLE_RATE)] for a in audio],
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            padding="max_length",
            device=str(self.device),
        ).input_features
        features = features.to(self.device, self.dtype)
        return self.model.model.encoder(features).last_hidden_state

    def _generate_with_fallback(
        self, hidden: torch.Tensor, durations: list[float], options: DecodeOptions
    ) -> tuple[list[list[int]], list[float]]:
        """Token ids per window (`_generate`) and the temperature they were decoded at: a window whose decoding
        fell into a repetition loop (`loops.py`: stopped there) is decoded again at the next fallback temperature,
        seeded, until it no longer loops; if it loops at every one, its first decoding is kept."""
        rows = self._generate(hidden, durations, options).tolist()
        first = list(rows)
        temperatures = [options.temperature] * len(rows)
        looping = [i for i, row in enumerate(rows) if self._looped(row)]
        for temperature in fallback_temperatures(options.temperature):
            if not looping:
                break
            torch.manual_seed(SEED)
            again = self._generate(
                hidden[looping], [durations[i] for i in looping], replace(options, temperature=temperature)
            )
            for i, row in zip(looping, again.tolist(), strict=True):
                rows[i], temperatures[i] = row, temperature
            looping = [i for i in looping if self._looped(rows[i])]
        for i in looping:
            rows[i], temperatures[i] = first[i], options.temperature
        if recovered := sum(t != options.temperature for t in temperatures):
            log.info("%d window(s) decoded again after a repetition loop", recovered)
        return rows, temperatures

    def _looped(self, row: list[int]) -> bool:
        """True when a decoded row ends in a repetition loop (`_Loops` stopped it there)."""
        return ends_in_loop(_generated_tokens(row, self._prefix_length(row), self.eot))

    def _generate(self, hidden: torch.Tensor, durations: list[float], options: DecodeOptions) -> torch.Tensor:
        """Token ids per window: [prompt…] + start tokens + generated tokens + end of text (+ padding)."""
        kwargs: dict[str, object] = {
            "return_timestamps": True,
            # one decoding pass per window: without this, generate re-decodes from the last timestamp
            # whenever a window ends mid-segment, walking on into the zero padding of short windows
            "force_unique_generate_call": True,
        }
        if options.temperature > 0:
            kwargs["temperature"] = options.temperature
        else:
            kwargs["num_beams"] = max(1, options.beam_size)
        if self.multilingual:
            if f"<|{options.language}|>" not in self.lang_to_id:
                raise ValueError(f"model {self.model_name!r} does not know language {options.language!r}")
            kwargs["language"] = options.language
            kwargs["task"] = options.task
        elif options.language not in ("en", "") or options.task == "translate":
            log.warning("%s is English-only: decoding English transcription", self.model_name)
        prompt = self.prompt_ids(options)
        if prompt:
            kwargs["prompt_ids"] = torch.tensor(prompt, device=self.device)
        window_end = _WindowEnd(durations, self.timestamp_begin, self.eot, self.max_frames, self.device)
        stop_loops = _Loops(len(prompt) + (3 if self.multilingual else 1), self.eot)
        # generate expands encoder outputs for beam search *in place*: hand it a fresh container
        encoder_outputs = BaseModelOutput(last_hidden_state=hidden)
        out = self.model.generate(
            encoder_outputs=encoder_outputs, logits_processor=LogitsProcessorList([window_end, stop_loops]), **kwargs
        )
        return out if isinstance(out, torch.Tensor) else out["sequences"]

    def prompt_ids(self, options: DecodeOptions) -> list[int]:
        """<|startofprev|> + hotwords + the previous text's last tokens (`prompting.py`), or [] without either."""

        def encode(text: str) -> list[int]:
            return self.tokenizer(text, add_special_tokens=False, verbose=False).input_ids

        text = prompt_tokens(encode, self.eot, options.hotwords, options.initial_prompt)
        return [self.prev_sot, *text] if text else []

    def _prefix_length(self, row: list[int]) -> int:
        """Tokens before the first generated one: optional prompt, <|startoftranscript|>, language, task."""
        start = row.index(self.sot) if self.sot in row else 0
        return start + 1 + (2 if self.multilingual else 0)

    def _score(
        self,
        hidden: torch.Tensor,
        sequences: torch.Tensor,
        prefix_lengths: list[int],
        generated: list[list[int]],
    ) -> tuple[list[float | None], list[float | None]]:
        """Average log-probability of the generated tokens (end of text included) and P(no speech).

        One teacher-forced decoder pass over what `generate` returned; log-probabilities are unfiltered
        (no timestamp rules or suppressed tokens), so they differ slightly from the beam scores.
        """
        avg_logprobs: list[float | None] = []
        no_speech: list[float | None] = []
        for lo in range(0, sequences.shape[0], CHUNK):
            rows = sequences[lo : lo + CHUNK]
            logits = self.model(
                encoder_outputs=(hidden[lo : lo + CHUNK],), decoder_input_ids=rows, use_cache=False
            ).logits
            for j in range(rows.shape[0]):
                i = lo + j
                row, start = rows[j], prefix_lengths[i]
                sot_at = start - (3 if self.multilingual else 1)
                no_speech.append(float(logits[j, sot_at].float().softmax(-1)[self.no_speech]))
                count = min(len(generated[i]) + 1, rows.shape[1] - start)  # + end of text, if it fits
                if count <= 0:
                    avg_logprobs.append(None)
                    continue
                step_logits = logits[j, start - 1 : start - 1 + count].float().log_softmax(-1)
                targets = row[start : start + count].unsqueeze(-1)
                avg_logprobs.append(float(step_logits.gather(-1, targets).mean()))
        return avg_logprobs, no_speech

    # ------------------------------------------------------------------------------------------ segments

    def _segments(self, tokens: list[int], duration: float) -> list[tuple[Segment, int]]:
        """Timed segments, each with the index of its first text token among the window's text tokens."""
        out = []
        for span in split_at_timestamps(tokens, self.timestamp_begin, self.eot, duration):
            text = self.tokenizer.decode(span.tokens)
            if text.strip():
                out.append((Segment(start=span.start, end=span.end, text=text, tokens=list(span.tokens)), span.offset))
        return out

    # ------------------------------------------------------------------------------------------ words

    def _align(
        self, hidden: torch.Tensor, generated: list[list[int]], durations: list[float], options: DecodeOptions
    ) -> list[list[Aligned]]:
        """Words with times for every window (see `alignment.WordAligner.align`)."""
        start_tokens = [self.sot]
        if self.multilingual:
            start_tokens += [self.lang_to_id[f"<|{options.language}|>"], self.task_to_id[options.task]]
        return self.aligner.align(hidden, generated, durations, start_tokens, options.language or "en")


# ---------------------------------------------------------------------------------------------- helpers


class _WindowEnd(LogitsProcessor):
    """Per window: no timestamp after the end of its audio, and end of text right after reaching it.

    Windows shorter than 30 s are zero-padded; without this, Whisper happily "transcribes" the padding
    (typically a loop of "Thank you." segments up to the 448-token limit, very slow with beam search).
    """

    def __init__(
        self, durations: list[float], timestamp_begin: int, eot: int, max_index: int, device: torch.device
    ) -> None:
        last = [min(max_index, math.ceil(d / SECONDS_PER_TOKEN - 1e-6)) for d in durations]
        self.limits = torch.tensor([timestamp_begin + i for i in last], device=device)
        self.eot = eot

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        limits = self.limits.repeat_interleave(input_ids.shape[0] // self.limits.shape[0])
        vocab = torch.arange(scores.shape[-1], device=scores.device)
        masked = scores.masked_fill(vocab[None, :] > limits[:, None], -math.inf)
        ended = input_ids[:, -1] >= limits
        if bool(ended.any()):
            forced = torch.full_like(masked[0], -math.inf)
            forced[self.eot] = 0.0
            masked[ended] = forced
        return cast(torch.FloatTensor, masked)  # LogitsProcessor's annotation; torch ops return plain Tensors


class _Loops(LogitsProcessor):
    """End of text for every row whose decoded tokens (after `prefix` start tokens) end in a repetition loop."""

    def __init__(self, prefix: int, eot: int) -> None:
        self.prefix = prefix
        self.eot = eot

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids.shape[1] - self.prefix
        looping = looping_rows(input_ids, generated) if generated % CHECK_EVERY == 0 else []
        if not looping:
            return scores
        forced = torch.full_like(scores[0], -math.inf)
        forced[self.eot] = 0.0
        scores[looping] = forced
        return scores


def _token_id(value: int | list[int] | None, name: str) -> int:
    """A config's token id that Whisper's configs hold as one int (the config type allows a list or None)."""
    if not isinstance(value, int):
        raise TypeError(f"the model config's {name} is {value!r}, not one token id")
    return value


def _torch_dtype(compute_type: str, device: torch.device) -> torch.dtype:
    if compute_type in ("auto", "default") or compute_type.startswith(("int8", "int16")):
        return torch.float16 if device.type == "cuda" else torch.float32
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if compute_type not in dtypes:
        raise ValueError(f"unknown compute_type {compute_type!r}: use auto, float16, bfloat16 or float32")
    return dtypes[compute_type]


def _as_window(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if len(audio) < MIN_SAMPLES:
        audio = np.pad(audio, (0, MIN_SAMPLES - len(audio)))
    return audio


def _generated_tokens(row: list[int], prefix: int, eot: int) -> list[int]:
    tokens = row[prefix:]
    return tokens[: tokens.index(eot)] if eot in tokens else tokens


def _compression_ratio(text: str) -> float | None:
    """faster-whisper's `get_compression_ratio` (zlib), None for no text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else None
