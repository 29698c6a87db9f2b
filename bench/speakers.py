"""What speaker labels cost: the service's in-process pipeline (`local.transcribe_audio`, the Ray app's own
orchestration) on the same files with `speakers` off and on, alternating runs, medians of seconds per audio
second; and the labels' diarization error rate (0.25 s collar) on the committed two-speaker conversation, with
the language given and detected (then windows are cut at speaker changes, each part detecting its language).

    python -m bench.speakers [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from service.audio import SAMPLE_RATE, decode
from service.config import InferenceSettings
from service.inference.engines import load_engine
from service.inference.local import transcribe_audio
from service.inference.speaker_encoder import load_encoder
from service.inference.types import DecodeOptions
from service.options import SpeakerCount
from tests import conversations

FILES = {  # name: (file, language: None detects, and then cuts windows at speaker changes)
    "conversation": (conversations.COMMITTED, "en"),  # 66.6 s, 2 speakers, 8 turns
    "conversation_detected": (conversations.COMMITTED, None),
    "longform": (conversations.DATA / "en_ljspeech_longform.wav", "en"),  # 171 s, 1 speaker
}


def _pass(
    engine: Any, audio: np.ndarray, batch_size: int, speakers: SpeakerCount | None, encoder: Any, language: str | None
):
    started = time.perf_counter()
    transcript = transcribe_audio(
        engine,
        audio,
        language=language,
        options=DecodeOptions(language=language) if language else None,
        batch_size=batch_size,
        speakers=speakers,
        speaker_encoder=encoder,
    )
    return time.perf_counter() - started, transcript


def measure(runs: int = 3, model: str = "base") -> dict[str, Any]:
    """`speakers_*` figures: per file, the median seconds per audio second off and on and their ratio; the
    speaker work's own seconds per audio second; DER and count on the conversation."""
    settings = InferenceSettings(model=model)
    engine = load_engine(settings)
    encoder = load_encoder(settings.speaker_model, settings.speaker_model_path, "cpu", 1)
    out: dict[str, Any] = {}
    for name, (path, language) in FILES.items():
        audio = decode(path)
        seconds = audio.shape[0] / SAMPLE_RATE
        _pass(engine, audio[: 5 * SAMPLE_RATE], settings.batch_size, SpeakerCount(), encoder, language)  # warm-up
        off, on, own = [], [], []
        for _ in range(runs):
            off.append(_pass(engine, audio, settings.batch_size, None, encoder, language)[0] / seconds)
            took, transcript = _pass(engine, audio, settings.batch_size, SpeakerCount(), encoder, language)
            on.append(took / seconds)
            own.append((transcript.timings.speakers_s or 0.0) / seconds)
        out[f"speakers_{name}_off_s_per_audio_s"] = round(statistics.median(off), 4)
        out[f"speakers_{name}_on_s_per_audio_s"] = round(statistics.median(on), 4)
        out[f"speakers_{name}_on_vs_off"] = round(statistics.median(on) / statistics.median(off), 3)
        out[f"speakers_{name}_embed_cluster_s_per_audio_s"] = round(statistics.median(own), 4)
        if name.startswith("conversation"):
            reference = conversations.read_rttm(path.with_suffix(".rttm"))
            hypothesis = conversations.speaker_turns(transcript.segments)
            out[f"speakers_{name}_der"] = round(conversations.der(reference, hypothesis), 4)
        out[f"speakers_{name}_found"] = len(transcript.speakers or [])
        print(f"speakers {name}: {json.dumps({k: v for k, v in out.items() if f'_{name}_' in k})}", flush=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="base")
    args = parser.parse_args()
    print(json.dumps(measure(args.runs, args.model), indent=2))
