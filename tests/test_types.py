from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from edgefer.types import EMOTIONS, UNKNOWN, Faces, Frame, label_name


def test_emotion_order_is_fer2013():
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


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


def test_unset_labels_are_unknown_not_neutral():
    faces = Faces(np.zeros((2, 4)), np.zeros(2), np.zeros((2, 6, 2)))
    assert faces.final_labels.tolist() == [-1, -1]
    assert faces.cnn_labels.tolist() == [-1, -1]  # unclassified: all-zero probabilities
    assert np.isnan(faces.llm_probs).all() and faces.llm_labels.tolist() == [-1, -1]
    assert [label_name(int(i)) for i in faces.final_labels] == [UNKNOWN, UNKNOWN]
    assert UNKNOWN not in EMOTIONS


def _filled(n: int) -> Faces:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), n).astype(np.float32)
    return Faces(rng.uniform(0, 100, (n, 4)), rng.uniform(size=n), rng.uniform(size=(n, 6, 2)),
                 probs=probs, track_ids=np.arange(n) + 10, smoothed_probs=probs[::-1].copy(),
                 smoothed_labels=probs[::-1].argmax(1), llm_probs=probs,
                 llm_labels=np.arange(n) % 7, final_labels=np.arange(n) % 7,
                 label_sources=np.arange(n) % 3)


@pytest.mark.parametrize("rows", [np.array([True, False, True, False]), np.array([3, 0]),
                                  slice(1, 3), 2])
def test_selection_keeps_every_column(rows):
    faces = _filled(4)
    picked = faces[rows]
    expected = np.arange(4)[rows].reshape(-1)
    assert len(picked) == len(expected)
    for f in fields(Faces):
        np.testing.assert_array_equal(getattr(picked, f.name), getattr(faces, f.name)[expected])


def test_cnn_label_is_the_smoothed_one_where_smoothed():
    faces = Faces(np.zeros((2, 4)), np.zeros(2), np.zeros((2, 6, 2)))
    faces.probs[:, 3] = 1.0
    faces.smoothed_labels[0] = 6
    assert faces.raw_labels.tolist() == [3, 3]
    assert faces.cnn_labels.tolist() == [6, 3]
