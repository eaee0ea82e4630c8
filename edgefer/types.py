"""Boundary types that cross pipeline stages.

Stages fill columns of these few containers; none invents its own. Units are in the names:
pixel boxes are ``xyxy`` in the frame's pixel grid, keypoints are pixels too (the MediaPipe
adapter converts its normalized keypoints once, in ``detect``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields

import numpy as np


class Emotion(enum.IntEnum):
    """The seven classes in FER2013 order, which is also every model's output order."""

    ANGRY = 0
    DISGUST = 1
    FEAR = 2
    HAPPY = 3
    SAD = 4
    SURPRISE = 5
    NEUTRAL = 6

    @property
    def label(self) -> str:
        return self.name.lower()


EMOTIONS: tuple[str, ...] = tuple(e.label for e in Emotion)


class Keypoint(enum.IntEnum):
    """BlazeFace's six keypoints, which the MediaPipe Tasks result leaves unnamed.

    "Right" and "left" are the subject's, as in MediaPipe: the right eye appears on the
    image's left side for a frontal face.
    """

    RIGHT_EYE = 0
    LEFT_EYE = 1
    NOSE_TIP = 2
    MOUTH = 3
    RIGHT_EAR = 4
    LEFT_EAR = 5


@dataclass(frozen=True)
class Frame:
    """One decoded picture from a source, BGR uint8 as OpenCV gives it."""

    index: int
    timestamp_s: float
    image: np.ndarray
    source: str = ""
    still: bool = False  # a photo, not a frame of a stream: the detector may look harder

    @property
    def timestamp_ms(self) -> int:
        return round(self.timestamp_s * 1000)


UNKNOWN = "unknown"  # the name of an unset label (-1): never a class, never "neutral"


def label_name(index: int, unset: str = UNKNOWN) -> str:
    """The class name of a label index; -1 (unset) reads as ``unset``, never as a class:
    ``"unknown"`` where people read it (events, the page, the picture), ``""`` in the rows'
    table cells, where an empty cell is a missing value to every CSV and Parquet reader."""
    return EMOTIONS[index] if 0 <= index < len(EMOTIONS) else unset


class LabelSource(enum.IntEnum):
    """Who gave a face's final label (``Faces.label_sources``).

    ``CNN`` is the classifier's label, smoothed over the track when the face is tracked (and
    recalibrated by the fitted model under policy ``learned``); ``LLM`` is the vision LLM's
    answer (policy ``override``); ``FUSE`` a mix of both (a weighted one under ``fuse``, the
    fitted model's under ``learned``).
    """

    UNKNOWN = -1
    CNN = 0
    LLM = 1
    FUSE = 2

    @property
    def label(self) -> str:
        return "" if self is LabelSource.UNKNOWN else self.name.lower()


def _column(values: np.ndarray | None, shape: tuple[int, ...], dtype: type,
            fill: float = 0) -> np.ndarray:
    if values is None:
        return np.full(shape, fill, dtype=dtype)
    array = np.asarray(values, dtype=dtype)
    if array.shape != shape:
        raise ValueError(f"expected shape {shape}, got {array.shape}")
    return array


@dataclass
class Faces:
    """All faces of one frame as columns, one row per face.

    The detector fills ``xyxy``, ``scores`` and ``keypoints``; the classifier ``probs``; the
    tracker ``track_ids``; the smoother ``smoothed_probs`` and ``smoothed_labels``; the second
    opinion ``llm_probs`` and ``llm_labels``; and ``decide_labels`` (``edgefer.decide``), the one
    place that decides what is shown, ``final_labels`` and ``label_sources``. The pipeline fills
    every column on every frame. Labels are indices into ``EMOTIONS``; -1 means unset and reads
    as ``"unknown"`` (``label_name``), never as a class. ``faces[mask]`` and ``faces[indices]``
    select rows and keep every column.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    probs: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N, 7) calibrated CNN
    track_ids: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N,) -1: untracked
    smoothed_probs: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N, 7)
    smoothed_labels: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N,) -1: unset
    llm_probs: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N, 7) NaN: no answer
    llm_labels: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N,) -1: no answer
    final_labels: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N,) -1: unset
    label_sources: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N,) LabelSource

    def __post_init__(self) -> None:
        n = len(np.asarray(self.xyxy).reshape(-1, 4))
        classes = len(Emotion)
        self.xyxy = _column(np.asarray(self.xyxy).reshape(-1, 4), (n, 4), np.float32)
        self.scores = _column(self.scores, (n,), np.float32)
        self.keypoints = _column(self.keypoints, (n, len(Keypoint), 2), np.float32)
        self.probs = _column(self.probs, (n, classes), np.float32)
        self.track_ids = _column(self.track_ids, (n,), np.int64, -1)
        self.smoothed_probs = _column(self.smoothed_probs, (n, classes), np.float32)
        self.smoothed_labels = _column(self.smoothed_labels, (n,), np.int64, -1)
        self.llm_probs = _column(self.llm_probs, (n, classes), np.float32, np.nan)
        self.llm_labels = _column(self.llm_labels, (n,), np.int64, -1)
        self.final_labels = _column(self.final_labels, (n,), np.int64, -1)
        self.label_sources = _column(self.label_sources, (n,), np.int8, LabelSource.UNKNOWN)

    @classmethod
    def empty(cls) -> Faces:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, len(Keypoint), 2)))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, rows: np.ndarray | slice | int) -> Faces:
        """The selected rows (boolean mask, indices, slice or one index) with every column."""
        if isinstance(rows, (int, np.integer)):
            rows = [int(rows)]
        return Faces(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    @property
    def raw_labels(self) -> np.ndarray:
        """The argmax of ``probs`` per face; -1 for faces not classified yet (all-zero rows)."""
        if not len(self):
            return np.zeros(0, dtype=np.int64)
        return np.where(self.probs.any(axis=1), self.probs.argmax(axis=1), -1).astype(np.int64)

    @property
    def cnn_labels(self) -> np.ndarray:
        """The classifier's label per face: smoothed over the track where the smoother ran,
        else ``raw_labels``."""
        return np.where(self.smoothed_labels >= 0, self.smoothed_labels, self.raw_labels)

    def cnn_probs(self, rows: int | slice | np.ndarray = slice(None)) -> np.ndarray:
        """The probabilities behind ``cnn_labels`` for ``rows`` (an index, mask or slice):
        smoothed over the track where the smoother ran, else the classifier's own."""
        smoothed, raw = self.smoothed_probs[rows], self.probs[rows]
        return np.where(smoothed.any(axis=-1, keepdims=True), smoothed, raw)


@dataclass(frozen=True)
class FrameResult:
    """What the pipeline yields per processed frame."""

    frame: Frame
    faces: Faces
    latency_ms: dict[str, float] = field(default_factory=dict)


# Other datasets' and LLMs' names for the seven classes.
SYNONYMS: dict[str, str] = {
    "anger": "angry", "angry": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happiness": "happy", "happy": "happy", "joy": "happy",
    "sadness": "sad", "sad": "sad",
    "surprise": "surprise", "surprised": "surprise",
    "neutral": "neutral", "calm": "neutral",
}


def canonical_label(name: str) -> str | None:
    """Map a label or synonym to one of the seven class names, or None if it is not one."""
    return SYNONYMS.get(name.strip().lower())
