"""Face detection with MediaPipe Tasks' BlazeFace, adapted once into ``Faces`` in pixels.

Two vendored models (``engines/blazeface``): ``short`` for faces within about 2 m of the camera
(webcams, kiosks, talking-head video) and ``full`` (sparse full-range) for small or distant
faces: group photos, rooms, stages. ``auto`` (the default) is ``short`` on video and, on a
still photo, both merged: the short-range model alone finds no face in most group photos, the
full-range model alone misses a third of tight close-ups, and a photo has no frame rate to keep.
Video files use MediaPipe's VIDEO mode, which needs strictly increasing timestamps; the detector
keeps its own monotonic clock so looping or concatenated sources never trip it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefer.errors import ConfigError, require
from edgefer.manifest import detector_path
from edgefer.track import iou_matrix
from edgefer.types import Faces, Frame, Keypoint

log = logging.getLogger(__name__)

MODES = ("image", "video")
DETECTOR_MODELS = ("auto", "short", "full")  # BlazeFace short range (~2 m), full range, both
SAME_FACE_IOU = 0.3  # a full-range box overlapping a short-range one this much is the same face


@dataclass(frozen=True)
class DetectorOptions:
    model: str = "auto"  # "auto" | "short" | "full"
    mode: str = "video"  # "image" for unrelated stills, "video" for frames of one stream
    min_confidence: float = 0.5
    min_suppression: float = 0.3

    def __post_init__(self) -> None:
        if self.model not in DETECTOR_MODELS:
            raise ConfigError(f"detector model must be one of {', '.join(DETECTOR_MODELS)}, "
                              f"got {self.model!r}")
        if self.mode not in MODES:
            raise ConfigError(f"detector mode must be one of {MODES}, got {self.mode!r}")
        for name in ("min_confidence", "min_suppression"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"detector {name} must be within [0, 1], got {value}")


class FaceDetector:
    """``detect(frame) -> Faces`` over MediaPipe's FaceDetector; a context manager."""

    def __init__(self, options: DetectorOptions = DetectorOptions()) -> None:
        self.options = options
        self._last_timestamp_ms = -1
        model = "short" if options.model == "auto" else options.model
        self._detector = _create(options, model)
        self._still_detector: Any = None  # auto: the full-range model for photos, made on demand
        self._mp = require("mediapipe")
        self._first = True

    def detect(self, frame: Frame) -> Faces:
        """Faces of one BGR frame, boxes and keypoints in the frame's pixels."""
        import cv2

        code = cv2.COLOR_BGR2RGB if frame.image.ndim == 3 else cv2.COLOR_GRAY2RGB
        rgb = cv2.cvtColor(frame.image, code)
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        # The first inference prints a LiteRT memory-alignment note straight to fd 2.
        with quiet_native_stderr() if self._first else contextlib.nullcontext():
            self._first = False
            if self.options.mode == "video":
                timestamp_ms = max(frame.timestamp_ms, self._last_timestamp_ms + 1)
                self._last_timestamp_ms = timestamp_ms
                result = self._detector.detect_for_video(image, timestamp_ms)
            else:
                result = self._detector.detect(image)
        faces = faces_from_mediapipe(result.detections, rgb.shape[1], rgb.shape[0])
        if self.options.model == "auto" and frame.still:
            far = faces_from_mediapipe(self._full_range().detect(image).detections, rgb.shape[1],
                                       rgb.shape[0])
            faces = add_new_faces(faces, far)
        return faces

    def _full_range(self) -> Any:
        if self._still_detector is None:
            self._still_detector = _create(DetectorOptions(
                "full", "image", self.options.min_confidence, self.options.min_suppression), "full")
        return self._still_detector

    def close(self) -> None:
        for detector in (self._detector, self._still_detector):
            if detector is not None:
                with quiet_native_stderr():
                    detector.close()
        self._detector = self._still_detector = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_new_faces(faces: Faces, more: Faces) -> Faces:
    """``faces`` and those of ``more`` that overlap none of them (keypoints and boxes of the
    faces both found stay those of ``faces``, whose framing the classifier was measured with)."""
    if not len(more):
        return faces
    if len(faces):
        more = more[iou_matrix(more.xyxy, faces.xyxy).max(axis=1) < SAME_FACE_IOU]
    return Faces(np.concatenate([faces.xyxy, more.xyxy]),
                 np.concatenate([faces.scores, more.scores]),
                 np.concatenate([faces.keypoints, more.keypoints]))


def faces_from_mediapipe(detections: list[Any], width: int, height: int) -> Faces:
    """Tasks detections (pixel boxes, normalized unnamed keypoints) to ``Faces`` in pixels."""
    if not detections:
        return Faces.empty()
    xyxy = np.array([[d.bounding_box.origin_x, d.bounding_box.origin_y,
                      d.bounding_box.origin_x + d.bounding_box.width,
                      d.bounding_box.origin_y + d.bounding_box.height] for d in detections],
                    dtype=np.float32)
    np.clip(xyxy, 0, [width, height, width, height], out=xyxy)
    scores = np.array([d.categories[0].score for d in detections], dtype=np.float32)
    keypoints = np.zeros((len(detections), len(Keypoint), 2), dtype=np.float32)
    for row, detection in enumerate(detections):
        for col, point in enumerate(detection.keypoints[:len(Keypoint)]):
            keypoints[row, col] = (point.x * width, point.y * height)
    return Faces(xyxy, scores, keypoints)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while MediaPipe's native code starts or stops.

    LiteRT prints INFO lines straight to fd 2 when a model loads and unloads, bypassing glog
    and Python logging; they would bury edgefer's own messages. Python-level output is
    unaffected outside the block, and nothing is hidden when debug logging is on.
    """
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _create(options: DetectorOptions, model: str) -> Any:
    os.environ.setdefault("GLOG_minloglevel", "2")
    require("mediapipe")
    from mediapipe.tasks.python import BaseOptions, vision

    mode = vision.RunningMode.VIDEO if options.mode == "video" else vision.RunningMode.IMAGE
    task_options = vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_path=str(detector_path(model))),
        running_mode=mode,
        min_detection_confidence=options.min_confidence,
        min_suppression_threshold=options.min_suppression,
    )
    log.debug("creating BlazeFace %s detector in %s mode", model, options.mode)
    with quiet_native_stderr():
        return vision.FaceDetector.create_from_options(task_options)
