"""Split Whisper's generated tokens into timed segments (shared by both engines).

Whisper writes `<|t0|> text <|t1|>` pairs. In a single ≤ 30 s window nothing is decoded again after it, so
text after the last timestamp (a segment Whisper did not close) runs to the window's end instead of being
dropped, as the sequential long-form loop would do by seeking there.
"""

from __future__ import annotations

from dataclasses import dataclass

SECONDS_PER_TIMESTAMP = 0.02


@dataclass
class TokenSpan:
    start: float
    end: float
    tokens: list[int]  # text tokens only
    offset: int  # text tokens of the window before this span


def split_at_timestamps(tokens: list[int], timestamp_begin: int, eot: int, duration: float) -> list[TokenSpan]:
    """Timed spans of text tokens; times clamped into [0, duration]. Special tokens (≥ eot) are skipped."""

    def clamp(value: float) -> float:
        return min(max(value, 0.0), duration)

    spans: list[TokenSpan] = []
    text: list[int] = []
    seen = 0
    start: float | None = None
    last_end = 0.0

    def close(end: float) -> None:
        nonlocal text, seen
        begin = clamp(start if start is not None else last_end)
        spans.append(TokenSpan(begin, max(begin, clamp(end)), text, seen))
        seen += len(text)
        text = []

    for token in tokens:
        if token >= timestamp_begin:
            time = (token - timestamp_begin) * SECONDS_PER_TIMESTAMP
            if text:
                close(time)
                last_end, start = time, None
            else:
                start = time
        elif token < eot:
            if start is None:
                start = last_end
            text.append(token)
    if text:
        close(duration)
    return spans
