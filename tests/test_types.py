from __future__ import annotations

import numpy as np
import pytest

from edgefer.types import EMOTIONS, Emotion, Faces, Frame


def test_emotion_order_is_fer2013():
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert Emotion.from_label(" Happy ") is Emotion.HAPPY


def test_frame_timestamp_ms_rounds():
    assert Frame(3, 0.0335, np.zeros((2, 2, 3), np.uint8)).timestamp_ms == 34


@pytest.mark.parametrize(("xyxy", "scores", "keypoints", "error"), [
    (np.zeros((2, 4)), np.zeros(2), np.zeros((2, 6, 2)), None),
    (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2)), None),
    (np.zeros((2, 4)), np.zeros(3), np.zeros((2, 6, 2)), ValueError),
    (np.zeros((2, 4)), np.zeros(2), np.zeros((2, 5, 2)), ValueError),
])
def test_faces_checks_shapes(xyxy, scores, keypoints, error):
    if error:
        with pytest.raises(error):
            Faces(xyxy, scores, keypoints)
    else:
        faces = Faces(xyxy, scores, keypoints)
        assert len(faces) == len(xyxy)
        assert faces.probs.shape == (len(xyxy), 7)
        assert (faces.track_ids == -1).all()


def test_faces_data_columns_must_match_rows():
    with pytest.raises(ValueError, match="data column"):
        Faces(np.zeros((2, 4)), np.zeros(2), np.zeros((2, 6, 2)), data={"x": np.zeros(3)})


def test_labels_and_confidences():
    faces = Faces(np.zeros((2, 4)), np.zeros(2), np.zeros((2, 6, 2)))
    faces.probs[0, 3] = 0.9
    faces.probs[1, 6] = 0.6
    assert faces.labels.tolist() == [3, 6]
    np.testing.assert_allclose(faces.confidences, [0.9, 0.6])
