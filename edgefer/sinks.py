"""Output sinks: per-face rows to CSV, JSON lines or Parquet, and annotated video.

Sinks are context managers. CSV and JSON-lines rows are flushed to the OS as each frame's rows
are written, so a killed process loses nothing already produced; Parquet (columnar, written in
row groups) is flushed every ``PARQUET_ROW_GROUP`` rows and at close.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.errors import InputError, OutputError, require
from edgefer.types import EMOTIONS, FrameResult, LabelSource, label_name

ROW_COLUMNS: tuple[str, ...] = (
    "file", "frame", "time_s", "track_id", "x", "y", "w", "h", "det_score",
    *(f"p_{e}" for e in EMOTIONS),
    "label", "confidence", "smoothed_label", "cnn_label", "llm_label", "final_label", "final_source",
)
TABLE_SUFFIXES = (".csv", ".jsonl", ".parquet")
WRITABLE_VIDEO_SUFFIXES = (".mp4", ".avi")  # what VideoSink writes (inputs: sources.py)
PARQUET_ROW_GROUP = 4096
_INTEGER_COLUMNS = ("frame", "track_id")
_TEXT_COLUMNS = ("file", "label", "smoothed_label", "cnn_label", "llm_label", "final_label",
                 "final_source")


def parquet_schema(columns: tuple[str, ...] = ROW_COLUMNS):
    """The Parquet types of the row columns, fixed rather than inferred from the first rows, so
    that every part of a dataset (``score --ray``), empty ones included, has the same schema."""
    pa = require("pyarrow", "parquet")
    return pa.schema([(c, pa.int64() if c in _INTEGER_COLUMNS else
                          pa.string() if c in _TEXT_COLUMNS else pa.float64()) for c in columns])


def face_rows(file: str, result: FrameResult) -> list[dict[str, Any]]:
    """One row per face of a processed frame, in ``ROW_COLUMNS`` order; unset labels are ""."""
    faces = result.faces
    raw_labels, cnn_labels = faces.raw_labels, faces.cnn_labels
    rows = []
    for i in range(len(faces)):
        x0, y0, x1, y1 = (float(v) for v in faces.xyxy[i])
        row: dict[str, Any] = {
            "file": file, "frame": result.frame.index, "time_s": round(result.frame.timestamp_s, 4),
            "track_id": int(faces.track_ids[i]), "x": round(x0, 1), "y": round(y0, 1),
            "w": round(x1 - x0, 1), "h": round(y1 - y0, 1), "det_score": round(float(faces.scores[i]), 4),
        }
        row.update({f"p_{e}": round(float(p), 5) for e, p in zip(EMOTIONS, faces.probs[i], strict=False)})
        row.update({
            "label": _name(raw_labels[i]),
            "confidence": round(float(faces.probs[i].max()), 5),
            "smoothed_label": _name(faces.smoothed_labels[i]), "cnn_label": _name(cnn_labels[i]),
            "llm_label": _name(faces.llm_labels[i]), "final_label": _name(faces.final_labels[i]),
            "final_source": LabelSource(int(faces.label_sources[i])).label,
        })
        rows.append(row)
    return rows


def _name(index: np.integer) -> str:
    return label_name(int(index), unset="")


def check_output(path: str | Path, overwrite: bool, suffixes: tuple[str, ...],
                 flag: str | None = None) -> Path:
    """Validate an output path before any work starts: suffix, existence, writable folder.
    ``flag``, the option that named it, leads a wrong type's message (a command has several)."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{flag + ': ' if flag else ''}unsupported output type "
                         f"{path.suffix or '(none)'!r} for {path}; use one of {', '.join(suffixes)}")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder is not writable: {folder}")
    return path


class TableSink:
    """Rows to ``.csv``, ``.jsonl`` or ``.parquet`` chosen by the path's extension."""

    def __init__(self, path: str | Path, overwrite: bool = False,
                 columns: tuple[str, ...] = ROW_COLUMNS, append: bool = False) -> None:
        self.path = path if append else check_output(path, overwrite, TABLE_SUFFIXES)
        self.path = Path(self.path)
        self.columns = columns
        self.kind = self.path.suffix.lower().lstrip(".")
        self._parquet_buffer: list[dict[str, Any]] = []
        self._writer: Any = None
        self._closed = False
        try:
            self._open(append)
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err.strerror}") from err

    def _open(self, append: bool) -> None:
        if self.kind == "parquet":
            self._handle = None
            return
        new_file = not append or not self.path.exists() or self.path.stat().st_size == 0
        self._handle = self.path.open("a" if append else "w", newline="", encoding="utf-8")
        if self.kind == "csv":
            self._writer = csv.DictWriter(self._handle, fieldnames=self.columns,
                                          extrasaction="ignore")
            if new_file:
                self._writer.writeheader()  # reaches the disk with the first rows or at close

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        try:
            self._write(rows)
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err.strerror}") from err

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if self.kind == "csv":
            self._writer.writerows(rows)
        elif self.kind == "jsonl":
            self._handle.write("".join(json.dumps({c: r.get(c) for c in self.columns},
                                                  ensure_ascii=False) + "\n"
                                       for r in rows))
        else:
            self._parquet_buffer += rows
            if len(self._parquet_buffer) >= PARQUET_ROW_GROUP:
                self._flush_parquet()
            return
        self._handle.flush()

    def _flush_parquet(self, final: bool = False) -> None:
        """Write the buffered rows as a row group; at close, a table without rows still gets
        its file (schema only), so "no face found" and "not scored" look different."""
        if not self._parquet_buffer and not (final and self._writer is None):
            return
        pa = require("pyarrow", "parquet")
        parquet = require("pyarrow.parquet", "parquet")
        schema = parquet_schema(self.columns)
        table = pa.Table.from_pylist([{c: r.get(c) for c in self.columns}
                                      for r in self._parquet_buffer], schema=schema)
        if self._writer is None:
            self._writer = parquet.ParquetWriter(str(self.path), schema)
        self._writer.write_table(table)
        self._parquet_buffer = []

    def close(self) -> None:
        """Flush and close; a failure here (disk full) is reported as an OutputError once."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.kind == "parquet":
                self._flush_parquet(final=True)
                if self._writer is not None:
                    self._writer.close()
            elif self._handle is not None:
                self._handle.close()
        except OSError as err:
            raise OutputError(f"cannot finish {self.path}: {err.strerror}") from err
        finally:
            self._writer = None
            self._handle = None

    def __enter__(self) -> TableSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoSink:
    """Annotated frames to an ``.mp4`` (MPEG-4 Part 2, which every OpenCV build can write)."""

    def __init__(self, path: str | Path, fps: float, overwrite: bool = False) -> None:
        self.path = check_output(path, overwrite, WRITABLE_VIDEO_SUFFIXES)
        self.fps = fps
        self._writer: Any = None

    def write(self, image: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"))
            height, width = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise OutputError(f"cannot open video writer for {self.path}")
        self._writer.write(image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
