"""What the live loop writes (per-face rows, annotated video, track events) and how it survives
an output that stops working: the failing output is disabled, counted and logged (at most every
10 s), and the loop goes on with the others."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.apps.telemetry import EventLog
from edgefer.errors import ConfigError, OutputError
from edgefer.sinks import TableSink, VideoSink, face_rows
from edgefer.types import FrameResult

log = logging.getLogger(__name__)

ERROR_LOG_INTERVAL_S = 10.0


START = "{start}"  # in an output's name: the run's start time, so a restart keeps the old file


def with_start(path: Path, started: float) -> Path:
    """``path`` with ``{start}`` replaced by the local time ``started`` (20261206-231500)."""
    return Path(str(path).replace(START, time.strftime("%Y%m%d-%H%M%S", time.localtime(started))))


@dataclass(frozen=True)
class OutputOptions:
    table: Path | None = None  # per-face rows: .csv / .jsonl / .parquet
    record: Path | None = None  # annotated video (.mp4)
    record_fps: float = 30.0
    events: str | None = None  # None: no event stream; "-": stdout; else a rotating file
    snapshot_dir: Path | None = None  # where the window's s key saves
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not self.record_fps > 0:
            raise ConfigError(f"record_fps must be > 0, got {self.record_fps}")


class ErrorReporter:
    """Counts handled errors by kind and logs them, at most one line per interval."""

    def __init__(self, on_error: Callable[[str], None] | None = None,
                 interval_s: float = ERROR_LOG_INTERVAL_S) -> None:
        self.count = 0
        self._on_error = on_error
        self._interval_s = interval_s
        self._last_log = -np.inf

    def report(self, kind: str, err: Exception) -> None:
        self.count += 1
        if self._on_error is not None:
            self._on_error(kind)
        now = time.monotonic()
        if now - self._last_log >= self._interval_s:
            self._last_log = now
            log.error("%s error (%d so far): %s", kind, self.count, err)


class Outputs:
    """Opens the configured outputs together and closes them in order; ``write`` never raises
    for an output that fails: that output is disabled and reported instead."""

    def __init__(self, options: OutputOptions, source_name: str, errors: ErrorReporter) -> None:
        self.options = options
        self._source_name = source_name
        self._errors = errors
        self._stack = ExitStack()
        self._writers: dict[str, Callable[[Any], None]] = {}

    def __enter__(self) -> Outputs:
        o, started = self.options, time.time()
        table, record = (None if p is None else self._fresh(p, started)
                         for p in (o.table, o.record))
        with ExitStack() as opening:
            if o.events:  # first: an append-only log, so failing later leaves it unharmed
                events = EventLog(o.events if o.events == "-"
                                  else str(with_start(Path(o.events), started)))
                opening.callback(self._close_quietly, events)
                self._writers["events"] = events.emit
            if table is not None:
                sink = TableSink(table, o.overwrite)
                opening.callback(self._close_quietly, sink)
                self._writers["table"] = sink.write
            if record is not None:
                self._writers["video"] = opening.enter_context(
                    VideoSink(record, o.record_fps, o.overwrite)).write
            self._stack = opening.pop_all()
        return self

    def _fresh(self, template: Path, started: float) -> Path:
        """The output's path for this run: ``{start}`` filled in (numbered if a run that
        started in the same second left one), or ``template`` itself, refused when it exists
        and may not be replaced (a restarted kiosk's table: say how to keep both)."""
        path = with_start(template, started)
        if START in str(template):
            count = 1
            while path.exists():
                count += 1
                path = with_start(template.with_name(template.stem + f"-{count}" +
                                                     template.suffix), started)
        elif path.exists() and not self.options.overwrite:
            raise OutputError(f"{path} exists: put {START} in its name to keep every run's file, "
                              "or replace it (live: --overwrite; kiosk: outputs.overwrite = true)")
        return path

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def wants_image(self) -> bool:
        """The annotated image is needed (a video is being recorded)."""
        return "video" in self._writers

    def write(self, result: FrameResult, image: np.ndarray | None) -> None:
        if "table" in self._writers:
            self._write("table", face_rows(self._source_name, result))
        if image is not None and "video" in self._writers:
            self._write("video", image)

    def emit(self, events: list[dict[str, Any]]) -> None:
        if "events" in self._writers:
            for event in events:
                self._write("events", event)

    def _write(self, name: str, item: Any) -> None:
        try:
            self._writers[name](item)
        except (OutputError, OSError) as err:
            del self._writers[name]  # still closed by the exit stack
            self._errors.report("output", err)
            log.error("output %s failed: %s; it is disabled, the loop goes on", name, err)

    @staticmethod
    def _close_quietly(sink: TableSink | EventLog) -> None:
        """Close one output; a failure (the disk that failed its writes) is logged, and the
        outputs after it still close."""
        try:
            sink.close()
        except (OutputError, OSError) as err:
            log.error("closing an output failed: %s", err)
