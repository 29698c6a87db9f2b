"""The client subcommands without a service: argument parsing, usage errors (exit 2), a closed port (exit 3),
error bodies, and polling against a stand-in transport."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from service import cli, cli_jobs, cli_transcribe
from service.cli_jobs import Api, Bars, CliError
from service.config import Settings
from service.options import SpeakerCount
from tests.harness import free_port

DATA = Path(__file__).parents[1] / "data"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    cli_transcribe.add_parser(sub)
    cli_jobs.add_parsers(sub)
    return parser.parse_args(argv)


def exit_code(*argv: str) -> int:
    with pytest.raises(SystemExit) as raised:
        cli.main(list(argv))
    return int(raised.value.code)


def test_server_default_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPCS_WHISPER_SERVER", raising=False)
    assert parse("status", "job_1").server == "http://127.0.0.1:8080"
    monkeypatch.setenv("SPCS_WHISPER_SERVER", "http://whisper:9000")
    assert parse("wait", "job_1").server == "http://whisper:9000"
    assert parse("transcribe", "a.wav").server is None  # in-process unless --server


def test_options_parse() -> None:
    args = parse("submit", "a.mp4", "@STAGE/b.mp4", "--language", "hi", "--translate-to", "en")
    assert (args.sources, args.language, args.translate_to) == (["a.mp4", "@STAGE/b.mp4"], "hi", "en")
    args = parse("wait", "job_1", "job_2", "--timeout", "2.5", "--format", "vtt", "--out", "subs")
    assert (args.job_ids, args.timeout, args.format, args.out) == (["job_1", "job_2"], 2.5, "vtt", Path("subs"))
    args = parse("batch", "@STAGE/calls", "--pattern", ".*[.]mp4", "--wait")
    assert (args.stage, args.pattern, args.wait, args.timeout) == ("@STAGE/calls", ".*[.]mp4", True, None)
    args = parse("transcribe", "a.wav", "--translate-to", "en", "--quiet")
    assert (args.translate_to, args.quiet, args.format) == ("en", True, "srt")


@pytest.mark.parametrize(
    "argv",
    [
        ["wait", "job_1", "--timeout", "0"],
        ["wait", "job_1", "--timeout", "soon"],
        ["wait", "job_1", "--format", "docx"],
        ["status"],
        ["batch"],
        ["transcribe", "/no/such/file.wav"],
        ["submit", "/no/such/file.wav"],
        ["submit", "a.wav", "b.wav", "--idempotency-key", "k"],
        ["transcribe", str(DATA / "en_jfk.m4a"), "--translate-to", "hi"],  # in-process: English only
        ["transcribe", str(DATA / "en_jfk.m4a"), "--translate-to", "klingon"],
        ["transcribe", "--speakers", str(DATA / "en_jfk.m4a")],  # a file name is not a speaker count
        ["submit", "a.wav", "--speakers", "9"],
        ["batch", "@STAGE", "--speakers", "3-2"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(*argv) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", str(DATA / "en_jfk.m4a")],
        ["submit", "@STAGE/a.mp4"],
        ["status", "job_1"],
        ["wait", "job_1"],
        ["batch", "@STAGE"],
        ["transcribe", str(DATA / "en_jfk.m4a")],
    ],
)
def test_closed_port_exits_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert exit_code(*argv, "--server", url) == 3
    err = capsys.readouterr().err
    assert f"cannot reach {url}: is the service running? (make run)" in err


def stand_in(routes: dict[tuple[str, str], list[httpx.Response]], seen: list[httpx.Request]) -> Api:
    """An `Api` whose server answers each (method, path) with the next response of its list (the last repeats)."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answers = routes.get((request.method, request.url.path)) or [not_found(request.url.path)]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return Api("http://svc/", token="s3cret", transport=httpx.MockTransport(handle))


def not_found(path: str) -> httpx.Response:
    return httpx.Response(404, json={"error": {"code": "job_not_found", "message": f"no job at {path}"}})


def job(status: str, done: float = 0.0, **extra: object) -> httpx.Response:
    body = {"id": "job_1", "status": status, "source": "calls/a.mp4", "audio_seconds": 10.0, "error": None}
    body |= {"progress": {"fraction": done / 10, "audio_seconds": 10.0, "done_seconds": done}, **extra}
    return httpx.Response(200, json=body)


def test_error_bodies_become_messages_a_user_can_act_on() -> None:
    seen: list[httpx.Request] = []
    unsupported = {"error": {"code": "unsupported_media", "message": "not a recognised audio or video file"}}
    api = stand_in(
        {
            ("POST", "/v1/jobs"): [httpx.Response(415, json=unsupported)],
            ("GET", "/v1/jobs/job_1"): [httpx.Response(502, text="<html>bad gateway</html>")],
            ("GET", "/v1/jobs/job_2"): [httpx.Response(401, json={"error": {"code": "unauthorized", "message": "m"}})],
        },
        seen,
    )
    with pytest.raises(CliError, match="^unsupported_media: not a recognised audio or video file$") as raised:
        api.submit(DATA / "en_jfk.m4a", {"language": None})
    assert raised.value.exit_code == 1 and raised.value.status == 415
    with pytest.raises(CliError, match="^http_502: <html>bad gateway</html>$"):
        api.json("GET", "/v1/jobs/job_1")
    with pytest.raises(CliError, match="SPCS_WHISPER_API_TOKEN"):
        api.json("GET", "/v1/jobs/job_2")
    assert all(r.headers["authorization"] == "Bearer s3cret" for r in seen)
    assert b'name="language"' not in seen[0].content  # unset options are not sent


def test_stage_sources_are_sent_as_json() -> None:
    seen: list[httpx.Request] = []
    api = stand_in({("POST", "/v1/jobs"): [job("queued")]}, seen)
    api.submit("@STAGE/calls/a.mp4", {"language": "hi", "translate_to": "en", "idempotency_key": None})
    assert json.loads(seen[0].content) == {"source": "@STAGE/calls/a.mp4", "language": "hi", "translate_to": "en"}


def test_watch_writes_outputs_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_jobs, "POLL_S", 0)
    translation = {"text": "hello", "source_language": "hi", "target_language": "en", "method": "whisper"}
    routes = {
        ("GET", "/v1/jobs/job_1"): [job("queued"), job("running", 4.0), job("succeeded", 10.0, translate_to="en")],
        ("GET", "/v1/jobs/job_1/transcript"): [httpx.Response(200, text="1\n00:00:00,000 --> 00:00:01,000\nhi\n")],
        ("GET", "/v1/jobs/job_1/translation"): [httpx.Response(200, json=translation)],
    }
    api = stand_in(routes, [])
    with Bars(quiet=True, count=2) as bars:
        finish = cli_jobs.finisher(api, bars, "srt", lambda j: tmp_path / "a")
        assert cli_jobs.watch(api, {"job_1": "a.mp4", "bogus": "bogus"}, bars, finish) == 1
    out, err = capsys.readouterr()
    assert out.split() == [str(tmp_path / "a.srt"), str(tmp_path / "a.en.txt")]
    assert (tmp_path / "a.en.txt").read_text() == "hello\n"
    assert "a.mp4: succeeded (10.0 s of audio)" in err
    assert "error: job_not_found: no job at /v1/jobs/bogus (bogus)" in err
    assert "\x1b[" not in out + err


def test_watch_times_out_with_4(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli_jobs, "POLL_S", 0.01)
    api = stand_in({("GET", "/v1/jobs/job_1"): [job("running", 1.0)]}, [])
    with Bars(quiet=True, count=1) as bars:
        assert cli_jobs.watch(api, {"job_1": "job_1"}, bars, lambda j, label: True, timeout=0.05) == 4
    assert "timed out after 0.05 s; not finished: job_1" in capsys.readouterr().err


def test_failed_job_is_reported_with_its_code(capsys: pytest.CaptureFixture[str]) -> None:
    api = stand_in({}, [])
    failed = {"id": "job_1", "status": "failed", "error": {"code": "corrupt_audio", "message": "truncated"}}
    with Bars(quiet=True, count=1) as bars:
        assert cli_jobs.finisher(api, bars, "srt", lambda j: None)(failed, "a.mp4") is False
    assert "error: corrupt_audio: truncated (a.mp4)" in capsys.readouterr().err


def test_batch_waits_until_done(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli_jobs, "POLL_S", 0)
    seen: list[httpx.Request] = []

    def batch(status: str, done: float, counts: dict[str, int]) -> httpx.Response:
        body = {"id": "batch_1", "status": status, "files": 2, "counts": counts}
        return httpx.Response(200, json=body | {"audio_seconds_done": done, "audio_seconds_total": 20.0})

    routes = {
        ("POST", "/v1/batches"): [batch("running", 0.0, {"queued": 2})],
        ("GET", "/v1/batches/batch_1"): [
            batch("running", 10.0, {"running": 1, "succeeded": 1}),
            batch("partial", 20.0, {"failed": 1, "succeeded": 1}),
        ],
    }
    api = stand_in(routes, seen)
    args = parse("batch", "@STAGE/calls", "--pattern", ".*[.]mp4", "--translate-to", "en", "--wait")
    assert cli_jobs._batch(args, api) == 1
    assert json.loads(seen[0].content) == {"stage": "@STAGE/calls", "pattern": ".*[.]mp4", "translate_to": "en"}
    out, err = capsys.readouterr()
    assert out == "batch_1\n" and "error: batch batch_1 partial: failed 1 succeeded 1" in err


class FakeEngine:
    """Speaks Hindi; its translate task answers in English."""

    name, model_name, multilingual = "fake", "fake", True

    def detect_language(self, audio: object) -> tuple[str, float]:
        return "hi", 0.9

    def transcribe_batch(self, windows: list, options: Any) -> list:
        from service.inference.types import WindowResult, per_window
        from service.transcript import Segment

        results = []
        for window, row in zip(windows, per_window(options, len(windows))):
            text = "ask not" if row.task == "translate" else "namaste"
            result = WindowResult([Segment(start=0.0, end=window.shape[0] / 16000, text=text)], -0.1, 0.0, 1.0)
            if row.language is None:  # detected in the call, as CTranslate2 does
                result.language, result.language_probability = "hi", 0.9
            results.append(result)
        return results


def test_in_process_translation_is_whispers_translate_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("service.inference.engines.load_engine", lambda settings: FakeEngine())
    audio = str(DATA / "en_jfk.m4a")
    args = parse("transcribe", audio, "--translate-to", "EN", "--format", "txt", "--out", str(tmp_path))
    assert cli_transcribe.run(args, Settings(vad=False, engine="ctranslate2")) == 0
    assert (tmp_path / "en_jfk.txt").read_text().strip() == "namaste"
    assert (tmp_path / "en_jfk.en.txt").read_text() == "ask not\n"
    out, err = capsys.readouterr()
    assert out.split() == [str(tmp_path / "en_jfk.txt"), str(tmp_path / "en_jfk.en.txt")]
    assert "en_jfk.m4a: succeeded (11.0 s of audio)" in err


def test_speakers_option() -> None:
    audio = str(DATA / "en_jfk.m4a")
    assert parse("transcribe", audio, "--speakers").speakers == SpeakerCount()
    assert parse("transcribe", audio, "--speakers", "2-4").speakers == SpeakerCount(2, 4)
    assert parse("transcribe", audio, "--speakers", "off").speakers is None
    assert parse("transcribe", audio).speakers is None
    assert parse("submit", audio, "--speakers", "3").speakers == SpeakerCount(3, 3)
    assert parse("batch", "@STAGE", "--speakers").speakers == SpeakerCount()


def test_speakers_are_sent_with_submissions() -> None:
    seen: list[httpx.Request] = []
    api = stand_in({("POST", "/v1/jobs"): [job("queued")], ("POST", "/v1/batches"): [job("queued")]}, seen)
    assert cli_jobs._submit(parse("submit", str(DATA / "en_jfk.m4a"), "--speakers"), api) == 0
    assert b'name="speakers"\r\n\r\nauto\r\n' in seen[0].content
    assert cli_jobs._submit(parse("submit", "@STAGE/a.mp4", "--speakers", "2-4"), api) == 0
    assert json.loads(seen[1].content) == {"source": "@STAGE/a.mp4", "speakers": "2-4"}
    cli_jobs._batch(parse("batch", "@STAGE", "--speakers", "2"), api)
    assert json.loads(seen[2].content) == {"stage": "@STAGE", "pattern": ".*", "speakers": "2"}
    cli_jobs._submit(parse("submit", "@STAGE/a.mp4"), api)
    assert "speakers" not in json.loads(seen[3].content)


def test_in_process_speakers_reach_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--speakers` is `transcribe_audio(..., speakers=)`; the labels it returns are written (txt: per turn)."""
    from service.transcript import Segment, Transcript

    asked: list[Any] = []

    def transcribe_audio(*args: Any, speakers: SpeakerCount | None = None, **kwargs: Any) -> Transcript:
        asked.append(speakers)
        segments = [
            Segment(start=0.0, end=1.0, text=" Hello.", speaker="SPEAKER_00"),
            Segment(start=1.0, end=2.0, text=" Hi.", speaker="SPEAKER_01"),
        ]
        return Transcript(text="Hello. Hi.", language="en", segments=segments, speakers=["SPEAKER_00", "SPEAKER_01"])

    monkeypatch.setattr("service.inference.engines.load_engine", lambda settings: FakeEngine())
    monkeypatch.setattr("service.inference.local.transcribe_audio", transcribe_audio)
    audio = str(DATA / "en_jfk.m4a")
    args = parse("transcribe", audio, "--format", "txt", "--out", str(tmp_path), "--speakers", "2")
    assert cli_transcribe.run(args, Settings(vad=False, engine="ctranslate2")) == 0
    assert asked == [SpeakerCount(2, 2)]
    assert (tmp_path / "en_jfk.txt").read_text() == "SPEAKER_00: Hello.\nSPEAKER_01: Hi.\n"
    args = parse("transcribe", audio, "--format", "vtt", "--out", str(tmp_path))
    assert cli_transcribe.run(args, Settings(vad=False, engine="ctranslate2")) == 0
    assert asked[-1] is None
