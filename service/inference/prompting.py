"""The text tokens both engines put between `<|startofprev|>` and `<|startoftranscript|>`.

As faster-whisper's `get_prompt`: the hotwords first (their first 223 tokens), then the previous text (its last
tokens). Whisper's context is 448 tokens and half of it is the prompt's (openai-whisper and faster-whisper keep
the last n_text_ctx // 2 - 1 = 223 tokens of the previous text): here hotwords and previous text together keep
at most 223 tokens, so a window always has the usual room for its own text, however long the prompt.
"""

from __future__ import annotations

from collections.abc import Callable

PROMPT_TOKENS = 223  # n_text_ctx // 2 - 1 for every Whisper model (n_text_ctx = 448)


def prompt_tokens(
    encode: Callable[[str], list[int]],
    eot: int,
    hotwords: str | None = None,
    previous: str | None = None,
    limit: int = PROMPT_TOKENS,
) -> list[int]:
    """Hotword tokens (the first `limit`) then the previous text's last tokens, `limit` in all; text tokens
    only (ids below end-of-text: a special token typed into the text is dropped). Both are encoded with
    Whisper's leading space (`" " + text.strip()`), as openai-whisper and faster-whisper encode a prompt."""

    def text_ids(text: str | None) -> list[int]:
        text = (text or "").strip()
        return [t for t in encode(" " + text) if t < eot] if text else []

    words = text_ids(hotwords)[:limit]
    room = limit - len(words)
    tail = text_ids(previous)[-room:] if room > 0 else []
    return words + tail
