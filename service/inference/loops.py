"""Repetition loops in Whisper's output: found while the tokens are generated, and the temperatures to decode a
looping window again at.

Whisper sometimes repeats one phrase until its 448-token limit (the `base` model on Hindi speech: one 6 s window
generated 444 tokens of one Tamil-script word with small variations, 33 s of beam search on 2 CPU cores, and the
window was then dropped as a hallucination anyway). OpenAI's `transcribe()` and faster-whisper decode such a window
again at a higher temperature when its text compresses too well (`compression_ratio_threshold` 2.4, temperatures
0.2 … 1.0); here the loop is stopped as soon as it shows, and the window is decoded again at the next temperature
of that ladder. A loop shows as the last `WINDOW` tokens repeating themselves: at least `MIN_REPEATED` of their
`NGRAM`-grams already occurred earlier among them. Measured on the test audio: that loop reached 0.5 after 56
tokens (0.71 at most); the 171 s English long-form transcript never exceeds 0 in any 48 tokens, and Hindi speech
that repeats a clause ("kabhi dukh bhi baanta hoon, kabhi sukh bhi ...") 0.24 over 32 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

WINDOW = 48  # the last tokens looked at
NGRAM = 4
MIN_REPEATED = 0.5  # share of the window's n-grams seen earlier in it that makes a loop
CHECK_EVERY = 4  # generation steps between two looks
FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)  # OpenAI's and faster-whisper's ladder after 0.0
SEED = 0  # sampling at a fallback temperature is seeded: a file transcribes the same way each time


def ends_in_loop(tokens: Sequence[int]) -> bool:
    """True when the last `WINDOW` tokens mostly repeat n-grams they already hold."""
    if len(tokens) < WINDOW:
        return False
    tail = tuple(tokens[-WINDOW:])
    seen: set[tuple[int, ...]] = set()
    repeated = 0
    for i in range(WINDOW - NGRAM + 1):
        gram = tail[i : i + NGRAM]
        repeated += gram in seen
        seen.add(gram)
    return repeated >= MIN_REPEATED * (WINDOW - NGRAM + 1)


def looping_rows(ids: torch.Tensor, generated: int) -> list[int]:
    """The rows of `ids` (rows × tokens, the last `generated` of them decoded) that end in a loop."""
    if generated < WINDOW:
        return []
    return [i for i, row in enumerate(ids[:, -WINDOW:].tolist()) if ends_in_loop(row)]


def fallback_temperatures(temperature: float) -> list[float]:
    """The temperatures to decode a looping window at, after one decoded at `temperature`."""
    return [t for t in FALLBACK_TEMPERATURES if t > temperature + 1e-9]
