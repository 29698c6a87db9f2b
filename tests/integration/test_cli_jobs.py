"""`spcs-whisper submit | status | wait` and `transcribe --translate-to` as a shell user runs them, against the
running service: ids on stdout, errors with the server's code on stderr, exit codes, files written, plain
text (no ANSI escapes) when the output is not a terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import srt

from tests.harness import Service
from tests.integration.helpers import DATA, MANIFEST_JFK, wer

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("service", ["ctranslate2"], indirect=True)]


def cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert "\x1b[" not in result.stdout + result.stderr  # not a terminal: no colours, no bars
    return result


def test_submit_status_wait(service: Service, tmp_path: Path) -> None:
    submitted = cli("submit", str(DATA / "en_jfk.m4a"), "--language", "en", "--server", service.url)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert job_id.startswith("job_") and len(submitted.stdout.splitlines()) == 1

    status = cli("status", job_id, "--server", service.url)
    assert status.returncode == 0, status.stderr
    header, row = (line.split("\t") for line in status.stdout.splitlines())
    assert header == ["id", "status", "progress", "audio s", "source", "error"]
    assert row[0] == job_id and row[1] in ("queued", "running", "succeeded") and row[4] == "en_jfk.m4a"

    waited = cli("wait", job_id, "--out", str(tmp_path), "--timeout", "90", "--server", service.url)
    assert waited.returncode == 0, waited.stderr
    out = tmp_path / "en_jfk.srt"
    assert waited.stdout.strip() == str(out)
    assert f"{job_id}: succeeded" in waited.stderr
    assert wer(MANIFEST_JFK, " ".join(c.content for c in srt.parse(out.read_text()))) <= 0.05

    done = json.loads(cli("status", job_id, "--json", "--server", service.url).stdout)
    assert (done["id"], done["status"], done["progress"]["fraction"]) == (job_id, "succeeded", 1.0)


def test_errors_carry_the_server_code(service: Service, tmp_path: Path) -> None:
    missing = cli("wait", "job_bogus", "--server", service.url)
    assert missing.returncode == 1 and "error: job_not_found:" in missing.stderr and "job_bogus" in missing.stderr

    not_audio = tmp_path / "en.txt"
    not_audio.write_text("this is not audio")
    refused = cli("submit", str(not_audio), "--server", service.url)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "error: unsupported_media: not a recognised audio or video file" in refused.stderr
    assert "en.txt" in refused.stderr

    status = cli("status", "job_bogus", "--server", service.url)
    assert status.returncode == 1 and "job_not_found" in status.stderr


def test_transcribe_through_the_server_with_a_translation(service: Service, tmp_path: Path) -> None:
    result = cli(
        "transcribe",
        str(DATA / "en_jfk.m4a"),
        "--translate-to",
        "en",
        "--format",
        "txt",
        "--server",
        service.url,
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    transcript, translation = tmp_path / "en_jfk.txt", tmp_path / "en_jfk.en.txt"
    assert result.stdout.split() == [str(transcript), str(translation)]
    assert "en_jfk.m4a: succeeded" in result.stderr
    assert wer(MANIFEST_JFK, transcript.read_text()) <= 0.05
    assert wer(MANIFEST_JFK, translation.read_text()) <= 0.05  # English already: the transcript itself


def on_terminal(*args: str) -> tuple[int, str, str]:
    """The CLI with stderr on a pseudo-terminal, as in an interactive shell: (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"},
    )
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout, _ = process.communicate(timeout=120)
    reader.join(timeout=5)
    os.close(master)
    return process.returncode, stdout.decode(), b"".join(chunks).decode(errors="replace")


def test_progress_bars_on_a_terminal_only(service: Service, tmp_path: Path) -> None:
    files = [str(DATA / "en_jfk.m4a"), str(DATA / "en_jfk_video.mp4")]
    code, out, err = on_terminal("transcribe", *files, "--server", service.url, "--out", str(tmp_path))
    assert code == 0, err
    assert sorted(out.split()) == [str(tmp_path / "en_jfk.srt"), str(tmp_path / "en_jfk_video.srt")]
    assert "\x1b[" in err and "total" in err  # one bar per file and a total, over audio seconds:
    assert re.search(r"en_jfk_video.mp4 .* (\d+)/\1 s", err) and re.search(r"total .* (\d+)/\1 s", err)
    code, out, err = on_terminal("transcribe", files[0], "--server", service.url, "--out", str(tmp_path), "--quiet")
    assert code == 0 and "\x1b[" not in err and "en_jfk.m4a: succeeded" in err
