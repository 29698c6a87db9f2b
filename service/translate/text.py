"""Splitting a transcript into pieces short enough for one Cortex call, at sentence boundaries."""

from __future__ import annotations

import re
import unicodedata

# A sentence ends after ., ?, ! or the Devanagari danda/double danda when whitespace (or the end) follows,
# and after the CJK full stop, question and exclamation marks even without whitespace.
# Closing quotes and brackets right after the terminator stay with the sentence.
_SENTENCE_END = re.compile(r"""[.?!।॥]+["'”’)\]»]*(?=\s|$)|[。！？]+["'”’)\]」』）]*""")

Unit = tuple[str, str]  # (separator before it in the text: "" or " ", the unit itself)


def split_text(text: str, max_chars: int) -> list[str]:
    """Pieces of `text`, each at most `max_chars` long, as many whole sentences per piece as fit.

    Whitespace is normalised to single spaces. A sentence longer than `max_chars` is split at spaces, a word
    longer than that is split hard (never just before a combining mark, such as a Devanagari vowel sign).
    Joining the pieces with single spaces gives back the text's words, in order.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, not {max_chars}")
    normalised = " ".join(text.split())
    pieces: list[str] = []
    current = ""
    for sep, sentence in _sentences(normalised):
        if len(sentence) > max_chars:
            # Start the long sentence on a piece of its own; later sentences may join its last part.
            if current:
                pieces.append(current)
            chunks = _pack(_words(sentence, max_chars), max_chars)
            pieces.extend(chunks[:-1])
            current = chunks[-1]
        elif current and len(current) + len(sep) + len(sentence) <= max_chars:
            current += sep + sentence
        else:
            if current:
                pieces.append(current)
            current = sentence
    if current:
        pieces.append(current)
    return pieces


def _sentences(text: str) -> list[Unit]:
    """The sentences of single-spaced `text`, each with the separator that preceded it."""
    units: list[Unit] = []
    start, sep = 0, ""
    for match in _SENTENCE_END.finditer(text):
        units.append((sep, text[start : match.end()]))
        start = match.end()
        sep = " " if text[start : start + 1] == " " else ""
        start += len(sep)
    if start < len(text):
        units.append((sep, text[start:]))
    return units


def _words(sentence: str, max_chars: int) -> list[Unit]:
    """The words of a sentence; a word longer than `max_chars` becomes several units joined without a space."""
    units: list[Unit] = []
    for index, word in enumerate(sentence.split(" ")):
        sep = " " if index else ""
        while len(word) > max_chars:
            cut = max_chars
            while cut > 1 and unicodedata.category(word[cut]).startswith("M"):
                cut -= 1
            units.append((sep, word[:cut]))
            word, sep = word[cut:], ""
        units.append((sep, word))
    return units


def _pack(units: list[Unit], max_chars: int) -> list[str]:
    """Greedily join units (each at most `max_chars`) into pieces of at most `max_chars`."""
    pieces: list[str] = []
    current = ""
    for sep, unit in units:
        if current and len(current) + len(sep) + len(unit) <= max_chars:
            current += sep + unit
        else:
            if current:
                pieces.append(current)
            current = unit
    if current:
        pieces.append(current)
    return pieces
