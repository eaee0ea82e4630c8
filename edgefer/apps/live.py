"""The live loop: newest frame in, recognition, window or headless, outputs, events, metrics.

One frame at a time on the newest frame (the capture thread drops what the loop cannot
process), so capture-to-result latency stays bounded. Everything that writes is closed in
order on exit, including on SIGTERM and SIGINT.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.annotate import Hud, draw_faces, draw_hud
from edgefer.apps.telemetry import EventLog, HealthServer, Metrics, SystemdNotifier
from edgefer.capture import CaptureOptions, LatestFrameReader
from edgefer.errors import InputError, OutputError
from edgefer.pipeline import Recognizer, RecognizerOptions
from edgefer.sinks import TableSink, VideoSink, face_rows
from edgefer.sources import Source, open_source
from edgefer.types import FrameResult, label_name

log = logging.getLogger(__name__)

WINDOW = "edgefer"
ESC = 27


@dataclass(frozen=True)
class LiveOptions:
    capture: CaptureOptions = field(default_factory=CaptureOptions)
    recognizer: RecognizerOptions = field(default_factory=RecognizerOptions)
    headless: bool = False
    fullscreen: bool = False
    record: Path | None = None
    record_fps: float = 30.0
    output: Path | None = None
    overwrite: bool = False
    snapshot_dir: Path | None = None
    events: str | None = None  # None: no event stream; "-": stdout; else a rotating file
    http_host: str = "127.0.0.1"
    http_port: int | None = None  # None: no health/metrics endpoint
    stale_s: float = 10.0
    duration_s: float | None = None  # stop after this long (tests, benchmarks)
    max_frames: int | None = None


@dataclass
class LiveStats:
    frames: int = 0
    faces: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    dropped: int = 0
    reconnects: int = 0
    events: int = 0
    seconds: float = 0.0
    llm_queue_max: int = 0  # the most faces ever waiting for the LLM
    errors: int = 0  # frames that failed and outputs that stopped

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def display_available() -> bool:
    """A window can be opened: a display server, or Qt told to render offscreen."""
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("QT_QPA_PLATFORM") == "offscreen")


class TrackEvents:
    """Turns per-frame results into appear / change / end events."""

    def __init__(self) -> None:
        self.labels: dict[int, str] = {}

    def from_result(self, result: FrameResult) -> list[dict[str, Any]]:
        events = []
        faces = result.faces
        for row, track_id in enumerate(faces.track_ids.tolist()):
            label = label_name(int(faces.final_labels[row]))
            previous = self.labels.get(track_id)
            if previous is None:
                events.append({"event": "track_start", "track_id": track_id, "label": label})
            elif previous != label:
                events.append({"event": "emotion_change", "track_id": track_id,
                               "from": previous, "label": label})
            self.labels[track_id] = label
        for event in events:
            event["time_s"] = round(result.frame.timestamp_s, 3)
        return events

    def ended(self, track_ids: list[int], time_s: float) -> list[dict[str, Any]]:
        return [{"event": "track_end", "track_id": t, "label": self.labels.pop(t, None),
                 "time_s": round(time_s, 3)} for t in track_ids]


class LiveSession:
    """Runs until the user quits, a signal arrives, the source ends or ``duration_s`` passes."""

    def __init__(self, options: LiveOptions, opener: Callable[[str], Source] = open_source) -> None:
        """``opener`` opens the source by name (tests inject failing sources here)."""
        self.options = options
        self._opener = opener
        self.stats = LiveStats()
        self.stop_event = threading.Event()
        self.paused = False
        self.debug_overlay = False
        self.fullscreen = options.fullscreen
        self._events = TrackEvents()
        self._recent: deque[float] = deque(maxlen=60)
        self._last_error_log = -np.inf
        self._llm_metrics_at = -np.inf
        if not options.headless and not display_available():
            raise InputError("no display available (DISPLAY is not set); run with --headless")

    def request_stop(self, *_: object) -> None:
        self.stop_event.set()

    def run(self) -> LiveStats:
        """The loop; sinks, window, HTTP server and capture are opened and closed here."""
        from contextlib import ExitStack

        notifier = SystemdNotifier()
        with ExitStack() as stack:
            recognizer = stack.enter_context(Recognizer(self.options.recognizer))
            metrics = Metrics() if self.options.http_port is not None else None
            health = stack.enter_context(HealthServer(
                metrics, self.options.http_host, self.options.http_port, self.options.stale_s)) \
                if metrics is not None else None
            table = TableSink(self.options.output, self.options.overwrite) \
                if self.options.output else None
            if table is not None:
                stack.callback(self._close_quietly, table)
            video = stack.enter_context(VideoSink(self.options.record, self.options.record_fps,
                                                  self.options.overwrite)) \
                if self.options.record else None
            events = EventLog(self.options.events) if self.options.events else None
            if events is not None:
                stack.callback(events.close)
            reader = LatestFrameReader(self.options.capture, self._opener).start()
            stack.callback(reader.close)
            if not self.options.headless:
                stack.callback(_close_windows)
            notifier.ready()
            stack.callback(notifier.stopping)
            self._loop(recognizer, reader, metrics, health, table, video, events, notifier)
        return self.stats

    def _loop(self, recognizer: Recognizer, reader: LatestFrameReader, metrics: Metrics | None,
              health: HealthServer | None, table: TableSink | None, video: VideoSink | None,
              events: EventLog | None, notifier: SystemdNotifier) -> None:
        start = time.monotonic()
        while not self.stop_event.is_set():
            notifier.watchdog()
            if self._should_end(start):
                break
            captured = reader.get(timeout_s=0.2)
            self._update_source_metrics(reader, metrics)
            if captured is None:
                if reader.finished:
                    if reader.error is not None:
                        raise reader.error
                    break
                self._show_unavailable(reader)
                continue
            if self.paused:
                self._handle_keys(captured.frame.image)
                continue
            try:
                result = recognizer.process(captured.frame)
            except Exception as err:  # one bad frame must not end a kiosk's day
                self._count_error("frame", err, metrics)
                continue
            latency_ms = (time.monotonic() - captured.captured_at) * 1000
            self._watch_llm(recognizer, metrics)
            self._record(result, latency_ms, metrics, health)
            self._emit(recognizer, result, events)
            if table is not None:
                table = self._write(table, face_rows(self.options.capture.source, result), metrics)
            image = self._render(result, captured.captured_at) \
                if video or not self.options.headless else None
            if video is not None:
                video = self._write(video, image, metrics)
            if not self.options.headless:
                self._show(image)
        self.stats.seconds = time.monotonic() - start
        self.stats.dropped, self.stats.reconnects = reader.dropped, reader.reconnects

    def _close_quietly(self, sink: TableSink) -> None:
        try:
            sink.close()
        except OutputError as err:
            log.error("%s", err)

    def _write(self, sink: Any, item: Any, metrics: Metrics | None) -> Any:
        """``sink.write(item)``; on failure (disk full...) report it and stop using that output,
        keeping the loop, the window and the other outputs running. Returns the sink or None."""
        try:
            sink.write(item)
            return sink
        except OutputError as err:
            self._count_error("output", err, metrics)
            log.error("%s; that output is disabled, the loop goes on", err)
            return None

    def _count_error(self, kind: str, err: Exception, metrics: Metrics | None) -> None:
        self.stats.errors += 1
        if metrics is not None:
            metrics.errors.labels(kind=kind).inc()
        now = time.monotonic()
        if now - self._last_error_log >= 10:  # at most one log line per 10 s
            self._last_error_log = now
            log.error("%s error (%d so far): %s", kind, self.stats.errors, err)

    def _watch_llm(self, recognizer: Recognizer, metrics: Metrics | None) -> None:
        status = recognizer.llm_status()
        if status is None:
            return
        self.stats.llm_queue_max = max(self.stats.llm_queue_max, status.queued)
        now = time.monotonic()
        if metrics is not None and now - self._llm_metrics_at >= 1.0:  # not on every frame
            self._llm_metrics_at = now
            metrics.update_llm(status.stats, status.queued)

    def _should_end(self, start: float) -> bool:
        over_time = self.options.duration_s is not None and \
            time.monotonic() - start >= self.options.duration_s
        over_frames = self.options.max_frames is not None and \
            self.stats.frames >= self.options.max_frames
        return over_time or over_frames

    def _record(self, result: FrameResult, latency_ms: float, metrics: Metrics | None,
                health: HealthServer | None) -> None:
        self.stats.frames += 1
        self.stats.faces += len(result.faces)
        self.stats.latencies_ms.append(latency_ms)
        if len(self.stats.latencies_ms) > 100_000:  # bounded for runs of days
            del self.stats.latencies_ms[:50_000]
        self._recent.append(time.monotonic())
        if health is not None:
            health.beat()
        if metrics is not None:
            metrics.frames.inc()
            metrics.fps.set(self.current_fps())
            metrics.latency.observe(latency_ms / 1000)
            metrics.faces.set(len(result.faces))
            metrics.faces_total.inc(len(result.faces))

    def _update_source_metrics(self, reader: LatestFrameReader, metrics: Metrics | None) -> None:
        if metrics is None:
            return
        metrics.dropped.set(reader.dropped)
        metrics.reconnects.set(reader.reconnects)
        metrics.source_up.set(1 if reader.available else 0)

    def _emit(self, recognizer: Recognizer, result: FrameResult, events: EventLog | None) -> None:
        new = self._events.from_result(result)
        new += self._events.ended([t.track_id for t in recognizer.pop_ended_tracks()],
                                  result.frame.timestamp_s)
        new += recognizer.take_events()
        self.stats.events += len(new)
        if events is not None:
            for event in new:
                events.emit(event)

    def current_fps(self) -> float:
        if len(self._recent) < 2:
            return 0.0
        return (len(self._recent) - 1) / max(1e-6, self._recent[-1] - self._recent[0])

    def _render(self, result: FrameResult, captured_at: float) -> np.ndarray:
        """The annotated frame; the HUD's latency runs from capture to this drawing."""
        image = draw_faces(result.frame.image.copy(), result.faces, debug=self.debug_overlay)
        display_ms = (time.monotonic() - captured_at) * 1000
        return draw_hud(image, Hud(self.current_fps(), display_ms, "paused" if self.paused else ""))

    def _show(self, image: np.ndarray) -> None:
        import cv2

        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        cv2.setWindowProperty(WINDOW, cv2.WND_PROP_FULLSCREEN,
                              cv2.WINDOW_FULLSCREEN if self.fullscreen else cv2.WINDOW_NORMAL)
        cv2.imshow(WINDOW, image)
        self._handle_keys(image)

    def _show_unavailable(self, reader: LatestFrameReader) -> None:
        if reader.available:
            return
        message = f"camera unavailable: {self.options.capture.source} (reconnecting)"
        if self.options.headless:
            log.debug(message)
            return
        self._show(unavailable_screen(message))

    def _handle_keys(self, image: np.ndarray) -> None:
        if self.options.headless:
            return
        import cv2

        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), ESC):
            self.stop_event.set()
        elif key == ord(" "):
            self.paused = not self.paused
        elif key == ord("f"):
            self.fullscreen = not self.fullscreen
        elif key == ord("d"):
            self.debug_overlay = not self.debug_overlay
        elif key == ord("s"):
            self.snapshot(image)

    def snapshot(self, image: np.ndarray) -> Path | None:
        import cv2

        if self.options.snapshot_dir is None:
            log.warning("snapshot ignored: no --snapshot-dir given")
            return None
        self.options.snapshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.options.snapshot_dir / f"edgefer-{time.strftime('%Y%m%d-%H%M%S')}-" \
                                           f"{self.stats.frames:06d}.jpg"
        cv2.imwrite(str(path), image)
        return path


def unavailable_screen(message: str, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    import cv2

    image = np.zeros((*size, 3), np.uint8)
    cv2.putText(image, message, (20, size[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                (255, 255, 255), 1, cv2.LINE_AA)
    return image


def _close_windows() -> None:
    import cv2

    cv2.destroyAllWindows()


def install_signal_handlers(session: LiveSession) -> None:
    """SIGTERM and SIGINT end the loop at the next frame; outputs are then closed in order."""
    signal.signal(signal.SIGTERM, session.request_stop)
    signal.signal(signal.SIGINT, session.request_stop)
