"""Real MediaPipe BlazeFace on a real portrait; golden boxes in pixels with a stated tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.detect import DetectorOptions, FaceDetector
from edgefer.errors import ConfigError
from edgefer.types import Frame, Keypoint

# Measured once with the vendored models on grace_hopper.jpg (600x512); BlazeFace is
# deterministic on CPU, the tolerance covers XNNPACK differences between CPUs.
GOLDEN_XYXY = {"short": (171, 146, 365, 340), "full": (166, 130, 365, 329)}
TOLERANCE_PX = 6


@pytest.mark.parametrize("model", ["short", "full"])
@pytest.mark.parametrize("mode", ["image", "video"])
def test_portrait_golden_box(portrait, model, mode):
    with FaceDetector(DetectorOptions(model=model, mode=mode)) as detector:
        faces = detector.detect(Frame(0, 0.0, portrait))
    assert len(faces) == 1
    np.testing.assert_allclose(faces.xyxy[0], GOLDEN_XYXY[model], atol=TOLERANCE_PX)
    right_eye, left_eye = faces.keypoints[0, Keypoint.RIGHT_EYE], faces.keypoints[0, Keypoint.LEFT_EYE]
    assert right_eye[0] < left_eye[0]  # the subject's right eye is on the image's left
    x0, y0, x1, y1 = faces.xyxy[0]
    assert x0 < right_eye[0] < x1 and y0 < right_eye[1] < y1
    assert 0.5 < faces.scores[0] <= 1.0


def test_no_face_in_a_blank_frame():
    with FaceDetector(DetectorOptions(mode="image")) as detector:
        assert len(detector.detect(Frame(0, 0.0, np.zeros((240, 320, 3), np.uint8)))) == 0


def test_video_mode_survives_repeated_timestamps(portrait):
    with FaceDetector(DetectorOptions(mode="video")) as detector:
        for timestamp in (0.0, 0.0, 1.0, 0.5):  # a looping or restarted source
            assert len(detector.detect(Frame(0, timestamp, portrait))) == 1


def test_gray_frames_are_accepted(portrait):
    import cv2

    gray = cv2.cvtColor(portrait, cv2.COLOR_BGR2GRAY)
    with FaceDetector(DetectorOptions(mode="image")) as detector:
        assert len(detector.detect(Frame(0, 0.0, gray))) == 1


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"model": "long"}, "one of auto, short, full"),
    ({"mode": "live"}, "mode"),
    ({"min_confidence": 1.5}, "min_confidence"),
])
def test_invalid_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DetectorOptions(**kwargs)


def scene(portrait, face_height: int, at: tuple[int, int]) -> np.ndarray:
    """A 640x480 grey photo with the portrait scaled to ``face_height`` pixels at ``at``."""
    import cv2

    picture = cv2.resize(portrait, (face_height * 512 // 600, face_height),
                         interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 127, np.uint8)
    y, x = at
    canvas[y:y + face_height, x:x + picture.shape[1]] = picture
    return canvas


def test_auto_adds_the_full_range_model_on_photos_only(portrait):
    """A distant face (the portrait 100 pixels high) escapes the short-range model; ``auto``
    finds it with the full-range one on a photo, and runs the short-range model alone on video."""
    distant = scene(portrait, 100, (50, 50))
    with FaceDetector(DetectorOptions(model="short")) as short, \
            FaceDetector(DetectorOptions(model="full", mode="image")) as full, \
            FaceDetector(DetectorOptions(model="auto")) as auto:
        assert len(short.detect(Frame(0, 0.0, distant, still=True))) == 0
        far = full.detect(Frame(0, 0.0, distant, still=True))
        photo = auto.detect(Frame(0, 0.0, distant, still=True))
        video = auto.detect(Frame(1, 0.04, distant))
    assert len(far) == 1 and len(photo) == 1 and len(video) == 0
    np.testing.assert_array_equal(photo.xyxy, far.xyxy)


def test_auto_keeps_the_short_range_box_of_a_face_both_find(portrait):
    near = scene(portrait, 300, (180, 300))
    with FaceDetector(DetectorOptions(model="short")) as short, \
            FaceDetector(DetectorOptions(model="full", mode="image")) as full, \
            FaceDetector(DetectorOptions(model="auto")) as auto:
        expected = short.detect(Frame(0, 0.0, near, still=True))
        assert len(full.detect(Frame(0, 0.0, near, still=True))) == 1  # the same face, boxed apart
        photo = auto.detect(Frame(0, 0.0, near, still=True))
    assert len(expected) == 1
    np.testing.assert_array_equal(photo.xyxy, expected.xyxy)
    np.testing.assert_array_equal(photo.keypoints, expected.keypoints)
