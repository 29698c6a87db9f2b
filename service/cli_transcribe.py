"""`spcs-whisper transcribe FILE...`: through a running service (`--server`) or in-process without one.

Writes `<stem>.<ext>` next to each input (or into `--out`); with `--translate-to LANG` also `<stem>.<LANG>.txt`
(in-process: Whisper's own speech-to-English task, so `en` only). `--speakers [N|MIN-MAX]` labels who spoke when
(SPEAKER_00, ... in every format: see service/formats.py). Progress bars on stderr when it is a
terminal (`--quiet`: one line per finished file); the written paths on stdout.

Exit codes: 0 all files transcribed, 1 some file failed (bad audio, failed job; the others are still
written), 2 usage (no such file, a translation in-process cannot do), 3 the server could not be reached.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from service.cli_http import (
    API_FORMATS,
    EXTENSIONS,
    FAILED,
    OK,
    USAGE,
    Api,
    Bars,
    CliError,
    api_token,
    finisher,
    report,
    stderr,
    watch,
    write,
)
from service.cli_jobs import server_option, speakers_field, speakers_option
from service.config import Settings

if TYPE_CHECKING:
    from service.inference.types import Engine


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe files (in-process, or through --server)")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--format", choices=sorted(EXTENSIONS), default="srt", help="output format (default srt)")
    p.add_argument("--language", default=None, help="ISO-639-1 code, e.g. hi; default: detect")
    p.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    p.add_argument("--translate-to", default=None, metavar="LANG", help="also write <stem>.<LANG>.txt, e.g. en")
    speakers_option(p)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: next to each input)")
    p.add_argument("--quiet", action="store_true", help="no progress bars: one line per finished file")
    server_option(p, None)


def _target(args: argparse.Namespace, path: Path) -> Path:
    return (args.out or path.parent) / path.stem


def _via_server(args: argparse.Namespace, settings: Settings, bars: Bars) -> int:
    """Upload every file, then follow all the jobs at once (the service batches their windows together)."""
    with Api(args.server, api_token(settings)) as api:
        api.request("GET", "/healthz")
        fields = {
            "task": args.task,
            "language": args.language,
            "translate_to": args.translate_to,
            "speakers": speakers_field(args),
        }
        labels: dict[str, str] = {}
        paths: dict[str, Path] = {}
        failed = False
        for path in args.files:
            try:
                job_id = api.submit(path, fields)["id"]
            except CliError as exc:
                report(exc, path, bars.log)
                failed = True
                continue
            labels[job_id], paths[job_id] = path.name, path
        finish = finisher(api, bars, args.format, lambda job: _target(args, paths[job["id"]]))
        code = watch(api, labels, bars, finish)
        return FAILED if failed else code


def _in_process(args: argparse.Namespace, settings: Settings, engine: Engine, path: Path, bars: Bars) -> list[Path]:
    from service.audio import SAMPLE_RATE, decode
    from service.formats import render
    from service.inference.local import transcribe_audio
    from service.inference.speaker_encoder import shared_encoder
    from service.inference.types import DecodeOptions
    from service.languages import normalise_language
    from service.options import SpeakerCount
    from service.transcript import Transcript

    inference = settings.inference
    language = normalise_language(args.language)
    audio = decode(path, max_seconds=settings.inference.max_audio_seconds)
    total = audio.shape[0] / SAMPLE_RATE
    key = str(path)
    bars.update(key, path.name, 0.0, total)

    def progress(done: float) -> None:
        bars.update(key, path.name, done, total)

    def run(
        options: DecodeOptions | None, language: str | None, track: bool = True, speakers: SpeakerCount | None = None
    ) -> Transcript:
        return transcribe_audio(
            engine,
            audio,
            language,
            options,
            settings.inference.batch_size,  # one engine with every core: batches of 16 pay (docs/benchmarks.md)
            settings.inference.vad,
            progress if track else None,
            speakers=speakers,
            speaker_encoder=shared_encoder(inference.speaker_model, inference.speaker_model_path) if speakers else None,
        )

    options = DecodeOptions(language=language, task=args.task) if language else None
    if options is None and args.task == "translate":
        options = DecodeOptions(language=engine.detect_language(audio[: 30 * SAMPLE_RATE])[0], task="translate")
    transcript = run(options, language, speakers=args.speakers)
    bars.update(key, path.name, total, total)
    stem = _target(args, path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    body = render(transcript, API_FORMATS.get(args.format, args.format), args.task)[0]
    written = [write(stem.parent / f"{stem.name}.{EXTENSIONS[args.format]}", body)]
    if args.translate_to:
        spoken = transcript.language
        text = transcript.text
        if spoken not in (None, args.translate_to) and args.task != "translate":
            text = run(DecodeOptions(language=spoken, task="translate"), spoken, track=False).text
        written.append(write(stem.parent / f"{stem.name}.{args.translate_to}.txt", text.strip() + "\n"))
    bars.log(f"{path.name}: succeeded ({total:.1f} s of audio)")
    return written


def _check_in_process_translation(args: argparse.Namespace) -> None:
    from service.languages import normalise_language

    try:
        args.translate_to = normalise_language(args.translate_to)
    except ValueError as exc:
        raise CliError(str(exc), exit_code=USAGE) from None
    if args.translate_to not in (None, "en"):
        message = f"in-process translation is Whisper's speech-to-English only; use --server for {args.translate_to!r}"
        raise CliError(message, exit_code=USAGE)


def run(args: argparse.Namespace, settings: Settings) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    missing = [str(f) for f in args.files if not f.is_file()]
    try:
        if missing:
            raise CliError(f"no such file: {', '.join(missing)}", exit_code=USAGE)
        if not args.server:
            _check_in_process_translation(args)
        with Bars(args.quiet, len(args.files)) as bars:
            return _via_server(args, settings, bars) if args.server else _all_in_process(args, settings, bars)
    except CliError as exc:
        stderr(f"error: {exc}")
        return exc.exit_code


def _all_in_process(args: argparse.Namespace, settings: Settings, bars: Bars) -> int:
    from service.inference.engines import load_engine

    inference = settings.inference
    bars.log(f"loading {inference.model} ({inference.effective_engine})...")
    engine = load_engine(inference)
    failed = 0
    for path in args.files:
        try:
            written = _in_process(args, settings, engine, path, bars)
        except Exception as exc:  # one bad file must not stop the others
            failed += 1
            code = getattr(exc, "code", None)
            message = getattr(exc, "message", None) or str(exc)
            bars.log(f"error: {f'{code}: ' if code else ''}{message} ({path})")
            continue
        for target in written:
            bars.out(str(target))
    return FAILED if failed else OK
