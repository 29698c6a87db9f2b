"""`spcs-whisper submit | status | wait | batch`: the job API from a shell, and the HTTP helpers that
`transcribe --server` shares (client with the API token, error reporting, polling with progress bars).

Exit codes: 0 success; 1 a job, file or request failed (`error: <code>: <message>` on stderr; with a
timeout too, failure wins); 2 usage (bad arguments, no such file); 3 the server could not be reached;
4 `wait` / `batch --wait` timed out; 130 interrupted (Ctrl-C; the jobs go on running).
The server is `--server`, else `$SPCS_WHISPER_SERVER`, else http://127.0.0.1:8080;
`$SPCS_WHISPER_API_TOKEN` is sent as `Authorization: Bearer`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path, PurePosixPath

from service.cli_http import (  # noqa: F401 (re-exported for cli_transcribe and tests)
    API_FORMATS,
    EXTENSIONS,
    FAILED,
    OK,
    POLL_S,
    TERMINAL,
    TIMEOUT,
    UNREACHABLE,
    USAGE,
    Api,
    Bars,
    CliError,
    Finisher,
    api_token,
    finisher,
    is_remote,
    report,
    save,
    stderr,
    watch,
    write,
)
from service.config import Settings
from service.options import SpeakerCount

COMMANDS = ("submit", "status", "wait", "batch")


def _submit(args: argparse.Namespace, api: Api) -> int:
    if args.idempotency_key and len(args.sources) > 1:
        raise CliError("--idempotency-key takes a single source", exit_code=USAGE)
    missing = [s for s in args.sources if not is_remote(s) and not Path(s).is_file()]
    if missing:
        raise CliError(f"no such file: {', '.join(missing)}", exit_code=USAGE)
    fields = {
        "language": args.language,
        "translate_to": args.translate_to,
        "speakers": speakers_field(args),
        "idempotency_key": args.idempotency_key,
    }
    code = OK
    for source in args.sources:
        try:
            print(api.submit(source, fields)["id"], flush=True)
        except CliError as exc:
            report(exc, source)
            code = FAILED
    return code


def _status(args: argparse.Namespace, api: Api) -> int:
    rows, code = [], OK
    for job_id in args.job_ids:
        try:
            job = api.json("GET", f"/v1/jobs/{job_id}")
        except CliError as exc:
            report(exc, job_id)
            code = FAILED
            continue
        if args.json:
            print(json.dumps(job), flush=True)
        error, audio = job.get("error"), job.get("audio_seconds")
        percent = f"{100 * (job.get('progress') or {}).get('fraction', 0.0):.0f}%"
        seconds = "" if audio is None else f"{audio:.1f}"
        problem = f"{error['code']}: {error['message']}" if error else ""
        rows.append([job["id"], job["status"], percent, seconds, job.get("source", ""), problem])
    if not args.json and rows:
        _table(["id", "status", "progress", "audio s", "source", "error"], rows)
    return code


def _table(header: list[str], rows: list[list[str]]) -> None:
    """A rich table on a terminal; tab-separated lines (header first) when piped."""
    if not sys.stdout.isatty():
        for row in [header, *rows]:
            print("\t".join(row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, box=None)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _wait(args: argparse.Namespace, api: Api) -> int:
    used: set[str] = set()

    def stem_of(job: dict) -> Path | None:
        if args.out is None:
            return None
        stem = PurePosixPath(job.get("source") or "").stem or job["id"]
        stem = f"{stem}.{job['id']}" if stem in used else stem
        used.add(stem)
        return args.out / stem

    labels = {job_id: job_id for job_id in dict.fromkeys(args.job_ids)}
    with Bars(args.quiet, len(labels)) as bars:
        return watch(api, labels, bars, finisher(api, bars, args.format, stem_of), args.timeout)


def _batch(args: argparse.Namespace, api: Api) -> int:
    fields = {
        "stage": args.stage,
        "pattern": args.pattern,
        "language": args.language,
        "translate_to": args.translate_to,
        "speakers": speakers_field(args),
    }
    batch = api.json("POST", "/v1/batches", json={k: v for k, v in fields.items() if v is not None})
    print(batch["id"], flush=True)
    if not args.wait:
        return OK
    deadline = time.monotonic() + args.timeout if args.timeout else None
    with Bars(args.quiet, 1) as bars:
        while True:
            counts = " ".join(f"{k} {v}" for k, v in sorted(batch["counts"].items()))
            label = f"{batch['id']} ({counts})"
            bars.update(batch["id"], label, batch["audio_seconds_done"], batch["audio_seconds_total"])
            if batch["status"] != "running":
                break
            if deadline is not None and time.monotonic() >= deadline:
                bars.log(f"error: timed out after {args.timeout:g} s; batch {batch['id']} is still running")
                return TIMEOUT
            time.sleep(POLL_S)
            batch = api.json("GET", f"/v1/batches/{batch['id']}")
        if batch["status"] == "succeeded":
            bars.log(f"{batch['id']}: succeeded ({batch['files']} files)")
            return OK
        bars.log(f"error: batch {batch['id']} {batch['status']}: {counts}")
        return FAILED


def positive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {value!r}")
    return seconds


def server_option(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--server", default=default, help=f"service URL (default: {default or 'in-process'})")


def speaker_count(value: str) -> SpeakerCount | None:
    """`--speakers VALUE`: a count, min-max, auto (or false: off), as the job API takes them."""
    try:
        return SpeakerCount.parse(value)
    except ValueError as exc:
        hint = "; a file name? put --speakers after the files or give it a value, e.g. --speakers auto"
        raise argparse.ArgumentTypeError(f"{exc}{hint}") from None


def speakers_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--speakers",
        nargs="?",
        const=SpeakerCount(),
        default=None,
        type=speaker_count,
        metavar="N|MIN-MAX",
        help="label who spoke when (SPEAKER_00, ...): alone for an automatic count, or a count (3) or range (2-4)",
    )


def speakers_field(args: argparse.Namespace) -> str | None:
    """The `speakers` form/JSON field of a submission: None (left out) when off."""
    return None if args.speakers is None else str(args.speakers)


def _options(p: argparse.ArgumentParser, server: str) -> None:
    p.add_argument("--language", default=None, help="ISO-639-1 code, e.g. hi; default: detect")
    p.add_argument("--translate-to", default=None, metavar="LANG", help="translate the transcript, e.g. en")
    speakers_option(p)
    server_option(p, server)


def _waiting(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=positive, default=None, metavar="S", help="give up after S seconds (exit 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bars: one line per finished job")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    server = os.environ.get("SPCS_WHISPER_SERVER") or "http://127.0.0.1:8080"
    p = sub.add_parser("submit", help="submit files, @STAGE/paths or URLs; prints one job id per line")
    p.add_argument("sources", nargs="+", metavar="FILE|@STAGE/path|URL")
    p.add_argument("--idempotency-key", default=None, help="a retried submit returns the same job")
    _options(p, server)
    p = sub.add_parser("status", help="jobs' status as a table (tab-separated when piped) or JSON lines")
    p.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    p.add_argument("--json", action="store_true", help="one JSON object per job")
    server_option(p, server)
    p = sub.add_parser("wait", help="wait for jobs with progress bars; write their outputs with --out")
    p.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    p.add_argument("--format", choices=sorted(EXTENSIONS), default="srt", help="output format (default srt)")
    p.add_argument("--out", type=Path, default=None, help="write <source stem>.<ext> files into this folder")
    _waiting(p)
    server_option(p, server)
    p = sub.add_parser("batch", help="one job per file on a stage matching --pattern; prints the batch id")
    p.add_argument("stage", metavar="@STAGE[/prefix]")
    p.add_argument("--pattern", default=".*", help="regex the file's path must fully match (default .*)")
    p.add_argument("--wait", action="store_true", help="show progress until the batch is done")
    _waiting(p)
    _options(p, server)


def run(args: argparse.Namespace, settings: Settings) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    commands = {"submit": _submit, "status": _status, "wait": _wait, "batch": _batch}
    try:
        with Api(args.server, api_token(settings)) as api:
            return commands[args.command](args, api)
    except CliError as exc:
        stderr(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        stderr("interrupted; submitted jobs go on running on the server (`spcs-whisper status JOB_ID`)")
        return 130
