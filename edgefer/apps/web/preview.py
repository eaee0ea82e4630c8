"""The page's picture: the newest annotated frame as a JPEG, rendered and encoded in a thread of
its own at most ``fps`` times a second, and only while someone is watching. Every viewer gets
the same bytes, so five viewers cost what one does, and the recognition loop never waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from edgefer.annotate import Hud, draw_faces, draw_hud, message_screen
from edgefer.apps.web.status import Published, StatusBoard
from edgefer.images import encode_jpeg, shrink_to

MAX_SIDE_PX = 960  # larger frames are shrunk before encoding
JPEG_QUALITY = 80
IDLE_AFTER_S = 2.0  # no request for this long: stop encoding


def annotated(published: Published) -> np.ndarray:
    """The frame as the live window shows it (boxes, labels, HUD), scaled to ``MAX_SIDE_PX``."""
    image = draw_faces(published.result.frame.image.copy(), published.result.faces)
    image = draw_hud(image, Hud(published.fps, published.latency_ms))
    return shrink_to(image, MAX_SIDE_PX)


class PreviewEncoder:
    """``frame_after(seq)`` waits for a JPEG newer than ``seq``; a context manager."""

    def __init__(self, board: StatusBoard, fps: float,
                 render: Callable[[Published], np.ndarray] = annotated) -> None:
        self.interval_s = 1.0 / fps
        self.encoded = 0  # JPEGs made so far (for tests and benchmarks)
        self._board = board
        self._render = render
        self._cond = threading.Condition()
        self._stop = False
        self._seq = 0
        self._jpeg = b""
        self._wanted_at = -np.inf
        self._thread = threading.Thread(target=self._run, name="edgefer-preview", daemon=True)

    def __enter__(self) -> PreviewEncoder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def frame_after(self, seq: int, timeout_s: float) -> tuple[int, bytes] | None:
        """The newest JPEG once its number exceeds ``seq``, or None after ``timeout_s``."""
        with self._cond:
            self._wanted_at = time.monotonic()
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._seq > seq or self._stop, timeout_s)
            return (self._seq, self._jpeg) if self._seq > seq else None

    def _run(self) -> None:
        shown: int | str = -1  # the frames count of the last encoded result, or its message
        while True:
            with self._cond:
                self._cond.wait_for(self._watched_or_stopped)
                if self._stop:
                    return
            started = time.monotonic()
            latest, message = self._board.latest(), self._board.unavailable()
            if message is not None and message != shown:  # an outage's last frame is not live
                shown = message
                self._publish(encode_jpeg(message_screen(message), JPEG_QUALITY))
            elif message is None and latest is not None and latest.frames != shown:
                shown = latest.frames
                self._publish(self._encode(latest))
            with self._cond:  # at most one JPEG per interval, however many viewers
                self._cond.wait_for(lambda: self._stop,
                                    self.interval_s - (time.monotonic() - started))

    def _watched_or_stopped(self) -> bool:
        return self._stop or time.monotonic() - self._wanted_at < IDLE_AFTER_S

    def _encode(self, published: Published) -> bytes:
        return encode_jpeg(self._render(published), JPEG_QUALITY)

    def _publish(self, jpeg: bytes) -> None:
        with self._cond:
            self._seq += 1
            self._jpeg = jpeg
            self.encoded += 1
            self._cond.notify_all()
