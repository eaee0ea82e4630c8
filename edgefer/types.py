"""Boundary types that cross pipeline stages.

Stages fill columns of these few containers; none invents its own. Units are in the names:
pixel boxes are ``xyxy`` in the frame's pixel grid, keypoints are pixels too (the MediaPipe
adapter converts its normalized keypoints once, in ``detect``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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

    @classmethod
    def from_label(cls, label: str) -> Emotion:
        return cls[label.strip().upper()]


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

    @property
    def timestamp_ms(self) -> int:
        return round(self.timestamp_s * 1000)


def _column(values: np.ndarray | None, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if values is None:
        return np.zeros(shape, dtype=dtype)
    array = np.asarray(values, dtype=dtype)
    if array.shape != shape:
        raise ValueError(f"expected shape {shape}, got {array.shape}")
    return array


@dataclass
class Faces:
    """All faces of one frame as columns, one row per face.

    The detector fills ``xyxy``, ``scores`` and ``keypoints``; alignment, classification,
    tracking and the second opinion fill the rest. ``data`` carries extra per-row columns
    (each an array of length ``len(self)``) that stages may add without changing this type.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    probs: np.ndarray = field(default=None)  # type: ignore[assignment]
    track_ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    smoothed_probs: np.ndarray = field(default=None)  # type: ignore[assignment]
    smoothed_labels: np.ndarray = field(default=None)  # type: ignore[assignment]
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(np.asarray(self.xyxy).reshape(-1, 4))
        self.xyxy = _column(np.asarray(self.xyxy).reshape(-1, 4), (n, 4), np.float32)
        self.scores = _column(self.scores, (n,), np.float32)
        self.keypoints = _column(self.keypoints, (n, len(Keypoint), 2), np.float32)
        self.probs = _column(self.probs, (n, len(Emotion)), np.float32)
        self.track_ids = _column(self.track_ids, (n,), np.int64) if self.track_ids is not None \
            else np.full(n, -1, dtype=np.int64)
        self.smoothed_probs = _column(self.smoothed_probs, (n, len(Emotion)), np.float32)
        self.smoothed_labels = _column(self.smoothed_labels, (n,), np.int64) \
            if self.smoothed_labels is not None else np.full(n, -1, dtype=np.int64)
        for name, column in self.data.items():
            if len(column) != n:
                raise ValueError(f"data column {name!r} has {len(column)} rows, expected {n}")

    @classmethod
    def empty(cls) -> Faces:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, len(Keypoint), 2)))

    def __len__(self) -> int:
        return len(self.xyxy)

    @property
    def labels(self) -> np.ndarray:
        """Per-face argmax of the classifier's probabilities."""
        return self.probs.argmax(axis=1) if len(self) else np.zeros(0, dtype=np.int64)

    @property
    def confidences(self) -> np.ndarray:
        return self.probs.max(axis=1) if len(self) else np.zeros(0, dtype=np.float32)


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
