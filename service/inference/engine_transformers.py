"""Whisper on 🤗 transformers: batched 30 s windows, one `generate` call per batch.

Per batch: log-mel features for every window (padded to 30 s), one encoder pass, one `generate` call
(beam search, timestamp tokens, one decoding pass per window), then one teacher-forced decoder pass for
`avg_logprob` / `no_speech_prob`, and, when asked, one more pass over the text tokens whose cross-attention
(alignment heads) gives word times by dynamic time warping, as OpenAI's `timing.py` does.
Segment times come from the timestamp tokens and are relative to the window start.

This is the only module of the service that imports torch and transformers for decoding.
"""

from __future__ import annotations

import logging
import math
import string
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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

from service.inference.convert import LOAD_LOCK, ensure_hf_checkpoint
from service.inference.models import ModelFiles
from service.inference.types import DecodeOptions, Segment, WindowResult, Word

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30.0
SECONDS_PER_TOKEN = 0.02  # one timestamp step and one encoder frame
MIN_SAMPLES = 400  # one STFT frame
MEDIAN_FILTER_WIDTH = 7
CHUNK = 8  # windows per teacher-forced decoder pass (full-vocabulary logits for every token)
# Languages written without spaces: words are split per Unicode character sequence (OpenAI's rule).
NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END = ".。!！?？"


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-level BPE alphabet: token character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    chars = printable + [256 + n for n in range(len(extra))]
    return {chr(c): b for b, c in zip(printable + extra, chars, strict=True)}


_BYTE_DECODER = _byte_decoder()


@dataclass
class _Aligned:
    """One word of a window with the index of its first text token."""

    text: str
    first_token: int
    tokens: list[int]
    start: float
    end: float
    probability: float


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
        self.model.to(self.device).eval()
        self.tokenizer = WhisperTokenizer.from_pretrained(path)
        self.feature_extractor = WhisperFeatureExtractor.from_pretrained(path)
        self.model_name = files.name

        gen = self.model.generation_config
        config = self.model.config
        self.multilingual: bool = bool(getattr(gen, "is_multilingual", config.vocab_size >= 51865))
        self.eot = int(config.eos_token_id)
        self.sot = int(config.decoder_start_token_id)
        self.no_timestamps = int(gen.no_timestamps_token_id)
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

    def transcribe_batch(self, windows: list[np.ndarray], options: DecodeOptions) -> list[WindowResult]:
        """Decode ≤ 30 s windows of 16 kHz mono audio in one batch; one result per window."""
        if not windows:
            return []
        audio = [_as_window(w) for w in windows]
        durations = [min(len(w), len(a)) / SAMPLE_RATE for w, a in zip(windows, audio, strict=True)]
        with torch.inference_mode():
            hidden = self._encode(audio)
            sequences = self._generate(hidden, durations, options)
            prefix_lengths = [self._prefix_length(row) for row in sequences.tolist()]
            generated = [_generated_tokens(row, n, self.eot) for row, n in zip(sequences.tolist(), prefix_lengths)]
            avg_logprobs, no_speech_probs = self._score(hidden, sequences, prefix_lengths, generated)
            words = self._align(hidden, generated, durations, options) if options.word_timestamps else None

        results = []
        for i, tokens in enumerate(generated):
            located = self._segments(tokens, durations[i])
            if words is not None:
                _attach_words(located, words[i], durations[i])
            segments = [segment for segment, _ in located]
            text = "".join(s.text for s in segments)
            results.append(
                WindowResult(
                    segments=segments,
                    avg_logprob=avg_logprobs[i],
                    no_speech_prob=no_speech_probs[i],
                    compression_ratio=_compression_ratio(text),
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
        if options.initial_prompt:
            text_ids = self.tokenizer(" " + options.initial_prompt.strip(), add_special_tokens=False).input_ids
            text_ids = [t for t in text_ids if t < self.eot]  # no special tokens smuggled in through text
            prompt = [self.prev_sot] + text_ids[-(self.model.config.max_target_positions // 2 - 1) :]
            kwargs["prompt_ids"] = torch.tensor(prompt, device=self.device)
        window_end = _WindowEnd(durations, self.timestamp_begin, self.eot, self.max_frames, self.device)
        # generate expands encoder outputs for beam search *in place*: hand it a fresh container
        encoder_outputs = BaseModelOutput(last_hidden_state=hidden)
        out = self.model.generate(
            encoder_outputs=encoder_outputs, logits_processor=LogitsProcessorList([window_end]), **kwargs
        )
        return out if isinstance(out, torch.Tensor) else out["sequences"]

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
        """Split generated tokens at timestamp tokens; times clamped into [0, duration].

        Returns each segment with the index of its first text token among the window's text tokens.
        """
        segments: list[tuple[Segment, int]] = []
        text_tokens: list[int] = []
        seen = 0  # text tokens before `text_tokens`
        start: float | None = None
        last_end = 0.0

        def close(end: float) -> None:
            nonlocal text_tokens, seen
            text = self.tokenizer.decode(text_tokens)
            if text.strip():
                s = _clamp(start if start is not None else last_end, duration)
                segments.append((Segment(start=s, end=max(s, _clamp(end, duration)), text=text), seen))
            seen += len(text_tokens)
            text_tokens = []

        for token in tokens:
            if token >= self.timestamp_begin:
                time = (token - self.timestamp_begin) * SECONDS_PER_TOKEN
                if text_tokens:
                    close(time)
                    last_end, start = time, None
                else:
                    start = time
            elif token < self.eot:
                if start is None:
                    start = last_end
                text_tokens.append(token)
        if text_tokens:
            close(duration)
        return segments

    # ------------------------------------------------------------------------------------------ words

    def _align(
        self, hidden: torch.Tensor, generated: list[list[int]], durations: list[float], options: DecodeOptions
    ) -> list[list[_Aligned]]:
        """Words with times for every window, from the alignment heads' cross-attention (DTW).

        Decodes `<|startoftranscript|>… <|notimestamps|> text <|endoftext|>` once more (as OpenAI does)
        with hooks that catch the cross-attention queries of the alignment layers; the attention weights
        of the alignment heads are then computed here, over the window's real frames only. This keeps the
        model on SDPA (no `output_attentions`, no switch to eager attention, no full attention maps).
        """
        start_tokens = [self.sot]
        if self.multilingual:
            start_tokens += [self.lang_to_id[f"<|{options.language}|>"], self.task_to_id[options.task]]
        rows_at = len(start_tokens)  # row of <|notimestamps|>, which predicts the first text token
        text = [[t for t in tokens if t < self.eot] for tokens in generated]
        results: list[list[_Aligned]] = [[] for _ in generated]
        todo = [i for i, t in enumerate(text) if t]
        layers = self.model.model.decoder.layers
        queries: dict[int, torch.Tensor] = {}
        owner = threading.get_ident()

        def catch(layer: int) -> Callable[..., None]:
            def hook(_module: torch.nn.Module, _args: object, output: torch.Tensor) -> None:
                if threading.get_ident() == owner:  # not a forward pass another thread runs meanwhile
                    queries[layer] = output

            return hook

        hooks = [
            layers[layer].encoder_attn_layer_norm.register_forward_hook(catch(layer))
            for layer in sorted({layer for layer, _ in self.alignment_heads})
        ]
        try:
            for lo in range(0, len(todo), CHUNK):
                chunk = todo[lo : lo + CHUNK]
                rows = [[*start_tokens, self.no_timestamps, *text[i], self.eot] for i in chunk]
                width = max(len(r) for r in rows)
                ids = torch.tensor([r + [self.eot] * (width - len(r)) for r in rows], device=self.device)
                encoded = hidden[chunk]
                logits = self.model(encoder_outputs=(encoded,), decoder_input_ids=ids, use_cache=False).logits
                for j, i in enumerate(chunk):
                    n = len(text[i])
                    frames = max(1, min(self.max_frames, round(durations[i] / SECONDS_PER_TOKEN)))
                    weights = self._cross_attention(queries, j, encoded[j, :frames], rows_at + n + 2)
                    token_logits = logits[j, rows_at : rows_at + n, : self.eot].float()
                    targets = torch.tensor(text[i], device=self.device)[:, None]
                    probs = token_logits.softmax(-1).gather(-1, targets)[:, 0].cpu().numpy()
                    results[i] = self._words(text[i], weights, rows_at, probs, options.language)
        finally:
            for handle in hooks:
                handle.remove()
        return results

    def _cross_attention(
        self, queries: dict[int, torch.Tensor], row: int, keys_from: torch.Tensor, length: int
    ) -> torch.Tensor:
        """Attention weights (heads, tokens, frames) of the alignment heads for one decoded row."""
        layers = self.model.model.decoder.layers
        projected: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        maps = []
        for layer, head in self.alignment_heads:
            attention = layers[layer].encoder_attn
            if layer not in projected:
                q = attention.q_proj(queries[layer][row, :length]) * attention.scaling
                projected[layer] = (q.float(), attention.k_proj(keys_from).float())
            q, k = projected[layer]
            part = slice(head * attention.head_dim, (head + 1) * attention.head_dim)
            maps.append((q[:, part] @ k[:, part].T).softmax(-1))
        return torch.stack(maps)

    def _words(
        self, text: list[int], weights: torch.Tensor, rows_at: int, probs: np.ndarray, language: str
    ) -> list[_Aligned]:
        """OpenAI's find_alignment: normalise, median-filter, average heads, DTW, cut at word starts."""
        std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
        weights = (weights - mean) / std.clamp_min(1e-10)
        weights = _median_filter(weights, MEDIAN_FILTER_WIDTH)
        matrix = weights.mean(0)[rows_at : rows_at + len(text) + 1]  # rows predicting each text token + eot
        text_indices, time_indices = _dtw(-matrix.double().cpu().numpy())
        jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
        jump_times = time_indices[jumps] * SECONDS_PER_TOKEN

        split = _split_unicode if language in NO_SPACE_LANGUAGES else _split_spaces
        words = split(text, self.tokenizer)
        aligned: list[_Aligned] = []
        position = 0
        for word, tokens in words:
            end_index = position + len(tokens)
            aligned.append(
                _Aligned(
                    text=word,
                    first_token=position,
                    tokens=tokens,
                    start=float(jump_times[position]),
                    end=float(jump_times[min(end_index, len(jump_times) - 1)]),
                    probability=float(np.mean(probs[position:end_index])),
                )
            )
            position = end_index
        _merge_punctuation(aligned)
        _truncate_long_words(aligned)
        return aligned


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
        scores = scores.masked_fill(vocab[None, :] > limits[:, None], -math.inf)
        ended = input_ids[:, -1] >= limits
        if bool(ended.any()):
            forced = torch.full_like(scores[0], -math.inf)
            forced[self.eot] = 0.0
            scores[ended] = forced
        return scores


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


def _clamp(value: float, duration: float) -> float:
    return round(min(max(float(value), 0.0), duration), 3)


def _compression_ratio(text: str) -> float | None:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else None


def _median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """Median over a sliding window along the last axis (reflect padding), as OpenAI's timing.py."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = torch.nn.functional.pad(x[None], (pad, pad, 0, 0), mode="reflect")[0]
    return padded.unfold(-1, width, 1).sort()[0][..., pad]


def _dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic time warping (OpenAI's `dtw_cpu`), computed one anti-diagonal at a time."""
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    total[0, 0] = 0.0
    for k in range(2, n + m + 1):
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        c0, c1, c2 = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
        t = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        total[i, j] = cost[i - 1, j - 1] + np.choose(t, [c0, c1, c2])
        trace[i, j] = t
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = n, m
    text_indices, time_indices = [], []
    while i > 0 or j > 0:
        text_indices.append(i - 1)
        time_indices.append(j - 1)
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    return np.array(text_indices[::-1]), np.array(time_indices[::-1])


def _split_unicode(tokens: list[int], tokenizer: WhisperTokenizer) -> list[tuple[str, list[int]]]:
    """Group tokens into pieces that each decode to whole UTF-8 characters."""
    pieces: list[tuple[str, list[int]]] = []
    buffer, current = b"", []
    for token, piece in zip(tokens, tokenizer.convert_ids_to_tokens(tokens), strict=True):
        buffer += bytes(_BYTE_DECODER.get(c, 32) for c in piece)
        current.append(token)
        try:
            pieces.append((buffer.decode("utf-8"), current))
            buffer, current = b"", []
        except UnicodeDecodeError:
            continue
    if current:
        pieces.append((buffer.decode("utf-8", errors="replace"), current))
    return pieces


def _split_spaces(tokens: list[int], tokenizer: WhisperTokenizer) -> list[tuple[str, list[int]]]:
    """Words start at a leading space or a punctuation mark (OpenAI's split_tokens_on_spaces)."""
    words: list[tuple[str, list[int]]] = []
    for piece, piece_tokens in _split_unicode(tokens, tokenizer):
        if not words or piece.startswith(" ") or piece.strip() in string.punctuation:
            words.append((piece, list(piece_tokens)))
        else:
            words[-1] = (words[-1][0] + piece, words[-1][1] + piece_tokens)
    return words


def _merge_punctuation(words: list[_Aligned]) -> None:
    """Attach opening punctuation to the next word and closing punctuation to the previous one."""
    i = len(words) - 2
    while i >= 0:
        if words[i].text.startswith(" ") and words[i].text.strip() in PREPEND_PUNCTUATION:
            nxt = words[i + 1]
            nxt.text, nxt.tokens = words[i].text + nxt.text, words[i].tokens + nxt.tokens
            nxt.first_token = words[i].first_token
            del words[i]
        i -= 1
    i = 1
    while i < len(words):
        if not words[i - 1].text.endswith(" ") and words[i].text in APPEND_PUNCTUATION:
            prev = words[i - 1]
            prev.text, prev.tokens = prev.text + words[i].text, prev.tokens + words[i].tokens
            del words[i]
        else:
            i += 1


def _truncate_long_words(words: list[_Aligned]) -> None:
    """OpenAI's hack: a word at a sentence boundary may not last more than twice the median word."""
    durations = np.array([w.end - w.start for w in words])
    durations = durations[durations.nonzero()]
    if not len(durations):
        return
    max_duration = 2 * min(0.7, float(np.median(durations)))
    for i in range(1, len(words)):
        word = words[i]
        if word.end - word.start > max_duration:
            if word.text.strip() and word.text.strip()[-1] in SENTENCE_END:
                word.end = word.start + max_duration
            elif words[i - 1].text.strip() and words[i - 1].text.strip()[-1] in SENTENCE_END:
                word.start = word.end - max_duration


def _attach_words(segments: list[tuple[Segment, int]], words: list[_Aligned], duration: float) -> None:
    """Give each segment the words whose first text token lies in it; segment bounds follow its words.

    `segments` pairs each segment with the index of its first text token in the window.
    """
    if not segments:
        return
    for segment, _ in segments:
        segment.words = []
    previous_end = 0.0
    for w in words:
        owner = segments[0][0]
        for segment, first_token in segments:
            if first_token <= w.first_token:
                owner = segment
        start = max(_clamp(w.start, duration), previous_end)
        end = max(_clamp(w.end, duration), start)
        owner.words.append(Word(word=w.text, start=start, end=end, probability=round(w.probability, 4)))
        previous_end = end
    for segment, _ in segments:
        if segment.words:
            segment.start, segment.end = segment.words[0].start, segment.words[-1].end
