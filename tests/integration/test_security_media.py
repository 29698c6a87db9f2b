"""No file can hurt the host (issue 14): media that names other files, and long files, through real processes.

Everything here is real: `spcs-whisper serve` (gateway + local Ray + Ray Serve app, Whisper tiny.en on
CTranslate2), PyAV/FFmpeg, Silero VAD. Nothing is stubbed.

1. Files that name other files or streams (ffconcat lists, HLS playlists, DASH manifests, SDP session
   descriptions, with `subfile:`, `tee:` and `file:` inside) are refused with 415 `unsupported_media` by the
   gateway (uploads and mounted stage files) and by the Ray Decoder (bytes posted to it directly), with the same
   answer whether what they name exists or not: nothing about another upload, a local file or the network is
   opened or revealed.
2. The Decoder's memory does not grow with the audio's length: four 2-hour Opus files transcribed at once keep
   the Ray processes under the bounds below, and a cancelled job stops decoding.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.harness import Service, start_service, stop_service
from tests.hostile import JFK_PATH, REFERENCES, jfk_pcm
from tests.integration.helpers import DATA, submit, wait
from tests.media import write_long_opus

pytestmark = [pytest.mark.integration]

DECODE_CONCURRENCY = 2  # decode slots of the Decoder replica: 2 of the 4 long files wait for one
LONG_SECONDS = 2 * 3600
# Bounds for four concurrent 2-hour files (see the test): the Decoder replica's peak RSS (kernel high-water
# mark) and the peak of the Ray processes' summed PSS (what the node's memory holds; RSS counts the shared
# libraries and the object store once per process). Measured on 2 cores, four runs: with bounded decoding,
# Decoder 552-666 MB (380-410 MB before the files), PSS 1550-1769 MB; before it (each file decoded whole to PCM,
# 460 MB per 2 hours, then copied, and padded again for VAD, all four at once), Decoder 8458 MB, PSS 9246 MB.
DECODER_PEAK_MB = 900
RAY_PSS_PEAK_MB = 2600
EXTENSIONS = {"ffconcat": ".ffconcat", "hls": ".m3u8", "dash": ".mpd", "sdp": ".sdp"}


def _extension(kind: str) -> str:
    return EXTENSIONS[kind.split("-")[0]]


def _payload(kind: str, target: str) -> bytes:
    return dict(REFERENCES)[kind](target)


def _same_refusal(first: httpx.Response, second: httpx.Response) -> dict:
    """Both 415 unsupported_media with the same body (the request id aside): nothing tells them apart."""
    bodies = []
    for response in (first, second):
        assert response.status_code == 415, response.text
        error = response.json()["error"]
        assert error["code"] == "unsupported_media", error
        error.pop("request_id", None)
        bodies.append(error)
    assert bodies[0] == bodies[1]
    return bodies[0]


# --- the service -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mounted stage holding reference files: to a file beside them, and to a file outside the stage."""
    folder = tmp_path_factory.mktemp("reference-stage")
    shutil.copy(DATA / "en_jfk.flac", folder / "jfk.flac")
    for kind, build in REFERENCES:
        for where, target in (("sibling", "jfk.flac"), ("outside", JFK_PATH)):
            (folder / f"{kind}-{where}{_extension(kind)}").write_bytes(build(target))
    return folder


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, stage: Path) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("security-media")
    service = start_service(
        "ctranslate2",
        root / "data",
        model_cache,
        root / "service.log",
        SPCS_WHISPER_MODEL="tiny.en",
        SPCS_WHISPER_DECODE_CONCURRENCY=str(DECODE_CONCURRENCY),
        SPCS_WHISPER_STAGE_MOUNTS=json.dumps({"MEDIA_STAGE": str(stage)}),
    )
    yield service
    stop_service(service)


@pytest.fixture(scope="module")
def sibling(svc: Service) -> str:
    """A finished job: its audio is a file in the gateway's blob folder, named by its id."""
    with svc.client() as client:
        job = wait(client, submit(client, DATA / "en_jfk.m4a").json()["id"])
    assert job["status"] == "succeeded", job
    assert (svc.data_dir / "blobs" / job["id"]).is_file()
    return job["id"]


# --- 1. references -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [kind for kind, _ in REFERENCES])
@pytest.mark.parametrize("where", ["sibling-upload", "blob-path", "outside-path"])
def test_an_upload_naming_another_file_is_refused_alike(svc: Service, sibling: str, kind: str, where: str) -> None:
    """Without the allow-list, an ffconcat upload naming another job's audio (a sibling in the blob folder) was
    accepted (202) and its transcript was the other job's speech."""
    blob = svc.data_dir / "blobs" / sibling
    existing, missing = {
        "sibling-upload": (sibling, "job_00000000000000000000000000000000"),
        "blob-path": (str(blob), str(blob.with_name("job_00000000000000000000000000000000"))),
        "outside-path": (JFK_PATH, JFK_PATH + ".missing"),
    }[where]
    with svc.client() as client:
        answers = [
            client.post("/v1/jobs", files={"file": (f"list{_extension(kind)}", _payload(kind, target))})
            for target in (existing, missing)
        ]
        error = _same_refusal(*answers)
        listed = client.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
    assert sibling not in error["message"] and "jfk" not in error["message"]
    assert [job["id"] for job in listed] == [sibling]  # nothing else was stored


@pytest.mark.parametrize("kind", [kind for kind, _ in REFERENCES])
def test_a_stage_file_naming_another_file_is_refused_alike(svc: Service, stage: Path, kind: str) -> None:
    """A mounted stage file keeps its name, so FFmpeg took `.m3u8` for HLS: the playlist naming a file outside
    the stage was accepted with that file's duration (11 s), and an ffconcat list read the file beside it."""
    with svc.client() as client:
        answers = [
            client.post("/v1/jobs", json={"source": f"@MEDIA_STAGE/{kind}-{where}{_extension(kind)}"})
            for where in ("sibling", "outside")
        ]
        assert client.post("/v1/jobs", json={"source": "@MEDIA_STAGE/jfk.flac"}).status_code == 202  # the control
    _same_refusal(*answers)


def _decoder_pid(svc: Service) -> int:
    for pid in _ray_processes(svc):
        try:
            if b"ServeReplica:whisper:Decoder" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise AssertionError("no Decoder replica process found")


@pytest.mark.parametrize("kind", [kind for kind, _ in REFERENCES])
def test_the_decoder_refuses_references_alike(svc: Service, kind: str) -> None:
    """The Decoder gets bytes: FFmpeg resolved an ffconcat list's names against the replica's working directory
    (and decoded what it found there), and an SDP body made it listen for RTP on a UDP port (it never answered)."""
    cwd = Path(os.readlink(f"/proc/{_decoder_pid(svc)}/cwd"))
    planted = cwd / f"spcsw-secret-{uuid.uuid4().hex}.flac"  # a file where a relative name lands
    shutil.copy(DATA / "en_jfk.flac", planted)
    try:
        answers = []
        for target in (planted.name, planted.name + ".missing", JFK_PATH, JFK_PATH + ".missing"):
            answers.append(httpx.post(f"{svc.serve_url}/transcribe", content=_payload(kind, target), timeout=30))
    finally:
        planted.unlink()
    _same_refusal(answers[0], answers[1])
    _same_refusal(answers[2], answers[3])


# --- 2. bounded decoding -------------------------------------------------------------------------------------------


def _ray_processes(svc: Service) -> list[int]:
    """The Ray Serve app's processes: every descendant of the service process but the gateway (itself)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], list(children.get(svc.process.pid, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """Samples the Ray processes' summed PSS and RSS every `period` s on a thread, keeping the peaks."""

    def __init__(self, svc: Service, period: float = 0.5) -> None:
        self.svc, self.period = svc, period
        self.peak_pss = self.peak_rss = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            pss = rss = 0.0
            for pid in _ray_processes(self.svc):
                try:
                    pss += _pss_mb(pid)
                    rss += _status_mb(pid, "VmRSS")
                except OSError:  # the process ended meanwhile
                    continue
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            self.samples += 1


@pytest.fixture(scope="module")
def long_opus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 hours of faint noise with the JFK clip every 10 minutes, Opus at 8 kb/s: about 5 MB."""
    path = write_long_opus(tmp_path_factory.mktemp("long") / "two-hours.opus", LONG_SECONDS, jfk_pcm())
    assert path.stat().st_size < 8 * 1024 * 1024
    return path


def test_four_2h_files_at_once_keep_the_ray_processes_bounded(svc: Service, long_opus: Path) -> None:
    """Four 2-hour files are submitted together; `DECODE_CONCURRENCY` = 2 of them decode at once (the others
    wait, spooled to disk), each decoded a minute at a time with its windows sent to Whisper as they are cut.
    Measured: the Decoder replica's kernel high-water mark (VmHWM, no sampling gaps) and the peak of the Ray
    processes' summed PSS, sampled every 0.5 s; both printed, both under the module's bounds."""
    decoder = _decoder_pid(svc)
    with Sampler(svc) as sampler, svc.client(timeout=120) as client, ThreadPoolExecutor(4) as pool:
        decoder_before = _status_mb(decoder, "VmRSS")
        answers = list(pool.map(lambda _: submit(client, long_opus, language="en"), range(4)))
        assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
        jobs = [wait(client, a.json()["id"], timeout=1500, poll=1.0) for a in answers]
        transcripts = [client.get(f"/v1/jobs/{job['id']}/transcript").json() for job in jobs]
    decoder_peak = _status_mb(decoder, "VmHWM")
    figures = (
        f"Decoder RSS before {decoder_before:.0f} MB, peak (VmHWM) {decoder_peak:.0f} MB; Ray processes' peak "
        f"summed PSS {sampler.peak_pss:.0f} MB, summed RSS {sampler.peak_rss:.0f} MB ({sampler.samples} samples); "
        f"wall {max(j['timings']['processing_s'] for j in jobs):.0f} s"
    )
    print(figures)
    assert decoder_peak < DECODER_PEAK_MB, figures
    assert sampler.peak_pss < RAY_PSS_PEAK_MB, figures
    assert [job["status"] for job in jobs] == ["succeeded"] * 4, [job.get("error") for job in jobs]
    for transcript in transcripts:
        assert abs(transcript["duration"] - LONG_SECONDS) < 5
        assert "your country" in transcript["text"].lower(), transcript["text"][:300]
        assert transcript["segments"][-1]["start"] > LONG_SECONDS - 600  # the last clip, near the end, is there
    log = svc.log.read_text(errors="replace")
    waits = [float(w) for w in _log_values(log, "decode slot after ")]
    assert len(waits) >= 4 and sum(w > 1.0 for w in waits) >= 2, waits  # two of the four waited for a slot


def _log_values(log: str, marker: str) -> list[str]:
    return [line.split(marker, 1)[1].split()[0].rstrip("s") for line in log.splitlines() if marker in line]


def _open_bodies(pid: int) -> list[str]:
    """The spooled request bodies the process has open (FFmpeg holds the file while it decodes)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "spcsw-decode-" in target:
            found.append(target)
    return found


def test_a_cancelled_job_stops_decoding(svc: Service, long_opus: Path) -> None:
    """DELETE on a running job closes the gateway's call to Ray Serve; the Decoder stops decoding after the step in
    flight (a minute of audio): it closes and removes the file, and says how far it got, instead of decoding the
    remaining two hours for nobody. (Before, the body was decoded whole on a thread that nothing stopped.)"""
    decoder = _decoder_pid(svc)
    with svc.client() as client:
        job_id = submit(client, long_opus, language="en").json()["id"]
        deadline = time.monotonic() + 120
        while not (bodies := _open_bodies(decoder)):
            assert time.monotonic() < deadline, "the Decoder never opened the job's file"
            time.sleep(0.2)
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
        deadline = time.monotonic() + 60
        while _open_bodies(decoder) or any(Path(body).exists() for body in bodies):
            assert time.monotonic() < deadline, "the Decoder still decodes the cancelled job"
            time.sleep(0.2)
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    stopped = _log_values(svc.log.read_text(errors="replace"), "stopped before its end: decoded ")
    assert stopped and float(stopped[-1]) < LONG_SECONDS / 2, stopped
