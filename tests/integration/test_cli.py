"""`spcs-whisper transcribe`: through the running service and in-process, with shell-friendly exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import srt

from tests.harness import Service
from tests.integration.helpers import DATA, MANIFEST_JFK, wer


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "transcribe", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("service", ["ctranslate2"], indirect=True)  # engine-agnostic: one engine is enough
def test_through_the_server(service: Service, tmp_path: Path) -> None:
    result = cli(str(DATA / "en_jfk_video.mp4"), "--server", service.url, "--out", str(tmp_path), "--format", "srt")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "en_jfk_video.srt"
    assert result.stdout.strip() == str(out)
    assert wer(MANIFEST_JFK, " ".join(c.content for c in srt.parse(out.read_text()))) <= 0.05


def test_in_process_without_a_server(tmp_path: Path, model_cache: Path) -> None:
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    result = cli(
        str(DATA / "en_jfk.m4a"),
        str(bad),
        "--format",
        "txt",
        "--out",
        str(tmp_path),
        SPCS_WHISPER_MODEL="tiny.en",
        SPCS_WHISPER_ENGINE="ctranslate2",
        SPCS_WHISPER_CACHE_DIR=str(model_cache),
    )
    assert result.returncode == 1  # one file failed, the other was written
    assert "notes.wav" in result.stderr and "not a recognised audio" in result.stderr
    assert wer(MANIFEST_JFK, (tmp_path / "en_jfk.txt").read_text()) <= 0.05


def test_usage_errors() -> None:
    assert cli("/no/such/file.wav").returncode == 2
    unreachable = cli(str(DATA / "en_jfk.m4a"), "--server", "http://127.0.0.1:9")
    assert unreachable.returncode == 3 and "cannot reach" in unreachable.stderr
