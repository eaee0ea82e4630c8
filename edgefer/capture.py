"""Live capture: a thread that keeps only the newest frame, reconnecting when the source fails.

When processing falls behind, older frames are overwritten (and counted as dropped), so
latency never builds up. Frames are re-stamped with their capture time on the monotonic clock,
which is what latency, smoothing and track timeouts need, even when a file loops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgefer.errors import ConfigError, EdgeferError, InputError
from edgefer.sources import Source, open_source, redact
from edgefer.types import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureOptions:
    source: str = "0"
    realtime: bool = False  # pace a file at its native frame rate, like a camera
    loop: bool = False  # restart a file at its end (demos, soak tests)
    reconnect: bool = False  # keep retrying a failed source (kiosk) instead of stopping
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            raise ConfigError("reconnect delays need 0 < reconnect_initial_s <= reconnect_max_s, "
                              f"got {self.reconnect_initial_s} and {self.reconnect_max_s}")


@dataclass
class Captured:
    frame: Frame
    captured_at: float  # time.monotonic() when the frame was read


class LatestFrameReader:
    """Reads frames in its own thread; ``get`` returns the newest one not yet returned."""

    def __init__(self, options: CaptureOptions,
                 opener: Callable[[str], Source] = open_source) -> None:
        self.options = options
        self._opener = opener
        self._cond = threading.Condition()
        self._latest: Captured | None = None
        self._stop = threading.Event()
        self.dropped = 0
        self.captured = 0
        self.reconnects = 0
        self.available = False
        self.finished = False
        self.error: EdgeferError | None = None
        self._epoch = time.monotonic()
        self._index = 0
        self._thread = threading.Thread(target=self._run, name="edgefer-capture", daemon=True)

    def start(self) -> LatestFrameReader:
        self._thread.start()
        return self

    def get(self, timeout_s: float) -> Captured | None:
        """The newest unread frame, waiting up to ``timeout_s``; None if none arrived."""
        with self._cond:
            if self._latest is None and not self.finished:
                self._cond.wait(timeout_s)
            item, self._latest = self._latest, None
        return item

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = self.options.reconnect_initial_s
        while not self._stop.is_set():
            ended = file_ended = False
            try:
                with self._opener(self.options.source) as source:
                    self.available = True
                    captured = self.captured
                    ended = self._read(source)
                    file_ended = ended and not source.live
                if self.captured > captured:  # it worked again: the backoff starts over
                    delay = self.options.reconnect_initial_s
            except EdgeferError as err:
                if not self.options.reconnect:
                    self.error = err  # the caller reports it: no warning to repeat it
                else:
                    log.warning("source %s unavailable: %s", redact(self.options.source), err)
            finally:
                self.available = False
            if self._stop.is_set() or not (self.options.loop or self.options.reconnect) \
                    or self.error is not None:
                break
            if file_ended and not self.options.loop:
                break  # a file read to its end is done; reconnecting would replay it
            if self.options.loop and ended:
                continue  # a file starting over is not a reconnection
            self._stop.wait(delay)
            delay = min(self.options.reconnect_max_s, delay * 2)
            self.reconnects += 1
        with self._cond:
            self.finished = True
            self._cond.notify_all()

    def _read(self, source: Source) -> bool:
        """Publish frames until the source ends (True) or fails or is stopped (False)."""
        start_wall = time.monotonic()
        first_ts: float | None = None
        frames = iter(source)
        while not self._stop.is_set():
            try:
                frame = next(frames)
            except StopIteration:
                return True
            except InputError:
                if self.captured:  # it worked before: the device went away mid-stream
                    return False
                raise
            if self.options.realtime:
                first_ts = frame.timestamp_s if first_ts is None else first_ts
                wait = start_wall + (frame.timestamp_s - first_ts) - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return False
            self._publish(frame)
        return False

    def _publish(self, frame: Frame) -> None:
        now = time.monotonic()
        stamped = Frame(self._index, now - self._epoch, frame.image, frame.source, frame.still)
        self._index += 1
        with self._cond:
            if self._latest is not None:
                self.dropped += 1
            self._latest = Captured(stamped, now)
            self.captured += 1
            self._cond.notify()
