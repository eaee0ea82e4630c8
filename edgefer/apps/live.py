"""The live loop: newest frame in, recognition, then the window, the outputs and the monitor.

One frame at a time on the newest frame (the capture thread drops what the loop cannot
process), so capture-to-result latency stays bounded. The parts around the loop each have one
job: ``Window`` (apps.window) shows frames and reads keys, ``Outputs`` (apps.outputs) writes
rows, video and events and disables an output that fails, ``Monitor`` feeds metrics, /healthz
and the operator's page (apps.web). Everything is closed in order on exit, including on SIGTERM
and SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefer.annotate import Hud, draw_faces, draw_hud, message_screen
from edgefer.apps.outputs import ErrorReporter, OutputOptions, Outputs
from edgefer.apps.telemetry import Metrics, SystemdNotifier
from edgefer.apps.web.preview import PreviewEncoder
from edgefer.apps.web.server import HttpOptions, WebServer, resolve_token
from edgefer.apps.web.status import Published, SourceStatus, StatusBoard, reconnecting_message
from edgefer.apps.window import DisplayOptions, Window, display_available
from edgefer.capture import CaptureOptions, LatestFrameReader
from edgefer.errors import InputError
from edgefer.llm.config import LlmConfig
from edgefer.pipeline import Recognizer, RecognizerOptions
from edgefer.sources import Source, open_source, redact
from edgefer.types import FrameResult, label_name

if TYPE_CHECKING:
    from edgefer.llm.stage import LlmStatus

log = logging.getLogger(__name__)

LLM_GAUGES_INTERVAL_S = 1.0
MAX_LATENCIES = 100_000  # kept for the end-of-run percentiles; bounded for runs of days


@dataclass(frozen=True)
class LiveOptions:
    capture: CaptureOptions = field(default_factory=CaptureOptions)
    recognizer: RecognizerOptions = field(default_factory=RecognizerOptions)
    display: DisplayOptions = field(default_factory=DisplayOptions)
    outputs: OutputOptions = field(default_factory=OutputOptions)
    http: HttpOptions = field(default_factory=HttpOptions)
    duration_s: float | None = None  # stop after this long (tests, benchmarks)
    max_frames: int | None = None


@dataclass
class LiveStats:
    frames: int = 0
    faces: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_LATENCIES))
    dropped: int = 0
    reconnects: int = 0
    events: int = 0
    seconds: float = 0.0
    llm_queue_max: int = 0  # the most faces ever waiting for the LLM
    errors: int = 0  # frames that failed and outputs that stopped

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


class TrackEvents:
    """Turns per-frame results into appear / change / end events."""

    def __init__(self) -> None:
        self.labels: dict[int, str] = {}
        self.next_id = 1  # above every track id seen: new tracks after an outage continue here

    def from_result(self, result: FrameResult) -> list[dict[str, Any]]:
        events = []
        faces = result.faces
        for row, track_id in enumerate(faces.track_ids.tolist()):
            label = label_name(int(faces.final_labels[row]))
            self.next_id = max(self.next_id, track_id + 1)
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


def llm_summary(status: LlmStatus, config: LlmConfig) -> dict[str, Any]:
    """What the page shows of the second opinion: queue, answers, errors, budget left."""
    stats = status.stats
    return {"queue": status.queued, "asked": stats["faces_asked"],
            "answered": stats["faces_answered"], "failed_requests": stats["failed_requests"],
            "refusals": stats["refusals"], "dropped": stats["dropped"],
            "budget_left_today": max(0, config.requests_per_day - stats["requests_today"]),
            "cost_usd": round(stats["cost_usd"], 4)}


class Monitor:
    """Metrics, /healthz and the operator's page; inert when ``http.enabled`` is off."""

    def __init__(self, options: HttpOptions, source: str,
                 announce: Callable[[str], None] = log.info) -> None:
        """``announce`` tells the operator where the page is (the CLI prints it)."""
        self.options = options
        self._announce = announce
        self.enabled = options.enabled
        self._token = resolve_token(options) if self.enabled else None  # bad config: fail now
        self.metrics = Metrics() if self.enabled else None
        self.board = StatusBoard(source, options.preview)
        self.server: WebServer | None = None
        self.preview: PreviewEncoder | None = None
        self._stack = ExitStack()

    def __enter__(self) -> Monitor:
        if self.metrics is None:
            return self
        with ExitStack() as stack:
            if self.options.preview:
                self.preview = stack.enter_context(PreviewEncoder(self.board,
                                                                  self.options.preview_fps))
            self.server = stack.enter_context(WebServer(self.options, self._token, self.metrics,
                                                        self.board, self.preview))
            self._stack = stack.pop_all()
        self._announce(f"operator's page: http://{self.options.host}:{self.server.port}/")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def frame(self, published: Published) -> None:
        if self.metrics is None or self.server is None:
            return
        faces = len(published.result.faces)
        self.board.publish(published)
        self.server.beat()
        self.metrics.frames.inc()
        self.metrics.fps.set(published.fps)
        self.metrics.latency.observe(published.latency_ms / 1000)
        self.metrics.faces.set(faces)
        self.metrics.faces_total.inc(faces)

    def source(self, reader: LatestFrameReader) -> None:
        if self.metrics is None:
            return
        state = "ended" if reader.finished else "connected" if reader.available else "reconnecting"
        self.board.set_source(SourceStatus(state, reader.reconnects, reader.dropped))
        self.metrics.update_source(reader.reconnects, reader.dropped)
        self.metrics.source_up.set(1 if reader.available else 0)
        if self.board.unavailable() is not None:  # no frames: the last second saw none
            self.metrics.fps.set(0)
            self.metrics.faces.set(0)

    def llm(self, status: LlmStatus, config: LlmConfig) -> None:
        if self.metrics is None:
            return
        self.board.set_llm(llm_summary(status, config))
        self.metrics.update_llm(status.stats, status.queued)

    def events(self, events: list[dict[str, Any]]) -> None:
        self.board.add_events(events)

    def error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(kind=kind).inc()


class LiveSession:
    """Runs until the user quits, a signal arrives, the source ends or ``duration_s`` passes."""

    def __init__(self, options: LiveOptions, opener: Callable[[str], Source] = open_source,
                 announce: Callable[[str], None] = log.info) -> None:
        """``opener`` opens the source by name (tests inject failing sources here);
        ``announce`` receives the page's address once it listens."""
        if not options.display.headless and not display_available():
            raise InputError("no display available (DISPLAY is not set); run with --headless")
        self.options = options
        self.stats = LiveStats()
        self.stop_event = threading.Event()
        self.monitor = Monitor(options.http, options.capture.source, announce)
        self.errors = ErrorReporter(self.monitor.error)
        self._opener = opener
        self._events = TrackEvents()
        self._recent: deque[float] = deque(maxlen=60)
        self._last_time_s = 0.0  # the last processed frame's: when tracks end at a stop
        self._unavailable_since: float | None = None  # monotonic time the source went away
        self._llm_at = -np.inf

    def request_stop(self, *_: object) -> None:
        self.stop_event.set()

    def run(self) -> LiveStats:
        """The loop; recognizer, monitor, outputs, capture and window are opened and closed here."""
        notifier = SystemdNotifier()
        with ExitStack() as stack:
            recognizer = stack.enter_context(Recognizer(self.options.recognizer))
            stack.enter_context(self.monitor)
            outputs = stack.enter_context(Outputs(self.options.outputs,
                                                  redact(self.options.capture.source), self.errors))
            reader = LatestFrameReader(self.options.capture, self._opener).start()
            stack.callback(reader.close)
            window = None
            if not self.options.display.headless:
                window = Window(self.options.display, self.options.outputs.snapshot_dir)
                stack.callback(window.close)
            notifier.ready()
            stack.callback(notifier.stopping)
            # the clock starts with the loop: frames/s and duration_s are the loop's, not the
            # time spent loading the model, the detector or the LLM client
            start = time.monotonic()
            try:
                self._loop(recognizer, reader, outputs, window, notifier, start)
                self._end_tracks(recognizer, outputs)
            finally:
                self.stats.seconds = time.monotonic() - start
                self.stats.dropped, self.stats.reconnects = reader.dropped, reader.reconnects
                self.stats.errors = self.errors.count
        return self.stats

    def _loop(self, recognizer: Recognizer, reader: LatestFrameReader, outputs: Outputs,
              window: Window | None, notifier: SystemdNotifier, start: float) -> None:
        last_image: np.ndarray | None = None
        while not self._should_end(start, window):
            notifier.watchdog()
            captured = reader.get(timeout_s=0.2)
            self.monitor.source(reader)
            if captured is None:
                if reader.finished:
                    if reader.error is not None:
                        raise reader.error
                    return
                self._show_unavailable(reader, window)
                self._end_tracks_of_an_outage(reader, recognizer, outputs)
                continue
            self._unavailable_since = None
            if window is not None and window.paused:
                paused = last_image if last_image is not None else captured.frame.image
                window.show(draw_hud(paused.copy(), Hud(extra="paused")))
                continue
            try:
                result = recognizer.process(captured.frame)
            except Exception as err:  # one bad frame must not end a kiosk's day
                self.errors.report("frame", err)
                continue
            self._record(result, (time.monotonic() - captured.captured_at) * 1000)
            self._watch_llm(recognizer)
            events = self._track_events(recognizer, result)
            outputs.emit(events)
            self.monitor.events(events)
            last_image = self._render(result, captured.captured_at, window) \
                if window is not None or outputs.wants_image else None
            outputs.write(result, last_image)
            if window is not None and last_image is not None:
                window.show(last_image)

    def _should_end(self, start: float, window: Window | None) -> bool:
        over_time = self.options.duration_s is not None and \
            time.monotonic() - start >= self.options.duration_s
        over_frames = self.options.max_frames is not None and \
            self.stats.frames >= self.options.max_frames
        quit_key = window is not None and window.quit
        return self.stop_event.is_set() or over_time or over_frames or quit_key

    def _record(self, result: FrameResult, latency_ms: float) -> None:
        self.stats.frames += 1
        self.stats.faces += len(result.faces)
        self.stats.latencies_ms.append(latency_ms)
        self._recent.append(time.monotonic())
        self._last_time_s = result.frame.timestamp_s
        self.monitor.frame(Published(result, self.stats.frames, self.current_fps(), latency_ms))

    def _watch_llm(self, recognizer: Recognizer) -> None:
        """The queue's maximum on every frame; the gauges and the page at 1 Hz."""
        status, config = recognizer.llm_status(), self.options.recognizer.llm
        if status is None or config is None:  # the second opinion is off
            return
        self.stats.llm_queue_max = max(self.stats.llm_queue_max, status.queued)
        now = time.monotonic()
        if now - self._llm_at >= LLM_GAUGES_INTERVAL_S:
            self._llm_at = now
            self.monitor.llm(status, config)

    def _end_tracks_of_an_outage(self, reader: LatestFrameReader, recognizer: Recognizer,
                                 outputs: Outputs) -> None:
        """A source away longer than the tracker's timeout ends its tracks then, stamped with
        the last frame's time (not when frames return); new tracks continue the numbering."""
        if reader.available or not self._events.labels:
            return
        now = time.monotonic()
        if self._unavailable_since is None:
            self._unavailable_since = now
        elif now - self._unavailable_since > self.options.recognizer.tracker.timeout_s:
            self._end_tracks(recognizer, outputs)
            recognizer.reserve_track_ids(self._events.next_id)

    def _end_tracks(self, recognizer: Recognizer, outputs: Outputs) -> None:
        """The tracks still open end (a clean stop, an outage): every track_start has its
        track_end."""
        events = self._events.ended([t.track_id for t in recognizer.reset()], self._last_time_s)
        self.stats.events += len(events)
        outputs.emit(events)
        self.monitor.events(events)

    def _track_events(self, recognizer: Recognizer, result: FrameResult) -> list[dict[str, Any]]:
        events = self._events.from_result(result)
        events += self._events.ended([t.track_id for t in recognizer.pop_ended_tracks()],
                                     result.frame.timestamp_s)
        events += recognizer.take_events()
        self.stats.events += len(events)
        return events

    def current_fps(self) -> float:
        if len(self._recent) < 2:
            return 0.0
        return (len(self._recent) - 1) / max(1e-6, self._recent[-1] - self._recent[0])

    def _render(self, result: FrameResult, captured_at: float, window: Window | None) -> np.ndarray:
        """The annotated frame; the HUD's latency runs from capture to this drawing."""
        debug = window is not None and window.debug
        image = draw_faces(result.frame.image.copy(), result.faces, debug=debug)
        display_ms = (time.monotonic() - captured_at) * 1000
        return draw_hud(image, Hud(self.current_fps(), display_ms))

    def _show_unavailable(self, reader: LatestFrameReader, window: Window | None) -> None:
        if reader.available:
            return
        message = reconnecting_message(self.monitor.board.source_name)
        if window is None:
            log.debug(message)
            return
        window.show(message_screen(message))


def install_signal_handlers(session: LiveSession) -> None:
    """SIGTERM and SIGINT end the loop at the next frame; outputs are then closed in order."""
    signal.signal(signal.SIGTERM, session.request_stop)
    signal.signal(signal.SIGINT, session.request_stop)
