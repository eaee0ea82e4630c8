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
    ({"model": "long"}, "short' or 'full"),
    ({"mode": "live"}, "mode"),
    ({"min_confidence": 1.5}, "min_confidence"),
])
def test_invalid_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DetectorOptions(**kwargs)
