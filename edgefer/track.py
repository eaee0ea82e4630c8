"""Face tracking by box overlap: stable ids across frames, tracks that end after a timeout.

Like norfair, the tracker matches geometry only; whatever the other stages attach to a face
travels with it untouched. ``update(None, t)`` advances time on frames where detection was
skipped, so tracks can still expire.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

import numpy as np

from edgefer.errors import ConfigError
from edgefer.types import Faces

GAPS_KEPT = 9  # recent gaps between frames whose median is the usual one


@dataclass(frozen=True)
class TrackerOptions:
    iou_threshold: float = 0.2  # below this a detection starts a new track
    timeout_s: float = 1.0  # a track unseen this long ends; at least 1.5 usual frame gaps

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold < 1.0:
            raise ConfigError(f"iou_threshold must be in (0, 1), got {self.iou_threshold}; "
                              "0.2 suits 10-30 frames/s")
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be > 0, got {self.timeout_s}")


@dataclass
class Track:
    track_id: int
    xyxy: np.ndarray
    last_seen_s: float
    hits: int = 1


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection-over-union of ``(N, 4)`` and ``(M, 4)`` xyxy boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(1, -1, 4)
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def greedy_match(similarity: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) taken in order of decreasing similarity, each row and column once.

    With a handful of faces per frame greedy matching equals the Hungarian optimum in practice
    and needs no SciPy.
    """
    pairs: list[tuple[int, int]] = []
    if similarity.size == 0:
        return pairs
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    order = np.argsort(-similarity, axis=None, kind="stable")
    for flat in order:
        row, col = divmod(int(flat), similarity.shape[1])
        if similarity[row, col] < threshold:
            break
        if row not in used_rows and col not in used_cols:
            pairs.append((row, col))
            used_rows.add(row)
            used_cols.add(col)
    return pairs


class IouTracker:
    """Assigns ``faces.track_ids``; ended tracks are collected for ``pop_ended``."""

    def __init__(self, options: TrackerOptions = TrackerOptions()) -> None:
        self.options = options
        self.tracks: dict[int, Track] = {}
        self._ended: list[Track] = []
        self._next_id = 1
        self._last_time_s = -np.inf
        self._gaps: deque[float] = deque(maxlen=GAPS_KEPT)

    def update(self, faces: Faces | None, time_s: float) -> Faces | None:
        if time_s < self._last_time_s:
            raise ValueError(f"tracker time went backwards: {time_s} < {self._last_time_s}")
        gap = time_s - self._last_time_s if np.isfinite(self._last_time_s) else None
        # Expire first: a track unseen for longer than the timeout does not take a face just
        # because no frame came in between (a source that was away for minutes)...
        self._expire(time_s, gap)
        if gap is not None:
            self._gaps.append(gap)
        self._last_time_s = time_s
        if faces is not None and len(faces):
            self._assign(faces, time_s)
        return faces

    def _timeout_s(self, gap: float | None) -> float:
        """... but frames sampled further apart than the timeout (``--max-fps 1`` on 29.97
        frames/s) still link: a track lasts at least one and a half of the usual gaps between
        frames, the median of the last few (one long gap does not stretch it), counting this
        frame's own gap while there are too few to tell: a stream's second frame joins its
        first however late it comes (sampling and an outage look alike there)."""
        gaps = list(self._gaps) + ([gap] if gap is not None and len(self._gaps) < 3 else [])
        return max(self.options.timeout_s, 1.5 * statistics.median(gaps)) if gaps \
            else self.options.timeout_s

    def _assign(self, faces: Faces, time_s: float) -> None:
        ids = list(self.tracks)
        boxes = np.array([self.tracks[i].xyxy for i in ids]).reshape(-1, 4)
        pairs = greedy_match(iou_matrix(boxes, faces.xyxy), self.options.iou_threshold)
        matched = {col: ids[row] for row, col in pairs}
        # New tracks are numbered left to right, so ids do not depend on detector output order.
        for col in sorted(range(len(faces)), key=lambda c: tuple(faces.xyxy[c])):
            track_id = matched.get(col)
            if track_id is None:
                track_id = self._start(faces.xyxy[col], time_s)
            else:
                track = self.tracks[track_id]
                track.xyxy = faces.xyxy[col].copy()
                track.last_seen_s = time_s
                track.hits += 1
            faces.track_ids[col] = track_id

    def _start(self, xyxy: np.ndarray, time_s: float) -> int:
        track_id = self._next_id
        self._next_id += 1
        self.tracks[track_id] = Track(track_id, xyxy.copy(), time_s)
        return track_id

    def _expire(self, time_s: float, gap: float | None) -> None:
        if not self.tracks:  # nothing to end: no timeout to work out, on most empty frames
            return
        timeout_s = self._timeout_s(gap)
        for track_id in [i for i, t in self.tracks.items() if time_s - t.last_seen_s > timeout_s]:
            self._ended.append(self.tracks.pop(track_id))

    def end_all(self) -> None:
        """End every open track and restart clock and ids (a new file or stream follows)."""
        self._ended.extend(self.tracks.values())
        self.tracks.clear()
        self._last_time_s = -np.inf
        self._gaps.clear()
        self._next_id = 1

    def reserve_ids(self, next_id: int) -> None:
        """Start numbering new tracks at ``next_id`` (a resumed file keeps its earlier ids)."""
        self._next_id = max(self._next_id, next_id)

    def pop_ended(self) -> list[Track]:
        ended, self._ended = self._ended, []
        return ended
