"""Word timestamps for decoded Whisper windows, as OpenAI's `timing.py` computes them.

One teacher-forced decoder pass over the text tokens with hooks that catch the cross-attention queries of
the alignment layers; the alignment heads' attention weights are normalised, median-filtered, averaged and
aligned to the encoder frames by dynamic time warping. Tokens are grouped into words (at spaces, or per
character for languages written without them), punctuation is merged into its neighbours, over-long words
at sentence boundaries are cut, and the words are handed to the segments they belong to.
"""

from __future__ import annotations

import string
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import WhisperForConditionalGeneration, WhisperTokenizer

from service.transcript import Segment, Word

SECONDS_PER_TOKEN = 0.02  # one timestamp step and one encoder frame
MEDIAN_FILTER_WIDTH = 7
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
class Aligned:
    """One word of a window with the index of its first text token."""

    text: str
    first_token: int
    tokens: list[int]
    start: float
    end: float
    probability: float


class WordAligner:
    """Word times from the alignment heads' cross-attention (DTW) of one Whisper model."""

    def __init__(
        self,
        model: WhisperForConditionalGeneration,
        tokenizer: WhisperTokenizer,
        alignment_heads: list[tuple[int, int]],
        *,
        no_timestamps: int,
        eot: int,
        max_frames: int,
        chunk: int,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.alignment_heads = alignment_heads
        self.no_timestamps = no_timestamps
        self.eot = eot
        self.max_frames = max_frames
        self.chunk = chunk

    def align(
        self,
        hidden: torch.Tensor,
        generated: list[list[int]],
        durations: list[float],
        start_tokens: list[int],
        language: str,
    ) -> list[list[Aligned]]:
        """Words with times for every window, from the alignment heads' cross-attention (DTW).

        Decodes `<|startoftranscript|>… <|notimestamps|> text <|endoftext|>` once more (as OpenAI does)
        with hooks that catch the cross-attention queries of the alignment layers; the attention weights
        of the alignment heads are then computed here, over the window's real frames only. This keeps the
        model on SDPA (no `output_attentions`, no switch to eager attention, no full attention maps).
        """
        rows_at = len(start_tokens)  # row of <|notimestamps|>, which predicts the first text token
        text = [[t for t in tokens if t < self.eot] for tokens in generated]
        results: list[list[Aligned]] = [[] for _ in generated]
        # A row longer than the decoder's positions (a 448-token loop, e.g. a short turn in a language the
        # window was not decoded in) cannot be decoded again: it keeps no words (its segments keep their times).
        limit = int(getattr(self.model.config, "max_target_positions", 448)) - rows_at - 2
        todo = [i for i, t in enumerate(text) if t and len(t) <= limit]
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
            for lo in range(0, len(todo), self.chunk):
                chunk = todo[lo : lo + self.chunk]
                rows = [[*start_tokens, self.no_timestamps, *text[i], self.eot] for i in chunk]
                width = max(len(r) for r in rows)
                ids = torch.tensor([r + [self.eot] * (width - len(r)) for r in rows], device=hidden.device)
                encoded = hidden[chunk]
                logits = self.model(encoder_outputs=(encoded,), decoder_input_ids=ids, use_cache=False).logits
                for j, i in enumerate(chunk):
                    n = len(text[i])
                    frames = max(1, min(self.max_frames, round(durations[i] / SECONDS_PER_TOKEN)))
                    weights = self._cross_attention(queries, j, encoded[j, :frames], rows_at + n + 2)
                    token_logits = logits[j, rows_at : rows_at + n, : self.eot].float()
                    targets = torch.tensor(text[i], device=hidden.device)[:, None]
                    probs = token_logits.softmax(-1).gather(-1, targets)[:, 0].cpu().numpy()
                    results[i] = self._words(text[i], weights, rows_at, probs, language)
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
    ) -> list[Aligned]:
        """OpenAI's find_alignment: normalise, median-filter, average heads, DTW, cut at word starts."""
        std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
        weights = (weights - mean) / std.clamp_min(1e-10)
        weights = median_filter(weights, MEDIAN_FILTER_WIDTH)
        matrix = weights.mean(0)[rows_at : rows_at + len(text) + 1]  # rows predicting each text token + eot
        text_indices, time_indices = dtw(-matrix.double().cpu().numpy())
        jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
        jump_times = time_indices[jumps] * SECONDS_PER_TOKEN

        split = split_unicode if language in NO_SPACE_LANGUAGES else split_spaces
        words = split(text, self.tokenizer)
        aligned: list[Aligned] = []
        position = 0
        for word, tokens in words:
            end_index = position + len(tokens)
            aligned.append(
                Aligned(
                    text=word,
                    first_token=position,
                    tokens=tokens,
                    start=float(jump_times[position]),
                    end=float(jump_times[min(end_index, len(jump_times) - 1)]),
                    probability=float(np.mean(probs[position:end_index])),
                )
            )
            position = end_index
        merge_punctuation(aligned)
        truncate_long_words(aligned)
        return aligned


# ---------------------------------------------------------------------------------------------- helpers


def clamp(value: float, duration: float) -> float:
    """`value` clamped into [0, duration], rounded to milliseconds."""
    return round(min(max(float(value), 0.0), duration), 3)


def median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """Median over a sliding window along the last axis (reflect padding), as OpenAI's timing.py."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = torch.nn.functional.pad(x[None], (pad, pad, 0, 0), mode="reflect")[0]
    return padded.unfold(-1, width, 1).sort()[0][..., pad]


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def split_unicode(tokens: list[int], tokenizer: WhisperTokenizer) -> list[tuple[str, list[int]]]:
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


def split_spaces(tokens: list[int], tokenizer: WhisperTokenizer) -> list[tuple[str, list[int]]]:
    """Words start at a leading space or a punctuation mark (OpenAI's split_tokens_on_spaces)."""
    words: list[tuple[str, list[int]]] = []
    for piece, piece_tokens in split_unicode(tokens, tokenizer):
        if not words or piece.startswith(" ") or piece.strip() in string.punctuation:
            words.append((piece, list(piece_tokens)))
        else:
            words[-1] = (words[-1][0] + piece, words[-1][1] + piece_tokens)
    return words


def merge_punctuation(words: list[Aligned]) -> None:
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


def truncate_long_words(words: list[Aligned]) -> None:
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


def attach_words(segments: list[tuple[Segment, int]], words: list[Aligned], duration: float) -> None:
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
        start = max(clamp(w.start, duration), previous_end)
        end = max(clamp(w.end, duration), start)
        assert owner.words is not None  # every segment's list was set above
        owner.words.append(Word(word=w.text, start=start, end=end, probability=round(w.probability, 4)))
        previous_end = end
    for segment, _ in segments:
        if segment.words:
            segment.start, segment.end = segment.words[0].start, segment.words[-1].end
