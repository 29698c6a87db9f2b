"""Speaker labels through the real service (gateway → Ray app: VAD, Whisper, speaker embeddings, clustering):
conversations of known turns, scored by diarization error rate (0.25 s collar) and speaker count."""

from __future__ import annotations

from pathlib import Path

import pytest
import srt

from tests import conversations
from tests.harness import Service
from tests.integration.helpers import transcribe
from tests.media import write_wav

MAX_DER = 0.15
HINDI_CLIPS = ("hi_mannkibaat_00A020.mp3", "hi_mannkibaat_00C007.mp3", "hi_ddnews_00D002.mp3")
HINDI = all((conversations.SHARED / name).is_file() for name in HINDI_CLIPS)


def _score(transcript: dict, reference: list[conversations.Turn]) -> tuple[float, int]:
    segments = transcript["segments"]
    assert segments and all(s.get("speaker", "").startswith("SPEAKER_") for s in segments), segments
    assert transcript["speakers"] == sorted(transcript["speakers"])  # labelled in order of first speech
    hypothesis = conversations.speaker_turns(segments)
    return conversations.der(reference, hypothesis, collar=0.25), len({s["speaker"] for s in segments})


def test_two_speakers_committed_conversation(service: Service) -> None:
    """tests/data/speakers_jfk_lj.wav: LJSpeech and JFK, 8 turns of 3.9-10.7 s, automatic speaker count."""
    reference = conversations.read_rttm(conversations.COMMITTED.with_suffix(".rttm"))
    with service.client() as client:
        job, transcript = transcribe(client, conversations.COMMITTED, language="en", speakers="true")
    error, found = _score(transcript, reference)
    print(f"[{service.engine}] speakers_jfk_lj: DER {error:.3f}, {found} speakers, {job['timings']}")
    assert found == 2 and error <= MAX_DER
    assert all("words" not in s for s in transcript["segments"])  # decoded to place the turns, not asked for
    # segments split at speaker changes: no segment crosses a reference turn boundary by more than the collar
    for segment in transcript["segments"]:
        overlapping = [t for t in reference if min(t.end, segment["end"]) - max(t.start, segment["start"]) > 0.5]
        assert len(overlapping) <= 1, segment


def test_speaker_count_and_words(service: Service) -> None:
    """An exact count, with word timestamps: every word has its segment's speaker."""
    with service.client() as client:
        job, _ = transcribe(client, conversations.COMMITTED, language="en", speakers="2", word_timestamps="true")
        transcript = client.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "verbose_json"}).json()
        srt_body = client.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "srt"}).text
    assert transcript["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    cues = list(srt.parse(srt_body))
    assert [c.content.split(":")[0] for c in cues] == [s["speaker"] for s in transcript["segments"]]
    for segment in transcript["segments"]:
        assert segment["words"] and {w["speaker"] for w in segment["words"]} == {segment["speaker"]}


def test_one_speaker_is_one_label(service: Service) -> None:
    """A single voice (JFK) asked with an automatic count gets one label."""
    with service.client() as client:
        _, transcript = transcribe(client, conversations.DATA / "en_jfk.flac", speakers="true")
    assert transcript["speakers"] == ["SPEAKER_00"]
    assert {s["speaker"] for s in transcript["segments"]} == {"SPEAKER_00"}


@pytest.mark.skipif(not HINDI, reason="Hindi clips are not redistributable; they live in ../shared/audio only")
@pytest.mark.parametrize(
    "build", [conversations.three_speakers, conversations.four_speakers, conversations.english_first]
)
def test_hindi_and_english_conversations(service: Service, tmp_path: Path, build) -> None:
    """3 and 4 speakers (Mann Ki Baat, Doordarshan news, JFK, LJSpeech) in two languages, detected per turn."""
    audio, reference = build()
    path = write_wav(tmp_path / f"{build.__name__}.wav", audio)
    with service.client() as client:
        _, transcript = transcribe(client, path, speakers="true")
    error, found = _score(transcript, reference)
    expected = len({t.speaker for t in reference})
    print(f"[{service.engine}] {build.__name__}: DER {error:.3f}, {found} of {expected} speakers")
    assert found == expected and error <= MAX_DER
    assert transcript["language"] == ("en" if build is conversations.english_first else "hi")


def test_openai_diarized_json(service: Service) -> None:
    """The official client asks for `diarized_json` and parses OpenAI's diarize shape with the labels."""
    import openai

    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused", timeout=300, max_retries=0)
    with conversations.COMMITTED.open("rb") as fh:
        result = client.audio.transcriptions.create(
            file=fh, model="whisper-1", language="en", response_format="diarized_json"
        )
    reference = conversations.read_rttm(conversations.COMMITTED.with_suffix(".rttm"))
    hypothesis = [conversations.Turn(s.start, s.end, s.speaker) for s in result.segments]
    assert {s.speaker for s in result.segments} == {"SPEAKER_00", "SPEAKER_01"}
    assert conversations.der(reference, hypothesis) <= MAX_DER
    assert all(s.type == "transcript.text.segment" for s in result.segments)
