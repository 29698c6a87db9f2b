"""split_text: pieces under the limit, whole sentences packed together, every word kept in order."""

from __future__ import annotations

import random

import pytest

from service.translate.text import split_text

HINDI = (
    "मेरा नाम राम है। मैं दिल्ली में रहता हूँ। आज मौसम बहुत अच्छा है। क्या आप मेरे साथ चलेंगे? हम बाज़ार जाएँगे और फल खरीदेंगे॥ फिर घर लौटेंगे।"
)


def check(text: str, max_chars: int) -> list[str]:
    """Split and check the properties every split must have (words kept, pieces non-blank and short)."""
    pieces = split_text(text, max_chars)
    assert all(piece and piece == piece.strip() and len(piece) <= max_chars for piece in pieces)
    assert "".join("".join(pieces).split()) == "".join(text.split())
    return pieces


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_blank_text_gives_no_pieces(text: str) -> None:
    assert split_text(text, 100) == []


def test_short_text_is_one_piece_with_whitespace_normalised() -> None:
    assert check("  Hello   world.\nHow are\tyou?  ", 100) == ["Hello world. How are you?"]


def test_packs_whole_sentences() -> None:
    text = "One two. Three four five! Six? Seven eight nine ten."
    pieces = check(text, 21)
    assert pieces == ["One two.", "Three four five! Six?", "Seven eight nine ten."]
    assert " ".join(pieces) == text


def test_hindi_splits_at_danda() -> None:
    pieces = check(HINDI, 40)
    assert len(pieces) > 1
    assert all(piece.endswith(("।", "॥", "?")) for piece in pieces)
    assert " ".join(pieces) == HINDI
    assert split_text(HINDI, len(HINDI)) == [HINDI]


def test_danda_written_after_a_space() -> None:
    assert check("यह पहला है । यह दूसरा है ।", 14) == ["यह पहला है ।", "यह दूसरा है ।"]


def test_exact_limit() -> None:
    text = "abcd. efgh."
    assert check(text, len(text)) == [text]
    assert check(text, len(text) - 1) == ["abcd.", "efgh."]
    assert check("abcde", 5) == ["abcde"]


def test_long_sentence_splits_at_spaces() -> None:
    sentence = " ".join(f"word{i}" for i in range(50)) + "."
    text = f"Short one. {sentence} Tail."
    pieces = check(text, 30)
    assert pieces[0] == "Short one."  # the long sentence starts a piece of its own
    assert pieces[-1].endswith("Tail.")
    assert " ".join(pieces) == text
    assert all(len(piece) > 20 for piece in pieces[1:-1])  # packed, not one word per piece


def test_long_word_is_split_hard() -> None:
    text = "a " + "x" * 25 + " b."
    pieces = check(text, 10)
    assert pieces == ["a", "xxxxxxxxxx", "xxxxxxxxxx", "xxxxx b."]


def test_hard_split_keeps_vowel_signs_with_their_letter() -> None:
    word = "किताबें" * 3  # consonants followed by vowel signs (combining marks)
    pieces = check(word, 4)
    assert all(piece[0] not in "ािीुूेैोौंँ्" for piece in pieces)


def test_cjk_full_stop_without_spaces() -> None:
    text = "今天天气很好。我们去公园吧！好的。"
    assert check(text, 10) == ["今天天气很好。", "我们去公园吧！好的。"]


def test_sentence_ends_only_before_whitespace() -> None:
    assert check("Pi is 3.14 roughly. e.g.ok", 100) == ["Pi is 3.14 roughly. e.g.ok"]
    assert check("Pi is 3.14 roughly. Yes.", 19) == ["Pi is 3.14 roughly.", "Yes."]


def test_closing_quote_stays_with_its_sentence() -> None:
    assert check('He said "go." Then left.', 14) == ['He said "go."', "Then left."]


def test_invalid_limit() -> None:
    with pytest.raises(ValueError):
        split_text("text", 0)


@pytest.mark.parametrize("seed", range(20))
def test_random_texts_keep_every_word(seed: int) -> None:
    rng = random.Random(seed)
    vocab = ["नमस्ते", "दुनिया।", "hello", "world.", "why?", "यह॥", "x" * 40, "ok!", "a", "बहुत"]
    text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 200)))
    max_chars = rng.randint(5, 120)
    pieces = check(text, max_chars)
    if all(len(word) <= max_chars for word in text.split()):
        assert " ".join(pieces) == text
