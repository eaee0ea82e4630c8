"""Per-file and per-track summaries of a scoring run, and the emotion-over-time plot."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.errors import require
from edgefer.smooth import Smoother, SmoothingOptions
from edgefer.types import EMOTIONS, FrameResult


@dataclass
class _TrackStats:
    first_s: float
    last_s: float
    labels: Counter[str] = field(default_factory=Counter)
    # How often the written label and the classifier's per-frame label changed along the track:
    # the flicker an operator sees, and how much of the raw flicker smoothing removed (open
    # mouths while talking flip single frames to surprise or angry).
    label_changes: int = 0
    raw_label_changes: int = 0
    _previous: tuple[str, str] | None = None

    def observe(self, time_s: float, label: str, raw_label: str) -> None:
        """Count one face row of this track at ``time_s``."""
        self.last_s = time_s
        self.labels[label] += 1
        if self._previous is not None:
            self.label_changes += label != self._previous[0]
            self.raw_label_changes += raw_label != self._previous[1]
        self._previous = (label, raw_label)

    @property
    def seconds(self) -> float:
        return self.last_s - self.first_s


@dataclass
class _FileStats:
    frames: int = 0
    face_rows: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    tracks: dict[int, _TrackStats] = field(default_factory=dict)
    timeline: list[tuple[float, int, np.ndarray]] = field(default_factory=list)
    llm_events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    warning: str | None = None  # scored, but the file was damaged (truncated, unreadable frames)


def _shares(labels: Counter[str]) -> dict[str, float]:
    total = sum(labels.values())
    return {e: round(labels[e] / total, 4) if total else 0.0 for e in EMOTIONS}


def _dominant(labels: Counter[str]) -> str | None:
    return labels.most_common(1)[0][0] if labels else None


def _change_rates(changes: int, raw_changes: int, seconds: float) -> dict[str, Any]:
    """Label changes of the written and the per-frame label, and both per minute of face time
    (None for tracks seen in a single instant)."""
    def per_minute(count: int) -> float | None:
        return round(60 * count / seconds, 2) if seconds > 0 else None

    return {"label_changes": changes, "raw_label_changes": raw_changes,
            "label_changes_per_min": per_minute(changes),
            "raw_label_changes_per_min": per_minute(raw_changes)}


def merge_summaries(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One ``--summary`` document from documents covering other files (``Summary.to_dict`` of
    each worker's files, in ``score --ray``), in the order given."""
    files: dict[str, Any] = {}
    for part in parts:
        files.update(part["files"])
    return {"files": files}


class Summary:
    """Accumulates results; ``to_dict`` gives the ``--summary`` JSON.

    Per-face probabilities over time are kept only with ``keep_timeline`` (for ``plot``): an
    overnight run over thousands of files needs counts, not every face's seven floats.
    """

    def __init__(self, keep_timeline: bool = False,
                 smoothing: SmoothingOptions | None = None) -> None:
        self.files: dict[str, _FileStats] = defaultdict(_FileStats)
        self.keep_timeline = keep_timeline
        # the run's smoothing: rows read back on a resume are smoothed again for the plot
        self.smoothing = smoothing or SmoothingOptions()
        self.llm_stats: dict[str, Any] | None = None  # the second opinion's counters, when on
        self.model = ""  # the manifest name of the model that scored: every summary says which

    def add(self, file: str, result: FrameResult, rows: list[dict[str, Any]]) -> None:
        """Count one processed frame from the rows written for it (``face_rows``), so a resumed
        run, which reads the same rows back (``add_rows``), counts exactly the same."""
        stats = self.files[file]
        stats.frames += 1
        for i, row in enumerate(rows):
            self._count(stats, row)
            if self.keep_timeline:
                stats.timeline.append((result.frame.timestamp_s, row["track_id"],
                                       result.faces.smoothed_probs[i].copy()))

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        """Rows of a previous, interrupted run (``--resume``): counted as if just produced. The
        rows hold the per-frame probabilities; the plot's smoothed ones are computed again from
        them with the run's smoothing, as the pipeline computed them."""
        last_frame: dict[str, Any] = {}
        smoothers: dict[str, Smoother] = defaultdict(lambda: Smoother(self.smoothing))
        for row in rows:
            stats = self.files[row["file"]]
            if last_frame.get(row["file"]) != row["frame"]:
                stats.frames += 1
                last_frame[row["file"]] = row["frame"]
            self._count(stats, row)
            if self.keep_timeline:
                time_s, track_id = float(row["time_s"]), int(row["track_id"])
                probs = np.array([float(row[f"p_{e}"]) for e in EMOTIONS], dtype=np.float32)
                smoothed = smoothers[row["file"]].step(track_id, probs, time_s).probs.copy()
                stats.timeline.append((time_s, track_id, smoothed))

    @staticmethod
    def _count(stats: _FileStats, row: dict[str, Any]) -> None:
        """One face row: its written (``final_label``) and per-frame (``label``) labels."""
        time_s, label = float(row["time_s"]), row["final_label"]
        stats.face_rows += 1
        stats.labels[label] += 1
        track = stats.tracks.setdefault(int(row["track_id"]), _TrackStats(time_s, time_s))
        track.observe(time_s, label, row["label"])

    def add_events(self, file: str, events: list[dict[str, Any]]) -> None:
        """LLM answers for this file, including those that arrived after its last frame."""
        self.files[file].llm_events.extend(events)

    def dominant(self, file: str) -> str | None:
        """The most frequent label written for ``file`` so far."""
        return _dominant(self.files[file].labels) if file in self.files else None

    def fail(self, file: str, error: str) -> None:
        self.files[file].error = error

    def warn(self, file: str, warning: str) -> None:
        self.files[file].warning = warning

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"model": self.model} if self.model else {}
        document["files"] = {name: self._file_dict(stats) for name, stats in self.files.items()}
        return document if self.llm_stats is None else {**document, "llm": self.llm_stats}

    def _file_dict(self, stats: _FileStats) -> dict[str, Any]:
        if stats.error:
            return {"error": stats.error}
        llm_by_track: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for event in stats.llm_events:
            llm_by_track[event["track_id"]].append(event)
        tracks = stats.tracks.values()
        return {
            **({"warning": stats.warning} if stats.warning else {}),
            "frames": stats.frames, "face_rows": stats.face_rows, "tracks": len(stats.tracks),
            "dominant": _dominant(stats.labels), "share": _shares(stats.labels),
            **_change_rates(sum(t.label_changes for t in tracks),
                            sum(t.raw_label_changes for t in tracks),
                            sum(t.seconds for t in tracks)),
            "llm_answers": len(stats.llm_events),
            "per_track": {str(track_id): {
                "first_s": round(t.first_s, 3), "last_s": round(t.last_s, 3),
                "frames": sum(t.labels.values()), "dominant": _dominant(t.labels),
                "share": _shares(t.labels),
                **_change_rates(t.label_changes, t.raw_label_changes, t.seconds),
                "llm_answers": [{k: e[k] for k in ("asked_at_s", "cnn_label", "llm_label",
                                                   "llm_confidence")}
                                for e in llm_by_track.get(track_id, [])]}
                for track_id, t in stats.tracks.items()},
        }

    def plot(self, path: str | Path) -> bool:
        """Smoothed probability of each emotion over time: one panel per video, one line per
        emotion and track (tracks in different line styles). Photos, one instant each, have no
        panel; with no video at all nothing is written and False returned."""
        files = [(n, s) for n, s in self.files.items() if len({t for t, _, _ in s.timeline}) > 1]
        if not files:
            return False
        matplotlib = require("matplotlib", "plot")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from edgefer.annotate import COLORS

        figure, axes = plt.subplots(len(files), 1, figsize=(11, 2.8 * len(files)), squeeze=False)
        styles = ["-", "--", ":", "-."]
        for axis, (name, stats) in zip(axes[:, 0], files, strict=True):
            for k, track_id in enumerate(sorted({t for _, t, _ in stats.timeline})):
                points = [(t, p) for t, i, p in stats.timeline if i == track_id]
                times = np.array([t for t, _ in points])
                probs = np.stack([p for _, p in points])
                for j, emotion in enumerate(EMOTIONS):
                    bgr = COLORS[emotion]
                    axis.plot(times, probs[:, j], styles[k % len(styles)],
                              color=(bgr[2] / 255, bgr[1] / 255, bgr[0] / 255),
                              label=emotion if k == 0 else None, linewidth=1.2)
            axis.set_title(Path(name).name, fontsize=10)
            axis.set_ylim(0, 1)
            axis.set_ylabel("probability")
        axes[-1, 0].set_xlabel("time (s)")
        axes[0, 0].legend(ncol=7, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.35))
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return True
