"""The CTranslate2 engine: faster-whisper's model and its batched decoding (as `BatchedInferencePipeline`),
one window per batch row."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from math import ceil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import (
    TranscriptionOptions,
    get_compression_ratio,
    get_suppressed_tokens,
)

from service.inference.convert import cache_folder
from service.inference.engines import from_checkpoint
from service.inference.loops import SEED, ends_in_loop, fallback_temperatures
from service.inference.models import ModelFiles
from service.inference.prompting import prompt_tokens
from service.inference.timestamps import split_at_timestamps
from service.inference.types import DecodeOptions, WindowResult, per_window
from service.transcript import Segment, Word

if TYPE_CHECKING:
    from service.config import InferenceSettings

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


def _hf_to_ct2(files: ModelFiles, cache_dir: Path) -> Path:
    """Convert a Hugging Face Whisper checkpoint once into a CTranslate2 one under the cache."""
    from ctranslate2.converters import TransformersConverter

    out = cache_folder("ct2", files, cache_dir)
    if not (out / "model.bin").exists():
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        TransformersConverter(str(files.path), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
            str(tmp), quantization="float16", force=True
        )
        tmp.replace(out)
    return out


class CTranslate2Engine:
    """faster-whisper `WhisperModel`; int8 on CPU and float16 on GPU unless told otherwise."""

    name = "ctranslate2"

    def __init__(
        self,
        files: ModelFiles,
        cache_dir: Path,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
    ) -> None:
        path = files.path if files.format == "ctranslate2" else _hf_to_ct2(files, cache_dir)
        if device == "auto":
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if compute_type == "auto":
            compute_type = "float16" if device == "cuda" else "int8"
        threads = cpu_threads or os.cpu_count() or 1
        self.model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=threads)
        self.model_name = files.name
        self.multilingual = bool(self.model.model.is_multilingual)
        self.device = device
        self.compute_type = compute_type
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}

    @classmethod
    def load(cls, settings: InferenceSettings, files: ModelFiles | None) -> CTranslate2Engine:
        """The registry's constructor (`engines.load_engine`)."""
        return from_checkpoint(cls, settings, files)

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        if not self.multilingual:
            return "en", 1.0
        language, probability, _ = self.model.detect_language(audio=audio)
        return language, float(probability)

    def _options(self, tokenizer: Tokenizer, options: DecodeOptions) -> TranscriptionOptions:
        return TranscriptionOptions(
            beam_size=options.beam_size,
            best_of=5,
            patience=1.0,
            length_penalty=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            log_prob_threshold=-1.0,
            no_speech_threshold=0.6,
            compression_ratio_threshold=2.4,
            condition_on_previous_text=False,
            prompt_reset_on_temperature=0.5,
            temperatures=[options.temperature],
            initial_prompt=None,  # in the prompt (`prompt`)
            prefix=None,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            without_timestamps=False,
            max_initial_timestamp=0.0,
            word_timestamps=options.word_timestamps,
            prepend_punctuations=PREPEND_PUNCTUATIONS,
            append_punctuations=APPEND_PUNCTUATIONS,
            multilingual=False,
            max_new_tokens=None,
            clip_timestamps="0",
            hallucination_silence_threshold=None,
            hotwords=None,  # in the prompt (`prompt`)
        )

    def transcribe_batch(
        self, windows: list[np.ndarray], options: DecodeOptions | Sequence[DecodeOptions]
    ) -> list[WindowResult]:
        """One encoder pass for the batch; the language of each row whose options leave it None is detected on
        that encoder output (no pass of its own); one `generate` with each row's prompt (its language and task)."""
        if not windows:
            return []
        rows = per_window(options, len(windows))
        extract = self.model.feature_extractor
        features = np.stack([pad_or_trim(extract(w)[..., :-1]) for w in windows])
        durations = [w.shape[0] / extract.sampling_rate for w in windows]
        encoder_output = self.model.encode(features)
        detected = self._detect(encoder_output, rows)
        rows = [replace(row, language=found[0]) if found else row for row, found in zip(rows, detected)]
        tokenizers = [self._tokenizer(row) for row in rows]
        opts = self._options(tokenizers[0], rows[0])
        prompts = [self.prompt(tokenizer, row) for tokenizer, row in zip(tokenizers, rows)]
        outputs = self._generate(encoder_output, opts, prompts)
        temperatures = self._fall_back(features, outputs, opts, prompts)
        segmented = [
            self._split(tokenizer, output, duration)
            for tokenizer, output, duration in zip(tokenizers, outputs, durations)
        ]
        if rows[0].word_timestamps:
            self._add_words(features, encoder_output, tokenizers, segmented, durations)
        results = []
        for tokenizer, segments, output, duration, temperature, found in zip(
            tokenizers, segmented, outputs, durations, temperatures, detected
        ):
            result = self._window_result(tokenizer, segments, output, duration, temperature)
            if found:
                result.language, result.language_probability = found
            results.append(result)
        return results

    def _fall_back(
        self, features: np.ndarray, outputs: list[dict], options: TranscriptionOptions, prompts: list[list[int]]
    ) -> list[float]:
        """Rows whose output ends in a repetition loop (`loops.py`) are decoded again at the next fallback
        temperature, seeded, until they no longer loop (their output replaced in `outputs`; if every temperature
        loops, the first decoding stays). CTranslate2's `generate` takes no per-step hook, so the loop has run to
        the token limit by then: this recovers the window's text, not the time. The temperature of each row."""
        first = options.temperatures[0]
        temperatures = [first] * len(outputs)
        looping = [i for i, output in enumerate(outputs) if ends_in_loop(output["tokens"])]
        if not looping:
            return temperatures
        import ctranslate2

        kept = {i: outputs[i] for i in looping}
        for temperature in fallback_temperatures(first):
            if not looping:
                break
            ctranslate2.set_random_seed(SEED)
            encoded = self.model.encode(features[looping])
            warmer = replace(options, temperatures=[temperature])
            for i, output in zip(looping, self._generate(encoded, warmer, [prompts[i] for i in looping]), strict=True):
                outputs[i], temperatures[i] = output, temperature
            looping = [i for i in looping if ends_in_loop(outputs[i]["tokens"])]
        for i in looping:
            outputs[i], temperatures[i] = kept[i], first
        return temperatures

    def _tokenizer(self, options: DecodeOptions) -> Tokenizer:
        language = (options.language or "en") if self.multilingual else "en"
        task = options.task if self.multilingual else "transcribe"
        key = (language, task)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(self.model.hf_tokenizer, self.multilingual, task=task, language=language)
        return self._tokenizers[key]

    def _detect(self, encoder_output: object, rows: list[DecodeOptions]) -> list[tuple[str, float] | None]:
        """(language, probability) for each row to detect (language None), read off the batch's encoder output
        as faster-whisper's `detect_language` does; None for the rows whose language is given."""
        if all(row.language is not None for row in rows):
            return [None] * len(rows)
        if not self.multilingual:
            return [None if row.language is not None else ("en", 1.0) for row in rows]
        found = self.model.model.detect_language(encoder_output)
        return [None if row.language is not None else (f[0][0][2:-2], float(f[0][1])) for row, f in zip(rows, found)]

    def _add_words(
        self,
        features: np.ndarray,
        encoder_output: object,
        tokenizers: list[Tokenizer],
        segmented: list[list[dict]],
        durations: list[float],
    ) -> None:
        """Word timings by cross-attention alignment, per language (the alignment's start sequence is one for
        the call): the rows of a batch detected in several languages are aligned per language, re-encoded."""
        frames = [int(ceil(d) * self.model.frames_per_second) for d in durations]
        groups: dict[int, list[int]] = {}
        for i, tokenizer in enumerate(tokenizers):
            groups.setdefault(id(tokenizer), []).append(i)
        for rows in groups.values():
            output = encoder_output if len(groups) == 1 else self.model.encode(features[rows])
            self.model.add_word_timestamps(
                [segmented[i] for i in rows],
                tokenizers[rows[0]],
                output,
                [frames[i] for i in rows],
                PREPEND_PUNCTUATIONS,
                APPEND_PUNCTUATIONS,
                0.0,
            )

    @staticmethod
    def prompt(tokenizer: Tokenizer, options: DecodeOptions) -> list[int]:
        """The decoder's prompt: [<|startofprev|> hotwords + previous text] + the start-of-transcript sequence."""
        text = prompt_tokens(tokenizer.encode, tokenizer.eot, options.hotwords, options.initial_prompt)
        return ([tokenizer.sot_prev, *text] if text else []) + list(tokenizer.sot_sequence)

    def _generate(self, encoder_output: object, options: TranscriptionOptions, prompts: list[list[int]]) -> list[dict]:
        """`BatchedInferencePipeline.generate_segment_batched` with a prompt per row (`prompting.py`; CTranslate2
        wants every row's start of transcript at the same position: rows share their prompt text, see
        `DecodeOptions.batch_key`), and sampling (one sample, no beams) when the temperature is above 0, as
        faster-whisper's sequential decoding does."""
        temperature = options.temperatures[0]
        sampling = {"beam_size": options.beam_size, "patience": options.patience}
        if temperature > 0:
            sampling = {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature}
        results = self.model.model.generate(
            encoder_output,
            prompts,
            length_penalty=options.length_penalty,
            max_length=self.model.max_length,
            suppress_blank=options.suppress_blank,
            suppress_tokens=options.suppress_tokens,
            return_scores=True,
            return_no_speech_prob=True,
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
            **sampling,
        )
        outputs = []
        for result in results:
            seq_len = len(result.sequences_ids[0])
            cum_logprob = result.scores[0] * (seq_len**options.length_penalty)
            outputs.append(
                {
                    "avg_logprob": cum_logprob / (seq_len + 1),
                    "no_speech_prob": result.no_speech_prob,
                    "tokens": result.sequences_ids[0],
                }
            )
        return outputs

    @staticmethod
    def _split(tokenizer: Tokenizer, output: dict, duration: float) -> list[dict]:
        """faster-whisper's segment dicts, cut with the shared splitter (keeps a window's unclosed tail)."""
        segments = []
        for span in split_at_timestamps(output["tokens"], tokenizer.timestamp_begin, tokenizer.eot, duration):
            segments.append(
                {
                    "text": tokenizer.decode(span.tokens),
                    "tokens": span.tokens,
                    "start": span.start,
                    "end": span.end,
                    "seek": 0,
                }
            )
        return segments

    @staticmethod
    def _window_result(
        tokenizer: Tokenizer, segments: list[dict], output: dict, duration: float, temperature: float
    ) -> WindowResult:
        text = tokenizer.decode([t for seg in segments for t in seg["tokens"]])
        result = WindowResult(
            avg_logprob=float(output["avg_logprob"]),
            no_speech_prob=float(output["no_speech_prob"]),
            compression_ratio=get_compression_ratio(text) if text else None,
            temperature=temperature,
        )
        for seg in segments:
            words = None
            if "words" in seg:
                words = [
                    Word(
                        word=w["word"],
                        start=min(float(w["start"]), duration),
                        end=min(float(w["end"]), duration),
                        probability=float(w["probability"]),
                    )
                    for w in seg["words"]
                ]
            start = min(float(seg["start"]), duration)
            end = min(max(float(seg["end"]), start), duration)
            tokens = list(seg["tokens"])
            result.segments.append(Segment(start=start, end=end, text=seg["text"], tokens=tokens, words=words))
        return result
