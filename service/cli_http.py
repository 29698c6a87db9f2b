"""HTTP helpers of the CLI: a client that sends the API token, error reports a shell user can act on,
polling with progress bars, and writing a finished job's outputs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from service.config import Settings
from service.jobs.model import TERMINAL as TERMINAL_STATUSES

OK, FAILED, USAGE, UNREACHABLE, TIMEOUT = 0, 1, 2, 3, 4
TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
EXTENSIONS = {"srt": "srt", "vtt": "vtt", "txt": "txt", "json": "json", "verbose_json": "json"}
API_FORMATS = {"txt": "text"}
POLL_S = 0.5


class CliError(Exception):
    """A failure reported as `error: <code>: <message>`, ending the command with `exit_code`."""

    def __init__(self, message: str, code: str | None = None, exit_code: int = FAILED, status: int = 0) -> None:
        super().__init__(message)
        self.message, self.code, self.exit_code, self.status = message, code, exit_code, status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


def api_token(settings: Settings) -> str | None:
    return settings.gateway.api_token.get_secret_value() if settings.gateway.api_token else None


class Api:
    """The gateway over HTTP: sends the API token, turns error bodies and dead servers into `CliError`."""

    def __init__(self, url: str, token: str | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        timeout = httpx.Timeout(300, connect=10)
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            message = f"cannot reach {self.url}: is the service running? (make run) [{exc}]"
            raise CliError(message, exit_code=UNREACHABLE) from None
        except httpx.HTTPError as exc:
            raise CliError(f"{method} {self.url}{path} failed: {exc!r}") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = f"http_{response.status_code}", response.text.strip()[:200] or response.reason_phrase
            if response.status_code == 401:
                message += " (set SPCS_WHISPER_API_TOKEN)"
            raise CliError(message, code, status=response.status_code)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def submit(self, source: str | Path, fields: dict[str, str | None]) -> dict:
        """One job: a local file is uploaded; `@STAGE/path` and `https://...` are sent as JSON sources."""
        options = {k: v for k, v in fields.items() if v is not None}
        if isinstance(source, str) and is_remote(source):
            return self.json("POST", "/v1/jobs", json={"source": source, **options})
        path = Path(source)
        with path.open("rb") as fh:
            return self.json("POST", "/v1/jobs", files={"file": (path.name, fh)}, data=options)


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def report(exc: CliError, label: object, log: Callable[[str], None] = stderr) -> None:
    """`error: <code>: <message> (<file or job>)` for one item; a dead server ends the command instead."""
    if exc.exit_code == UNREACHABLE:
        raise exc
    log(f"error: {exc} ({label})")


def is_remote(source: str) -> bool:
    return source.startswith(("@", "https://", "http://"))


class Bars:
    """A bar per job over audio seconds plus a total, on stderr (rich). Off when stderr is not a terminal
    or with `quiet`; then only the lines given to `log` are shown (one per finished file)."""

    def __init__(self, quiet: bool, count: int) -> None:
        self.live = not quiet and sys.stderr.isatty()
        self.tasks: dict[str, Any] = {}
        self.seconds: dict[str, tuple[float, float | None]] = {}
        if not self.live:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[seconds]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.total = self.progress.add_task("total", total=None, seconds="") if count > 1 else None

    def __enter__(self) -> Bars:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.live:
            self.progress.stop()

    def update(self, key: str, label: str, done: float, total: float | None) -> None:
        self.seconds[key] = (done, total)
        if not self.live:
            return
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(label, total=None, seconds="")
        self.progress.update(self.tasks[key], completed=done, total=total, seconds=_secs(done, total))
        if self.total is not None:
            done_all = sum(d for d, _ in self.seconds.values())
            total_all = sum(t or 0.0 for _, t in self.seconds.values()) or None
            self.progress.update(self.total, completed=done_all, total=total_all, seconds=_secs(done_all, total_all))

    def log(self, line: str) -> None:
        """A message on stderr (above the bars while they show)."""
        if self.live:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            stderr(line)

    def out(self, line: str) -> None:
        """A result on stdout (a job id, a written path)."""
        if self.live and sys.stdout.isatty():
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, flush=True)


def _secs(done: float, total: float | None) -> str:
    return f"{done:.0f}/{total:.0f} s" if total else f"{done:.0f} s"


Finisher = Callable[[dict, str], bool]


def finisher(api: Api, bars: Bars, fmt: str, stem_of: Callable[[dict], Path | None]) -> Finisher:
    """What `watch` does with a finished job: report it and, where `stem_of` gives `DIR/stem`, write
    `stem.<ext>` and (with `translate_to`) `stem.<lang>.txt`. Returns whether the job succeeded."""

    def finish(job: dict, label: str) -> bool:
        if job["status"] != "succeeded":
            error = job.get("error") or {"code": job["status"], "message": f"the job was {job['status']}"}
            bars.log(f"error: {error['code']}: {error['message']} ({label})")
            return False
        stem = stem_of(job)
        try:
            paths = save(api, job, stem, fmt) if stem is not None else []
        except CliError as exc:
            report(exc, label, bars.log)
            return False
        except OSError as exc:
            bars.log(f"error: cannot write the outputs: {exc} ({label})")
            return False
        bars.log(f"{label}: succeeded ({job.get('audio_seconds') or 0:.1f} s of audio)")
        for path in paths:
            bars.out(str(path))
        return True

    return finish


def save(api: Api, job: dict, stem: Path, fmt: str) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    params = {"format": API_FORMATS.get(fmt, fmt)}
    transcript = api.request("GET", f"/v1/jobs/{job['id']}/transcript", params=params).text
    paths = [write(stem.parent / f"{stem.name}.{EXTENSIONS[fmt]}", transcript)]
    if job.get("translate_to"):
        translation = api.json("GET", f"/v1/jobs/{job['id']}/translation")
        name = f"{stem.name}.{translation['target_language']}.txt"
        paths.append(write(stem.parent / name, translation["text"].strip() + "\n"))
    return paths


def write(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def watch(api: Api, labels: dict[str, str], bars: Bars, finish: Finisher, timeout: float | None = None) -> int:
    """Poll the jobs (`id -> label`) until each is finished, handing each to `finish`; an exit code."""
    pending, failed = dict(labels), False
    deadline = time.monotonic() + timeout if timeout else None
    while pending:
        for job_id, label in list(pending.items()):
            try:
                job = api.json("GET", f"/v1/jobs/{job_id}")
            except CliError as exc:
                if exc.status in (429, 502, 503, 504):  # busy or restarting: ask again
                    continue
                report(exc, label, bars.log)
                failed = True
                del pending[job_id]
                continue
            progress = job.get("progress") or {}
            bars.update(job_id, label, progress.get("done_seconds") or 0.0, progress.get("audio_seconds"))
            if job["status"] in TERMINAL:
                del pending[job_id]
                failed = not finish(job, label) or failed
        if pending and deadline is not None and time.monotonic() >= deadline:
            bars.log(f"error: timed out after {timeout:g} s; not finished: {' '.join(pending)}")
            return FAILED if failed else TIMEOUT
        if pending:
            time.sleep(POLL_S)
    return FAILED if failed else OK
