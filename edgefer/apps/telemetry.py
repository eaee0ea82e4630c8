"""Health, Prometheus metrics, the event stream and systemd notifications for long runs."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
        self.dropped = prometheus.Gauge("edgefer_dropped_frames", "Frames dropped by capture "
                                        "(processing behind)", registry=r)
        self.errors = prometheus.Counter("edgefer_errors", "Errors handled", ["kind"], registry=r)
        self.reconnects = prometheus.Gauge("edgefer_source_reconnects", "Source reconnections",
                                           registry=r)
        self.source_up = prometheus.Gauge("edgefer_source_up", "1 when the source delivers frames",
                                          registry=r)
        self.llm = prometheus.Gauge("edgefer_llm", "LLM second-opinion counters", ["counter"],
                                    registry=r)
        self.llm_queue = prometheus.Gauge("edgefer_llm_queue", "Faces waiting for the LLM",
                                          registry=r)

    def update_llm(self, stats: dict[str, Any], queued: int) -> None:
        for key, value in stats.items():
            self.llm.labels(counter=key).set(value)
        self.llm_queue.set(queued)

    def render(self) -> bytes:
        prometheus = require("prometheus_client", "kiosk")
        return prometheus.generate_latest(self.registry)


class HealthServer:
    """``/healthz`` (503 when no frame was processed for ``stale_s``) and ``/metrics``."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 9108,
                 stale_s: float = 10.0) -> None:
        self.metrics = metrics
        self.stale_s = stale_s
        self.last_frame_at = time.monotonic()
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler())
        except OSError as err:
            raise OutputError(f"cannot listen on {host}:{port}: {err.strerror}") from err
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="edgefer-http")

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def beat(self) -> None:
        self.last_frame_at = time.monotonic()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    self._send(200, server.metrics.render(), "text/plain; version=0.0.4")
                elif self.path.startswith("/healthz"):
                    age = time.monotonic() - server.last_frame_at
                    ok = age <= server.stale_s
                    body = json.dumps({"ok": ok, "seconds_since_frame": round(age, 3)})
                    self._send(200 if ok else 503, body.encode(), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def __enter__(self) -> HealthServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class EventLog:
    """JSON lines for track events, to stdout or a size-rotated file; flushed per event."""

    def __init__(self, path: str | None = None, max_bytes: int = 10_000_000, backups: int = 5
                 ) -> None:
        self._stream: TextIO | None = None
        self._handler: logging.Handler | None = None
        if path in (None, "", "-"):
            self._stream = sys.stdout
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
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
