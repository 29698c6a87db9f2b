"""A job's audio decoded and cut into windows in bounded steps, for the Ray `Decoder`.

The request body is spooled to a temporary file (never held in memory), PyAV decodes it a block at a time
(`AudioReader`), and `WindowStream` hands out each ≤ 30 s window as soon as it is complete. A step (one block,
or one window) runs on a worker thread; the Decoder asks for the next step only once the job's last window has
gone to Whisper (within the replica's window budget), so a job's memory is bounded by a block and a window or
two, not by its length, and a cancelled job stops decoding after the step in flight.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faster_whisper.vad import VadOptions

from service.audio import BLOCK_SAMPLES, AudioInfo, AudioReader
from service.inference.windows import Window, WindowStream


class BodyTooLarge(Exception):
    pass


async def spool(chunks: AsyncIterator[bytes], max_bytes: int) -> Path:
    """Write a request body to a temporary file; BodyTooLarge past `max_bytes` (the file is removed)."""
    fd, name = tempfile.mkstemp(prefix="spcsw-decode-")
    path = Path(name)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise BodyTooLarge(f"the file exceeds the limit of {max_bytes / 1024 / 1024:g} MB")
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


@dataclass
class Tick:
    """Yielded after every block: how far decoding has got (seconds of audio)."""

    seconds: float


class WindowSource:
    """Blocking side: open the file, then `items()` yields windows and a `Tick` after every block."""

    def __init__(
        self,
        path: Path,
        *,
        vad: bool,
        max_seconds: float | None,
        block_samples: int = BLOCK_SAMPLES,
        vad_options: VadOptions | None = None,
    ) -> None:
        self.path = path
        self.block_samples = block_samples
        self.max_seconds = max_seconds
        self.windows = WindowStream(vad, vad_options)
        self.reader: AudioReader | None = None
        self.decode_s = 0.0  # time spent decoding (PyAV + resampling)
        self.vad_s = 0.0  # ... and in VAD + cutting
        self.peak_buffered = 0  # most samples `WindowStream` held at once (a bound, whatever the length)

    def open(self) -> AudioInfo:
        self.reader = AudioReader(self.path, max_seconds=self.max_seconds)
        return self.reader.info

    @property
    def seconds(self) -> float:
        return self.reader.seconds if self.reader is not None else 0.0

    def items(self) -> Generator[Window | Tick, None, None]:
        assert self.reader is not None, "open() first"
        blocks = self.reader.blocks(self.block_samples)
        while True:
            started = time.perf_counter()
            block = next(blocks, None)
            decoded = time.perf_counter()
            ended = block is None
            windows = self.windows.finish() if block is None else self.windows.feed(block)
            block = None  # the windows hold copies: keep no block while the caller waits
            self.decode_s += decoded - started
            self.vad_s += time.perf_counter() - decoded
            self.peak_buffered = max(self.peak_buffered, self.windows.buffered)
            while windows:  # the generator keeps no window the caller has taken
                yield windows.pop(0)
            if ended:
                return
            yield Tick(self.reader.seconds)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


class Steps:
    """Async side: runs a `WindowSource`'s steps on worker threads, one at a time. A caller cancelled while a
    step runs leaves it to finish (a block at most); `close` waits for it, then stops the source. It is the
    pipeline's `Feed` (`pipeline.py`)."""

    def __init__(self, source: WindowSource) -> None:
        self.source = source
        self._items: Generator[Window | Tick, None, None] | None = None
        self._running: asyncio.Future[Any] | None = None
        self._closed = False

    async def _run(self, fn: Any, *args: Any) -> Any:
        assert self._running is None or self._running.done(), "one step at a time"
        self._running = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        return await asyncio.shield(self._running)

    @property
    def seconds(self) -> float:
        """Audio decoded so far."""
        return self.source.seconds

    @property
    def speech_seconds(self) -> float:
        """Audio handed out in windows so far."""
        return self.source.windows.seconds

    @property
    def speech(self) -> list[dict] | None:
        """The VAD spans found so far (None without VAD)."""
        return self.source.windows.speech

    async def open(self) -> AudioInfo:
        return await self._run(self.source.open)

    async def next(self) -> Window | Tick | None:
        """The next window or tick; None once the audio has ended (AudioError when it turns out broken)."""
        if self._items is None:
            self._items = self.source.items()
        return await self._run(next, self._items, None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._running is not None and not self._running.done():
            await asyncio.wait([self._running])
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        try:
            if self._items is not None:
                self._items.close()
        finally:
            self.source.close()
