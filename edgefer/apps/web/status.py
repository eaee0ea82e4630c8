"""What the page shows: the loop publishes references (cheap, once per frame); the HTTP threads
turn them into JSON when someone asks, so the page costs the loop nothing per viewer."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from edgefer.annotate import face_label
from edgefer.sources import redact
from edgefer.types import Faces, FrameResult, label_name

MAX_EVENTS = 20
CURRENT_S = 1.0  # a frame this recent is current, whatever the source's state says


@dataclass(frozen=True)
class Published:
    """The newest processed frame and the loop's figures at that moment."""

    result: FrameResult
    frames: int  # processed so far
    fps: float
    latency_ms: float  # capture to result


@dataclass(frozen=True)
class SourceStatus:
    state: str  # "starting", "connected", "reconnecting", "ended"
    reconnects: int = 0
    dropped: int = 0


def reconnecting_message(source_name: str) -> str:
    """What the window and the page show while the source reconnects."""
    return f"camera unavailable: {source_name} (reconnecting)"


def track_rows(faces: Faces) -> list[dict[str, Any]]:
    """One entry per face: the label shown, its confidence, and whether the LLM answered."""
    rows = []
    for row in range(len(faces)):
        label, confidence, from_llm = face_label(faces, row)
        answer = label_name(int(faces.llm_labels[row])) if faces.llm_labels[row] >= 0 else None
        rows.append({"track_id": int(faces.track_ids[row]), "label": label,
                     "confidence": round(confidence, 3), "from_llm": from_llm,
                     "llm_label": answer})
    return rows


class StatusBoard:
    """Shared between the loop (writer) and the HTTP threads (readers)."""

    def __init__(self, source: str, preview: bool) -> None:
        self.source_name = redact(source)
        self.preview = preview
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._latest: Published | None = None
        self._published_at = -float("inf")
        self._source = SourceStatus("starting")
        self._llm: dict[str, Any] | None = None
        self._events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)

    def publish(self, published: Published) -> None:
        self._latest = published  # one reference swap: readers see the old or the new one
        self._published_at = time.monotonic()

    def latest(self) -> Published | None:
        return self._latest

    def unavailable(self) -> str | None:
        """Why there is no current picture (the source not started, reconnecting or ended), or
        None while frames arrive: the page must not show an outage's last faces as live."""
        state = self._source.state
        if state == "connected" or time.monotonic() - self._published_at < CURRENT_S:
            return None
        if state == "reconnecting":
            return reconnecting_message(self.source_name)
        return f"source ended: {self.source_name}" if state == "ended" else "starting"

    def set_source(self, status: SourceStatus) -> None:
        self._source = status

    def set_llm(self, status: dict[str, Any] | None) -> None:
        self._llm = status

    def add_events(self, events: list[dict[str, Any]]) -> None:
        if events:
            with self._lock:
                self._events.extend(events)

    def snapshot(self) -> dict[str, Any]:
        """The JSON document behind ``/api/status``."""
        latest = self._latest
        with self._lock:
            events = list(self._events)[::-1]
        source = self._source
        current = latest if self.unavailable() is None else None
        return {
            "uptime_s": round(time.time() - self.started_at, 1),
            "frames": latest.frames if latest else 0,
            "fps": round(current.fps, 2) if current else 0.0,
            "latency_ms": round(latest.latency_ms, 2) if latest else None,
            "frame_time_s": round(latest.result.frame.timestamp_s, 3) if latest else None,
            "source": {"name": self.source_name, "state": source.state,
                       "reconnects": source.reconnects, "dropped": source.dropped},
            "tracks": track_rows(current.result.faces) if current else [],
            "llm": self._llm,
            "events": events,
            "preview": self.preview,
        }
