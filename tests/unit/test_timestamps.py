"""Splitting generated tokens at Whisper timestamp tokens."""

from service.inference.timestamps import split_at_timestamps

TS, EOT = 1000, 900  # timestamp_begin and end-of-text of a made-up vocabulary


def ts(seconds: float) -> int:
    return TS + round(seconds / 0.02)


def test_pairs_become_spans() -> None:
    spans = split_at_timestamps([ts(0), 1, 2, ts(2.5), ts(2.5), 3, ts(4)], TS, EOT, 10.0)
    assert [(s.start, s.end, s.tokens, s.offset) for s in spans] == [(0.0, 2.5, [1, 2], 0), (2.5, 4.0, [3], 2)]


def test_unclosed_tail_runs_to_window_end_and_specials_are_skipped() -> None:
    spans = split_at_timestamps([950, ts(1), 5, 6, ts(3), 7, 8, EOT], TS, EOT, 6.0)
    assert [(s.start, s.end, s.tokens) for s in spans] == [(1.0, 3.0, [5, 6]), (3.0, 6.0, [7, 8])]


def test_times_are_clamped_to_the_window() -> None:
    spans = split_at_timestamps([ts(0), 1, ts(29.0)], TS, EOT, 5.0)
    assert (spans[0].start, spans[0].end) == (0.0, 5.0)
    assert split_at_timestamps([ts(0), ts(1)], TS, EOT, 5.0) == []
