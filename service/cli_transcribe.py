"""`spcs-whisper transcribe FILE...`: through a running service (`--server`) or in-process without one.

Exit codes: 0 all files transcribed, 1 some file failed (bad audio, failed job), 2 usage (no such file),
3 the server could not be reached.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

from service.config import Settings

EXTENSIONS = {"srt": "srt", "vtt": "vtt", "txt": "txt", "json": "json", "verbose_json": "json"}
API_FORMATS = {"txt": "text"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe files (in-process, or through --server)")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--format", choices=sorted(EXTENSIONS), default="srt", help="output format (default srt)")
    p.add_argument("--language", default=None, help="ISO-639-1 code, e.g. hi; default: detect")
    p.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    p.add_argument("--server", default=None, help="service URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: next to each input)")


def _write(path: Path, out_dir: Path | None, fmt: str, body: str) -> Path:
    target = (out_dir or path.parent) / f"{path.stem}.{EXTENSIONS[fmt]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body, encoding="utf-8")
    return target


def _via_server(args: argparse.Namespace, settings: Settings, path: Path) -> str:
    fields = {"task": args.task, **({"language": args.language} if args.language else {})}
    token = settings.api_token.get_secret_value() if settings.api_token else None
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=args.server, timeout=60, headers=headers) as client, path.open("rb") as fh:
        response = client.post("/v1/jobs", files={"file": (path.name, fh)}, data=fields)
        if response.status_code not in (200, 202):
            raise RuntimeError(response.json().get("error", {}).get("message", response.text))
        job_id = response.json()["id"]
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            print(f"  {path.name}: {job['status']}", end="\r", file=sys.stderr, flush=True)
            time.sleep(0.5)
        if job["status"] != "succeeded":
            raise RuntimeError((job.get("error") or {}).get("message") or f"job {job['status']}")
        fmt = API_FORMATS.get(args.format, args.format)
        return client.get(f"/v1/jobs/{job_id}/transcript", params={"format": fmt}).text


def _in_process(args: argparse.Namespace, settings: Settings, engine: object, path: Path) -> str:
    from service.audio import decode
    from service.formats import render
    from service.inference.local import transcribe_audio
    from service.inference.types import DecodeOptions
    from service.languages import normalise_language

    language = normalise_language(args.language)
    audio = decode(path, max_seconds=settings.max_audio_seconds)
    total = audio.shape[0] / 16000

    def progress(done: float) -> None:
        print(f"  {path.name}: {done:.0f}/{total:.0f} s", end="\r", file=sys.stderr, flush=True)

    options = DecodeOptions(language=language, task=args.task) if language else None
    if options is None and args.task == "translate":
        options = DecodeOptions(language=engine.detect_language(audio[: 30 * 16000])[0], task="translate")
    transcript = transcribe_audio(engine, audio, language, options, settings.max_batch_size, settings.vad, progress)
    return render(transcript, API_FORMATS.get(args.format, args.format), args.task)[0]


def run(args: argparse.Namespace, settings: Settings) -> int:
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    engine = None
    if args.server:
        try:
            httpx.get(f"{args.server}/healthz", timeout=5).raise_for_status()
        except httpx.HTTPError as exc:
            print(f"error: cannot reach {args.server}: {exc}", file=sys.stderr)
            return 3
    else:
        from service.inference.engines import load_engine

        print(f"loading {settings.model} ({settings.effective_engine})...", file=sys.stderr)
        engine = load_engine(settings)
    failed = 0
    for path in args.files:
        try:
            body = _via_server(args, settings, path) if args.server else _in_process(args, settings, engine, path)
        except Exception as exc:  # one bad file must not stop the others
            failed += 1
            print(file=sys.stderr)
            print(f"error: {path}: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
            continue
        print(file=sys.stderr)
        print(_write(path, args.out, args.format, body))
    return 1 if failed else 0
