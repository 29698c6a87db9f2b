"""Repetition loops (`service/inference/loops.py`): what counts as one, and the transformers engine's guard that
ends a looping row while it is generated."""

from __future__ import annotations

import random

import torch

from service.inference.engine_transformers import _Loops
from service.inference.loops import CHECK_EVERY, WINDOW, ends_in_loop, fallback_temperatures, looping_rows

EOT = 50257


def words(count: int, seed: int = 0) -> list[int]:
    """Tokens of text that does not repeat itself (distinct ids, as real sentences nearly are)."""
    return random.Random(seed).sample(range(1000, 40000), count)


def quasi_loop(units: int) -> list[int]:
    """A unit of 7 tokens repeated with beam search's small variations (a token added or swapped now and then),
    as the `base` model looped on a Hindi clip."""
    unit, out = [311, 4122, 871, 90, 4122, 1530, 220], []
    for i in range(units):
        out += unit + ([2015] if i % 3 == 2 else [])
        if i % 4 == 1:
            out[-2] = 873
    return out


def test_text_that_does_not_repeat_is_no_loop() -> None:
    assert not ends_in_loop(words(448))
    assert not ends_in_loop(words(WINDOW - 1) + words(1))  # too short to judge


def test_a_repeated_unit_is_a_loop_even_with_variations() -> None:
    assert ends_in_loop([*words(20), *([5, 6, 7, 8, 9] * 12)])
    assert ends_in_loop([*words(10), *quasi_loop(8)])
    assert ends_in_loop([7] * WINDOW)


def test_speech_that_repeats_a_phrase_a_few_times_is_no_loop() -> None:
    text = words(60)
    no = [645, 11, 645, 11, 645, 11, 645]  # "no, no, no, no"
    clause = text[:10]  # "kabhi dukh bhi baanta hoon, kabhi sukh bhi baanta hoon"
    assert not ends_in_loop([*text, *no, *words(20, seed=1)])
    assert not ends_in_loop([*text[10:40], *clause, *text[40:46], *clause])


def test_rows_are_judged_on_their_generated_tokens_only() -> None:
    looped = [50258, 50276, 50359, *quasi_loop(9)]
    plain = [50258, 50276, 50359, *words(len(looped) - 3)]
    ids = torch.tensor([plain, looped])
    assert looping_rows(ids, ids.shape[1] - 3) == [1]
    assert looping_rows(ids, WINDOW - 1) == []  # not enough decoded yet


def test_the_guard_ends_only_the_looping_row_with_end_of_text() -> None:
    prefix = [50258, 50276, 50359]
    decoded = quasi_loop(10)[: WINDOW + CHECK_EVERY]
    ids = torch.tensor([prefix + decoded, prefix + words(len(decoded))])
    scores = _Loops(len(prefix), EOT)(ids, torch.zeros(2, EOT + 100))
    assert torch.isinf(scores[0]).sum() == scores.shape[1] - 1 and scores[0, EOT] == 0
    assert torch.isinf(scores[1]).sum() == 0
    # between two looks, nothing is changed
    scores = _Loops(len(prefix), EOT)(ids[:, :-1], torch.zeros(2, EOT + 100))
    assert torch.isinf(scores).sum() == 0


def test_fallback_temperatures_follow_whispers_ladder() -> None:
    assert fallback_temperatures(0.0) == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert fallback_temperatures(0.5) == [0.6, 0.8, 1.0]
    assert fallback_temperatures(1.0) == []
