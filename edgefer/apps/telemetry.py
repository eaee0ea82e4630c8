"""Prometheus metrics, the event stream and systemd notifications for long runs."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from edgefer.errors import OutputError, require

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)


class Metrics:
    """The kiosk's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        prometheus = require("prometheus_client", "kiosk")
        self.registry = prometheus.CollectorRegistry()
        r = self.registry
        self.frames = prometheus.Counter("edgefer_frames", "Frames processed", registry=r)
        self.fps = prometheus.Gauge("edgefer_fps", "Frames processed per second (last second)",
                                    registry=r)
        self.latency = prometheus.Histogram(
            "edgefer_capture_to_result_seconds", "Capture-to-result latency",
            buckets=LATENCY_BUCKETS_S, registry=r)
        self.faces = prometheus.Gauge("edgefer_faces", "Faces in the last frame", registry=r)
        self.faces_total = prometheus.Counter("edgefer_faces_detected", "Faces detected", registry=r)
        self.dropped = prometheus.Counter("edgefer_dropped_frames", "Frames dropped by capture "
                                          "(processing behind)", registry=r)
        self.errors = prometheus.Counter("edgefer_errors", "Errors handled", ["kind"], registry=r)
        self.reconnects = prometheus.Counter("edgefer_source_reconnects", "Source reconnections",
                                             registry=r)
        self.source_up = prometheus.Gauge("edgefer_source_up", "1 when the source delivers frames",
                                          registry=r)
        self.llm = prometheus.Gauge("edgefer_llm", "LLM second-opinion counters", ["counter"],
                                    registry=r)
        self.llm_queue = prometheus.Gauge("edgefer_llm_queue", "Faces waiting for the LLM",
                                          registry=r)
        self._source_totals: dict[str, int] = {}  # what the counters above have counted
        self.http_refused = prometheus.Counter(
            "edgefer_http_refused", "HTTP requests refused: token missing or wrong (401), too "
            "many clients (503)", ["reason"], registry=r)

    def update_source(self, reconnects: int, dropped: int) -> None:
        """Capture's running totals, as the counters' growth (``rate()`` works on them)."""
        for name, counter, total in (("reconnects", self.reconnects, reconnects),
                                     ("dropped", self.dropped, dropped)):
            counter.inc(max(0, total - self._source_totals.get(name, 0)))
            self._source_totals[name] = total

    def update_llm(self, stats: dict[str, Any], queued: int) -> None:
        for key, value in stats.items():
            self.llm.labels(counter=key).set(value)
        self.llm_queue.set(queued)

    def render(self) -> bytes:
        prometheus = require("prometheus_client", "kiosk")
        return prometheus.generate_latest(self.registry)


class _RaisingFileHandler(logging.handlers.RotatingFileHandler):
    """Lets a write error (disk full) reach the caller, which disables the output and counts
    it, instead of printing logging's traceback on every event."""

    def handleError(self, record: logging.LogRecord) -> None:
        raise  # called only from the handler's except block


class EventLog:
    """JSON lines for track events, to stdout or a size-rotated file; flushed per event."""

    def __init__(self, path: str | None = None, max_bytes: int = 10_000_000, backups: int = 5
                 ) -> None:
        self._stream: TextIO | None = None
        self._handler: logging.Handler | None = None
        if path in (None, "", "-"):
            self._stream = sys.stdout
        else:  # its folder is made if missing: a kiosk's log folder may not exist on first boot
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._handler = _RaisingFileHandler(
                    path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
            except OSError as err:
                raise OutputError(f"cannot write the events log {path}: {err.strerror}: "
                                  f"{err.filename}") from err
            self._handler.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, event: dict[str, Any]) -> None:
        line = json.dumps({"ts": round(time.time(), 3), **event}, default=str)
        if self._stream is not None:
            self._stream.write(line + "\n")
            self._stream.flush()
        elif self._handler is not None:
            self._handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
            self._handler.flush()

    def close(self) -> None:
        if self._handler is not None:
            self._handler.close()


class SystemdNotifier:
    """``sd_notify`` without libsystemd: READY, WATCHDOG keep-alives and STOPPING.

    Does nothing when not started by systemd (no ``NOTIFY_SOCKET``).
    """

    def __init__(self) -> None:
        self._address = os.environ.get("NOTIFY_SOCKET")
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        self._interval_s = usec / 2e6 if usec else None
        self._last = 0.0

    def _send(self, message: str) -> None:
        if not self._address:
            return
        address = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(message.encode(), address)
            except OSError as err:
                log.debug("sd_notify failed: %s", err)

    def ready(self) -> None:
        self._send("READY=1")

    def watchdog(self) -> None:
        """Call every loop iteration; sends at half the watchdog interval."""
        if self._interval_s is not None and time.monotonic() - self._last >= self._interval_s:
            self._last = time.monotonic()
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")
