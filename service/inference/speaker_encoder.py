"""Speaker embeddings: the small interface diarization needs, and the models behind it.

`SpeakerEncoder.embed(audio)` gives one L2-normalised embedding per short sliding window of 16 kHz mono speech,
with each window's span. Two models, chosen by `SPEAKER_MODEL`:

- `resemblyzer` (the default): Resemblyzer's GE2E speaker encoder (Wan et al., "Generalized End-to-End Loss for
  Speaker Verification", 2018; Apache-2.0). Its weights ship inside the `resemblyzer` wheel
  (`resemblyzer/pretrained.pt`, 17 MB), so it loads with no network. Only the weights file is read: the network
  (3-layer LSTM over 40 mel channels, a linear layer, ReLU, L2 norm) and its mel front end (librosa's
  `melspectrogram`: 25 ms Hann window, 10 ms hop, Slaney mel scale and norm, power 2) are rebuilt here, because
  the package's own modules import librosa and webrtcvad at import time (webrtcvad needs `pkg_resources`, gone
  from current setuptools). The wheel is installed without its dependencies (`pip install --no-deps`).
  `SPEAKER_MODEL_PATH` may name another checkpoint of the same network.
- `pyannote`: pyannote.audio's embedding model (e.g. `pyannote/wespeaker-voxceleb-resnet34-LM`), for operators
  who install `pyannote.audio` in the image and provide the weights at `SPEAKER_MODEL_PATH` (a stage mounted as a
  volume, or a folder baked into the image): no hub download at run time.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from service.audio import SAMPLE_RATE

SPEAKER_MODELS = ("resemblyzer", "pyannote")


@dataclass
class Embeddings:
    """Embeddings of sliding windows over one stretch of audio: `vectors` (n, dim), L2-normalised, and each
    window's `start`/`end` in seconds from the stretch's start (the last window may reach past its end)."""

    vectors: np.ndarray
    start: np.ndarray
    end: np.ndarray


class SpeakerEncoder(Protocol):
    """A speaker-embedding model: `window_s` long windows, `embed` with a hop of `hop_s`."""

    name: str
    window_s: float

    def embed(self, audio: np.ndarray, hop_s: float) -> Embeddings: ...


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """The Slaney mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log_part = hz >= 1000.0
    return np.where(log_part, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * (200.0 / 3))


@functools.cache
def mel_filters(n_fft: int, n_mels: int, rate: int = SAMPLE_RATE) -> np.ndarray:
    """librosa.filters.mel(sr=rate, n_fft, n_mels) with its defaults (Slaney scale, Slaney area norm)."""
    fft_freqs = np.linspace(0, rate / 2, 1 + n_fft // 2)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), n_mels + 2))
    widths = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2 : n_mels + 2] - mel_freqs[:n_mels]))[:, None]
    return weights.astype(np.float32)


def mel_spectrogram(audio: np.ndarray, n_fft: int = 400, hop: int = 160, n_mels: int = 40) -> np.ndarray:
    """librosa.feature.melspectrogram(y=audio, sr=16000, n_fft, hop_length=hop, n_mels) as (frames, n_mels):
    a centred STFT (zero padding, periodic Hann window), power 2, mel filters."""
    padded = np.pad(audio.astype(np.float32), n_fft // 2)
    frames = 1 + (padded.shape[0] - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    power = np.abs(np.fft.rfft(padded[index] * window, axis=1)) ** 2
    return (power.astype(np.float32) @ mel_filters(n_fft, n_mels).T).astype(np.float32)


def resemblyzer_weights() -> Path:
    """The GE2E checkpoint inside the installed `resemblyzer` package (found without importing the package)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "speaker labels need the resemblyzer wheel's weights: pip install --no-deps resemblyzer==0.1.4 "
            "(make install does)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


class GE2EEncoder:
    """Resemblyzer's voice encoder: 1.6 s windows (160 mel frames), 256-dim embeddings."""

    name = "resemblyzer"
    window_s = 1.6
    FRAMES = 160  # mel frames per window (10 ms each)
    HOP = 160  # samples per mel frame
    BATCH = 64  # windows per forward pass

    def __init__(self, weights: Path | None = None, device: str = "cpu", threads: int | None = None) -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = torch.nn.Linear(256, 256)
        state = torch.load(weights or resemblyzer_weights(), map_location="cpu", weights_only=True)["model_state"]
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.to(self.device).eval()
        self.linear.to(self.device).eval()
        self.threads = threads
        self._lock = threading.Lock()  # one forward pass at a time per replica: the jobs share its threads

    def embed(self, audio: np.ndarray, hop_s: float) -> Embeddings:
        """Windows of 1.6 s every `hop_s` seconds covering `audio`, the last one ending at its end; audio shorter
        than a window is one window of its own length. (Resemblyzer's `embed_utterance` zero-pads instead: the
        LSTM's final state then describes the padding's silence more than the voice.)"""
        torch = self._torch
        mel = mel_spectrogram(audio)[: max(1, audio.shape[0] // self.HOP)]
        frames = min(self.FRAMES, mel.shape[0])
        step = max(1, round(hop_s * SAMPLE_RATE / self.HOP))
        starts = list(range(0, mel.shape[0] - frames + 1, step))
        if starts[-1] != mel.shape[0] - frames:
            starts.append(mel.shape[0] - frames)
        windows = np.stack([mel[s : s + frames] for s in starts])
        vectors = []
        with self._lock, torch.inference_mode():
            previous = torch.get_num_threads()
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                for first in range(0, len(windows), self.BATCH):
                    batch = torch.from_numpy(windows[first : first + self.BATCH]).to(self.device)
                    _, (hidden, _) = self.lstm(batch)
                    raw = torch.relu(self.linear(hidden[-1]))
                    vectors.append(torch.nn.functional.normalize(raw, dim=1).cpu().numpy())
            finally:
                torch.set_num_threads(previous)
        start = np.asarray(starts, dtype=np.float64) * self.HOP / SAMPLE_RATE
        return Embeddings(np.concatenate(vectors), start, start + frames * self.HOP / SAMPLE_RATE)


class PyannoteEncoder:
    """pyannote.audio's embedding model from a local checkpoint (`SPEAKER_MODEL_PATH`), sliding windows."""

    name = "pyannote"
    window_s = 1.5

    def __init__(self, path: Path, device: str = "cpu") -> None:
        try:
            import torch
            from pyannote.audio import Inference, Model
        except ImportError as err:
            raise RuntimeError("SPEAKER_MODEL=pyannote needs pyannote.audio installed in the Ray image") from err
        self._torch = torch
        self._model = Model.from_pretrained(str(path))
        self._model.to(torch.device(device))
        self._inference_class = Inference
        self._inferences: dict[float, Any] = {}  # one sliding-window Inference per hop
        self._lock = threading.Lock()

    def embed(self, audio: np.ndarray, hop_s: float) -> Embeddings:
        from pyannote.core import SlidingWindowFeature

        if audio.shape[0] < self.window_s * SAMPLE_RATE:
            audio = np.pad(audio, (0, int(self.window_s * SAMPLE_RATE) - audio.shape[0]))
        with self._lock:
            inference = self._inferences.get(hop_s)
            if inference is None:
                inference = self._inference_class(self._model, window="sliding", duration=self.window_s, step=hop_s)
                self._inferences[hop_s] = inference
            waveform = self._torch.from_numpy(audio[None, :].astype(np.float32))
            out: SlidingWindowFeature = inference({"waveform": waveform, "sample_rate": SAMPLE_RATE})
        vectors = np.asarray(out.data, dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
        start = np.array([out.sliding_window[i].start for i in range(len(vectors))])
        return Embeddings(vectors, start, start + self.window_s)


def load_encoder(
    model: str, path: str | None = None, device: str = "cpu", threads: int | None = None
) -> SpeakerEncoder:
    """The configured speaker encoder (`SPEAKER_MODEL`, `SPEAKER_MODEL_PATH`)."""
    if model == "resemblyzer":
        return GE2EEncoder(Path(path) if path else None, device=device, threads=threads)
    if model == "pyannote":
        if not path:
            raise RuntimeError("SPEAKER_MODEL=pyannote needs SPEAKER_MODEL_PATH: the checkpoint's folder or file")
        return PyannoteEncoder(Path(path), device=device)
    raise ValueError(f"unknown SPEAKER_MODEL {model!r}: one of {', '.join(SPEAKER_MODELS)}")


@functools.cache
def shared_encoder(model: str = "resemblyzer", path: str | None = None) -> SpeakerEncoder:
    """One encoder per model for this process (the CLI's files share it; a Decoder replica holds its own)."""
    return load_encoder(model, path)
