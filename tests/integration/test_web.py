"""The browser page at `/`: upload a video, watch the job, read and play the transcript (headless Chromium); the
speaker labels of a diarized transcript (the gateway in this process on a fake inference that labels speakers)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from service.api.app import Backends, create_app
from service.config import Settings
from service.storage.sqlite import SQLiteStore
from service.storage.stages import StageReader
from tests.fakes import SpeakingFake
from tests.harness import Service, start_gateway, stop_gateway, wait_ready
from tests.integration.helpers import DATA
from tests.store_load import serving

pytestmark = [pytest.mark.integration]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


@pytest.fixture
def gateway(service: Service, tmp_path: Path) -> Iterator[str]:
    url, process = start_gateway(tmp_path / "gw", service.serve_url, tmp_path / "gateway.log")
    wait_ready(url)
    yield url
    stop_gateway(process)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing: install Debian's `chromium chromium-driver` (`make browser`)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (*CHROME_ARGS, f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=ChromeService(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chrome-profile", ignore_errors=True)


UNLABELLED = """
return [...document.querySelectorAll('input, select')]
  .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML);
"""


@pytest.mark.parametrize("service", ["ctranslate2"], indirect=True)
def test_upload_transcript_play_and_download(gateway: str, browser: webdriver.Chrome, tmp_path: Path) -> None:
    browser.get(f"{gateway}/")
    assert browser.title == "spcs-whisper"
    assert browser.execute_script(UNLABELLED) == []

    browser.find_element(By.ID, "file").send_keys(str(DATA / "en_jfk_video.mp4"))
    Select(browser.find_element(By.ID, "language")).select_by_value("en")
    browser.find_element(By.ID, "submit").click()

    WebDriverWait(browser, 120, poll_frequency=0.3).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#transcript .segment")
    )
    body = browser.find_element(By.TAG_NAME, "body").text.lower()
    assert "ask not what your country can do for you" in body
    assert browser.find_elements(By.CSS_SELECTOR, "#jobs li.job"), "the job list shows the job"
    assert not browser.find_element(By.ID, "error").is_displayed()

    segments = browser.find_elements(By.CSS_SELECTOR, "#transcript .segment")
    segments[-1].click()  # the last segment starts after 0 s: currentTime must jump there and move on
    minutes, seconds = segments[-1].find_element(By.CSS_SELECTOR, ".ts").text.split()[0].split(":")
    start = int(minutes) * 60 + float(seconds)
    WebDriverWait(browser, 10, poll_frequency=0.2).until(
        lambda d: d.execute_script("return document.getElementById('player').currentTime") > start
    )

    href = browser.find_element(By.ID, "download-srt").get_attribute("href")
    assert href and href.endswith("format=srt")
    srt = httpx.get(href, timeout=30)
    assert srt.status_code == 200 and "-->" in srt.text
    for fmt in ("vtt", "json"):
        assert browser.find_element(By.ID, f"download-{fmt}").get_attribute("download") is not None

    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


@pytest.fixture
def fake_gateway(tmp_path: Path) -> Iterator[str]:
    """The gateway app in this process (real HTTP) on a fake inference: segments "one" to "four", speakers in
    turns of two segments when asked."""
    config = Settings(data_dir=tmp_path / "gw")
    inference = SpeakingFake(turn=2, segments=4, text="one two three four")
    backends = Backends(SQLiteStore(config.gateway.data_dir), StageReader({}, temp_dir=tmp_path), inference)
    with serving(create_app(config, backends)) as url:
        yield url


SPEAKERS_SHOWN = """
return [...document.querySelectorAll('#transcript .segment')].map(b => [
  b.dataset.speaker, (b.querySelector('.speaker') || {}).textContent || null,
  b.querySelector('.speaker') ? getComputedStyle(b.querySelector('.speaker')).backgroundColor : null,
  b.getAttribute('aria-label')]);
"""


def test_speakers_are_labelled_where_they_change(fake_gateway: str, browser: webdriver.Chrome) -> None:
    browser.get(f"{fake_gateway}/")
    browser.find_element(By.ID, "file").send_keys(str(DATA / "en_jfk.m4a"))
    Select(browser.find_element(By.ID, "speakers")).select_by_value("2")
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30, poll_frequency=0.2).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#transcript .segment")
    )
    shown = browser.execute_script(SPEAKERS_SHOWN)
    assert [(who, label) for who, label, _, _ in shown] == [
        ("SPEAKER_00", "SPEAKER_00"),
        ("SPEAKER_00", None),  # the same speaker goes on: no second label
        ("SPEAKER_01", "SPEAKER_01"),
        ("SPEAKER_01", None),
    ]
    assert shown[0][2] != shown[2][2], "each speaker has its colour"
    assert shown[1][3] == "Play 00:01.0 to 00:02.0: SPEAKER_00: two"
    assert "speakers: 2" in browser.find_element(By.ID, "view-meta").text
    assert Select(browser.find_element(By.ID, "speakers")).first_selected_option.text == "Off"  # the form was reset
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
