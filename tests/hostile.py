"""A corpus of hostile inputs for `POST /v1/jobs`, each with the 4xx the service must answer.

Every case is `Case(name, build, status, code)`: `build(tmp)` returns the keyword arguments of
`httpx.Client.post` (files/data/content/headers) and may write helper files under `tmp`. The expectations
assume a gateway with `SPCS_WHISPER_MAX_UPLOAD_MB=2` and `SPCS_WHISPER_MAX_AUDIO_SECONDS=600` (and the defaults
of `PROBE_FULL_DECODE_MB`, so every small upload is fully decoded at submit time, and `MAX_JSON_MB`, 2).

`accepted_but_inert()` lists inputs that are valid audio and are accepted, but carry something else as well
(a page with a script): what the service stores must come back as audio, never as what the bytes also are.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from functools import cache
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

import av
import numpy as np

from tests.media import write_video_only

DATA = Path(__file__).parent / "data"
MAX_UPLOAD_MB = 2
MAX_AUDIO_SECONDS = 600
RATE = 16_000

Request = dict[str, Any]  # keyword arguments of httpx.Client.post("/v1/jobs", ...)


class Case(NamedTuple):
    name: str
    build: Callable[[Path], Request]
    status: int
    code: str


# --- request builders -------------------------------------------------------------------------------------------


def upload(filename: str, payload: bytes, **fields: str) -> Request:
    return {"files": {"file": (filename, payload)}, "data": fields}


def raw(body: bytes | Iterator[bytes], content_type: str) -> Request:
    return {"content": body, "headers": {"content-type": content_type}}


def stage_json(**fields: Any) -> Request:
    return raw(json.dumps({"source": "@AUDIO_FILES_STAGE/a.wav", **fields}).encode(), "application/json")


def streamed_multipart(size: int) -> Request:
    """A multipart body sent in chunks, without Content-Length: the limit must hold while it streams."""

    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for _ in range(size // 65536):
            yield b"\0" * 65536
        yield b"\r\n--b--\r\n"

    return raw(chunks(), "multipart/form-data; boundary=b")


def streamed_json(size: int) -> Request:
    """A JSON job body of `size` bytes (a long prompt) sent in chunks, without Content-Length: the JSON limit
    must hold while it streams, before it is read whole."""

    def chunks() -> Iterator[bytes]:
        yield b'{"source": "@AUDIO_FILES_STAGE/a.wav", "prompt": "'
        for _ in range(size // 65536):
            yield b"x" * 65536
        yield b'"}'

    return raw(chunks(), "application/json")


def nested_json(depth: int, opener: bytes = b"[", closer: bytes = b"]", leaf: bytes = b"1") -> bytes:
    """`{"source": [[[...1...]]]}`: valid JSON nested `depth` levels (a recursive parser's stack overflows)."""
    return b'{"source": ' + opener * depth + leaf + closer * depth + b"}"


# --- payloads ---------------------------------------------------------------------------------------------------


def random_bytes(seed: int, size: int = 64 * 1024) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def wav(
    pcm: bytes, *, tag: int = 1, channels: int = 1, rate: int = RATE, bits: int = 16, data_len: int | None = None
) -> bytes:
    """A RIFF/WAVE file whose header says what it is told to, whatever `pcm` really holds."""
    data_len = len(pcm) if data_len is None else data_len
    align = min(channels * bits // 8, 0xFFFF)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, min(rate * align, 0xFFFFFFFF), align, bits)
    riff = min(4 + 8 + len(fmt) + 8 + data_len, 0xFFFFFFFF)
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + (b"data" + struct.pack("<I", data_len) + pcm)
    )


def float_wav(bad: float) -> bytes:
    """One second of a 32-bit float tone with a few non-finite samples in it."""
    samples = (0.3 * np.sin(np.arange(RATE) / RATE * 2 * np.pi * 440)).astype(np.float32)
    samples[RATE // 2 : RATE // 2 + 8] = bad
    return wav(samples.tobytes(), tag=3, bits=32)


@cache
def jfk_pcm() -> np.ndarray:
    """The JFK clip as 16 kHz mono float32."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    with av.open(str(DATA / "en_jfk.flac")) as container:
        frames = [out for frame in container.decode(audio=0) for out in resampler.resample(frame)]
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def encode(blocks: Iterable[np.ndarray], fmt: str, codec: str, options: dict[str, str] | None = None) -> bytes:
    """Encode blocks of 16 kHz mono float32 samples in memory (`codec` in container `fmt`)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=RATE, options=options or {})
        stream.layout = "mono"
        pts = 0
        for block in blocks:
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = RATE, pts, Fraction(1, RATE)
            pts += len(block)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def blocks(samples: np.ndarray, size: int = 16384) -> Iterator[np.ndarray]:
    return (samples[i : i + size] for i in range(0, len(samples), size))


@cache
def jfk(kind: str) -> bytes:
    if kind == "wav":
        return wav((jfk_pcm() * 32767).astype(np.int16).tobytes())
    if kind == "mp3":
        return encode(blocks(jfk_pcm()), "mp3", "libmp3lame")
    if kind == "ogg":
        return encode(blocks(jfk_pcm()), "ogg", "libopus")
    return (DATA / {"flac": "en_jfk.flac", "m4a": "en_jfk.m4a", "video": "en_jfk_video.mp4"}[kind]).read_bytes()


def cut(kind: str, at: float | int) -> bytes:
    """The first `at` bytes (an int) or the first fraction `at` (a float) of a JFK file."""
    data = jfk(kind)
    return data[: at if isinstance(at, int) else int(len(data) * at)]


@cache
def silent_flac_4h() -> bytes:
    """Four hours of digital silence: about 190 KB of FLAC (16384-sample frames)."""
    silence = repeat(np.zeros(16384, np.float32), 4 * 3600 * RATE // 16384)
    return encode(silence, "flac", "flac", {"frame_size": "16384"})


def undeclared(flac: bytes) -> bytes:
    """`flac` with its STREAMINFO total zeroed ("unknown", as a streamed FLAC has it): only decoding can tell
    how long the audio is (bytes 18..26 pack rate 20 bits, channels 3, bits 5, total samples 36)."""
    packed = int.from_bytes(flac[18:26], "big") & ~((1 << 36) - 1)
    return flac[:18] + packed.to_bytes(8, "big") + flac[26:]


def image(codec: str, pix_fmt: str) -> bytes:
    """A single 16×16 picture (PNG or JPEG), as an image file."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="image2pipe") as out:
        stream = out.add_stream(codec, rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, pix_fmt
        frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 200, np.uint8), format="rgb24")
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def zip_archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("audio.m4a", jfk("m4a"))
    return buf.getvalue()


SCRIPT = b"<html><body><script>document.title = 'xss:' + localStorage.length;</script></body></html>"


def script_wav() -> bytes:
    """One silent second of WAV whose bytes also hold an HTML page with a script (in a RIFF LIST/INFO comment,
    which players ignore): served as text/html it runs on the gateway's origin, where the page keeps the token."""
    comment = SCRIPT + b"\0" * (2 - len(SCRIPT) % 2)  # NUL-terminated, even length
    info = b"INFO" + b"ICMT" + struct.pack("<I", len(comment)) + comment
    chunk = b"LIST" + struct.pack("<I", len(info)) + info
    head, rest = SECOND[:36], SECOND[36:]  # RIFF header + fmt chunk, then the data chunk
    body = head + chunk + rest
    return body[:4] + struct.pack("<I", len(body) - 8) + body[8:]


def mp4_ftyp_only() -> bytes:
    return struct.pack(">I4s4sI", 24, b"ftyp", b"M4A ", 0) + b"M4A isom"


ID3_NO_FRAMES = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # ID3v2.4 header, tag size 0
TEXT = b"this is a text file, not audio\n" * 100
SECOND = wav(np.zeros(RATE, np.int16).tobytes())  # a valid, silent second: the options are what is wrong
OVERSIZE = int((MAX_UPLOAD_MB + 0.5) * 1024 * 1024)


# Files that name other files or streams: FFmpeg's concat, HLS, DASH and SDP demuxers would open what they name
# (another upload beside this one, any local file, a network stream). Each takes the target to name.


def ffconcat(target: str) -> bytes:
    return f"ffconcat version 1.0\nfile '{target}'\n".encode()


def hls(target: str) -> bytes:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:20\n#EXTINF:11.0,\n{target}\n#EXT-X-ENDLIST\n".encode()


def dash(target: str) -> bytes:
    return (
        '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" mediaPresentationDuration="PT11S"><Period>'
        '<AdaptationSet mimeType="audio/flac"><Representation id="a" bandwidth="64000">'
        f"<BaseURL>{target}</BaseURL></Representation></AdaptationSet></Period></MPD>\n"
    ).encode()


def sdp(port: int = 5004) -> bytes:
    """A session description: FFmpeg's sdp demuxer would listen for RTP on `port` (a network input)."""
    return (f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {port} RTP/AVP 0\n").encode()


# (name, payload for a target): the reference kinds every opener must refuse, whatever the target is.
REFERENCES: list[tuple[str, Callable[[str], bytes]]] = [
    ("ffconcat", ffconcat),
    ("ffconcat-subfile", lambda t: ffconcat(f"subfile,,start,0,end,0,,:{t}")),
    ("ffconcat-tee", lambda t: ffconcat(f"tee:{t}")),
    ("hls", hls),
    ("hls-file-url", lambda t: hls(f"file://{t}" if t.startswith("/") else t)),
    ("hls-subfile", lambda t: hls(f"subfile,,start,0,end,0,,:{t}")),
    ("dash", dash),
    ("sdp", lambda _t: sdp()),
]
JFK_PATH = str((DATA / "en_jfk.flac").resolve())  # a readable audio file at an absolute path


# --- the corpus -------------------------------------------------------------------------------------------------


def _file(name: str, payload: Callable[[], bytes], status: int, code: str) -> Case:
    return Case(name, lambda _tmp: upload(name, payload()), status, code)


def _options(name: str, status: int, code: str, **fields: str) -> Case:
    return Case(name, lambda _tmp: upload("second.wav", SECOND, **fields), status, code)


def corpus() -> list[Case]:
    cases = [
        _file("empty.wav", lambda: b"", 400, "empty_file"),
        *[
            _file(f"random{ext}", lambda seed=seed: random_bytes(seed), 415, "unsupported_media")
            for seed, ext in enumerate([".wav", ".mp3", ".flac", ".m4a", ".ogg", ".mp4", ".webm"])
        ],
        # Truncated files: a cut in the header leaves no audio; a cut in the data leaves less than declared.
        *[
            _file(f"cut-{at}.{kind}", lambda kind=kind, at=at: cut(kind, at), 422, "corrupt_audio")
            for kind, points in {
                "mp3": [0.02, 0.5, 0.8],
                "flac": [0.3, 0.7],
                "wav": [44, 0.3, 0.7],
                "ogg": [0.5],
                "m4a": [0.5, 0.8],
            }.items()
            for at in points
        ],
        _file("cut-100.flac", lambda: cut("flac", 100), 415, "unsupported_media"),  # no complete header left
        _file("cut-200.ogg", lambda: cut("ogg", 200), 415, "unsupported_media"),
        _file("cut-in-moov.m4a", lambda: cut("m4a", 600), 415, "unsupported_media"),
        _file("cut-before-moov.mp4", lambda: cut("video", 0.3), 415, "unsupported_media"),
        Case(
            "video-only.mp4",
            lambda tmp: upload("v.mp4", write_video_only(tmp / "v.mp4").read_bytes()),
            422,
            "no_audio_track",
        ),
        _file("text.wav", lambda: TEXT, 415, "unsupported_media"),
        _file("huge-data-length.wav", lambda: wav(SECOND[44:], data_len=0xFFFFFFF0), 422, "corrupt_audio"),
        _file("65535-channels.wav", lambda: wav(SECOND[44:], channels=65535), 422, "corrupt_audio"),
        _file("0-hz.wav", lambda: wav(SECOND[44:], rate=0), 415, "unsupported_media"),  # FFmpeg refuses the header
        _file("nan-samples.wav", lambda: float_wav(float("nan")), 422, "corrupt_audio"),
        _file("inf-samples.wav", lambda: float_wav(float("inf")), 422, "corrupt_audio"),
        _file("silence-4h-declared.flac", silent_flac_4h, 413, "audio_too_long"),
        _file("silence-4h-undeclared.flac", lambda: undeclared(silent_flac_4h()), 413, "audio_too_long"),
        _file("ftyp-only.mp4", mp4_ftyp_only, 415, "unsupported_media"),
        _file("id3-no-frames.mp3", lambda: ID3_NO_FRAMES, 415, "unsupported_media"),
        _file("image.png.mp3", lambda: image("png", "rgb24"), 415, "unsupported_media"),
        _file("image.jpeg.mp3", lambda: image("mjpeg", "yuvj420p"), 415, "unsupported_media"),
        _file("archive.zip.m4a", zip_archive, 415, "unsupported_media"),
        # The request around the file.
        Case("multipart-without-file", lambda _: {"files": {"other": ("a.wav", SECOND)}}, 422, "missing_file"),
        Case("file-as-text-field", lambda _: {"files": {"file": (None, "abc")}}, 422, "missing_file"),
        Case(
            "multipart-two-files",
            lambda _: {"files": [("file", ("a.wav", SECOND)), ("file", ("b.wav", SECOND))]},
            400,
            "bad_request",
        ),
        Case("multipart-without-boundary", lambda _: raw(b"--x\r\n", "multipart/form-data"), 400, "bad_request"),
        Case("form-field-over-64kb", lambda _: upload("a.wav", SECOND, prompt="x" * 70_000), 400, "bad_request"),
        Case("raw-audio-body", lambda _: raw(SECOND, "audio/wav"), 415, "unsupported_media"),
        Case("no-content-type", lambda _: {"content": SECOND}, 415, "unsupported_media"),
        Case("invalid-json", lambda _: raw(b'{"source": ', "application/json"), 400, "invalid_json"),
        Case("empty-json", lambda _: raw(b"", "application/json"), 400, "invalid_json"),
        Case("json-array", lambda _: raw(b'["@AUDIO_FILES_STAGE/a.wav"]', "application/json"), 422, "validation_error"),
        Case("json-unknown-field", lambda _: stage_json(colour="blue"), 422, "validation_error"),
        Case("json-temperature-string", lambda _: stage_json(temperature="hot"), 422, "validation_error"),
        Case("json-word-timestamps-list", lambda _: stage_json(word_timestamps=[1]), 422, "validation_error"),
        _options("form-unknown-field", 422, "validation_error", colour="blue"),
        _options("form-temperature-string", 422, "validation_error", temperature="hot"),
        _options("form-temperature-nan", 422, "validation_error", temperature="nan"),
        _options("form-temperature-above-1", 422, "validation_error", temperature="2"),
        _options("form-word-timestamps-perhaps", 422, "validation_error", word_timestamps="perhaps"),
        _options("form-unknown-language", 422, "validation_error", language="klingon"),
        _options("form-unknown-task", 422, "validation_error", task="summarise"),
        _options("form-idempotency-key-too-long", 422, "validation_error", idempotency_key="k" * 201),
        _options("form-unknown-model", 422, "unsupported_model", model="large-v9"),
        Case(
            "oversize-with-content-length",
            lambda _: upload("big.wav", random_bytes(99, OVERSIZE)),
            413,
            "file_too_large",
        ),
        Case("oversize-streamed", lambda _: streamed_multipart(OVERSIZE), 413, "file_too_large"),
        # JSON bodies: capped while they stream (MAX_JSON_MB), nesting checked before any parser recurses.
        Case("json-50mb-streamed", lambda _: streamed_json(50 * 1024 * 1024), 413, "json_too_large"),
        Case("json-nested-100k-arrays", lambda _: raw(nested_json(100_000), "application/json"), 400, "json_too_deep"),
        Case(
            "json-nested-50k-objects",
            lambda _: raw(nested_json(50_000, b'{"a": ', b"}"), "application/json"),
            400,
            "json_too_deep",
        ),
        Case("json-nested-33", lambda _: raw(nested_json(33), "application/json"), 400, "json_too_deep"),
        Case(
            "json-unclosed-100k",
            lambda _: raw(b'{"source": ' + b"[" * 100_000, "application/json"),
            400,
            "json_too_deep",
        ),
        Case(
            "json-utf16",
            lambda _: raw('{"source": "@S/a.wav"}'.encode("utf-16"), "application/json"),
            400,
            "invalid_json",
        ),
    ]
    cases += [
        # References to other files and streams (concat, playlists, manifests, session descriptions): refused for
        # what the container is, before anything it names is opened.
        _file("ffconcat-sibling.wav", lambda: ffconcat("job_0123456789abcdef"), 415, "unsupported_media"),
        _file("ffconcat-absolute.wav", lambda: ffconcat(JFK_PATH), 415, "unsupported_media"),
        _file(
            "ffconcat-subfile.wav", lambda: ffconcat(f"subfile,,start,0,end,0,,:{JFK_PATH}"), 415, "unsupported_media"
        ),
        _file("ffconcat-tee.wav", lambda: ffconcat(f"tee:{JFK_PATH}"), 415, "unsupported_media"),
        _file("hls-local-file.m3u8", lambda: hls(JFK_PATH), 415, "unsupported_media"),
        _file("hls-file-url.m3u8", lambda: hls(f"file://{JFK_PATH}"), 415, "unsupported_media"),
        _file("hls-subfile.m3u8", lambda: hls(f"subfile,,start,0,end,0,,:{JFK_PATH}"), 415, "unsupported_media"),
        _file("dash-manifest.mpd", lambda: dash(JFK_PATH), 415, "unsupported_media"),
        _file("sdp-rtp.sdp", sdp, 415, "unsupported_media"),
    ]
    assert len({c.name for c in cases}) == len(cases)
    return cases


def accepted_but_inert() -> list[tuple[str, Callable[[], Request], str]]:
    """(name, request, the Content-Type its stored audio must be served with): valid audio, accepted (202)."""
    return [
        ("script.wav-named.html", lambda: upload("x.html", script_wav()), "audio/wav"),
        ("script.wav-named.svg", lambda: upload("x.svg", script_wav()), "audio/wav"),
        ("script.wav-no-extension", lambda: upload("x", script_wav()), "audio/wav"),
        ("script.wav-quoted-name", lambda: upload('a.wav"; filename="b.html', script_wav()), "audio/wav"),
        ("m4a-named.html", lambda: upload("talk.html", jfk("m4a")), "video/mp4"),
        ("m4a-named.m4a", lambda: upload("talk.m4a", jfk("m4a")), "audio/mp4"),
        ("flac-named.js", lambda: upload("a.js", jfk("flac")), "audio/flac"),
    ]


# A batch pattern with catastrophic backtracking for Python's `re` on a 40-letter name without an x.
HOSTILE_PATTERN = "([a-z/.]+)+x"


def letters_name(i: int, width: int = 40) -> str:
    """A distinct file name of `width` letters a..w (no x, no digit: the worst case for HOSTILE_PATTERN)."""
    name = ""
    for _ in range(width):
        i, digit = divmod(i, 23)
        name += chr(ord("a") + digit)
    return name
