"""Tracker and smoother behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.errors import ConfigError
from edgefer.smooth import Smoother, SmoothingOptions
from edgefer.track import IouTracker, TrackerOptions, greedy_match, iou_matrix
from edgefer.types import Faces


def faces_at(*boxes):
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    return Faces(boxes, np.ones(len(boxes)), np.zeros((len(boxes), 6, 2)))


def test_iou_by_hand():
    iou = iou_matrix([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    np.testing.assert_allclose(iou, [[50 / 150, 0.0, 1.0]])


def test_greedy_match_takes_best_pairs_first():
    similarity = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert sorted(greedy_match(similarity, 0.2)) == [(0, 0)]  # row 1's only good column is taken
    assert sorted(greedy_match(similarity, 0.05)) == [(0, 0), (1, 1)]


def test_ids_stable_and_independent_of_detection_order():
    tracker = IouTracker()
    first = tracker.update(faces_at([0, 0, 10, 10], [50, 50, 60, 60]), 0.0)
    ids = dict(zip(map(tuple, first.xyxy[:, :2].tolist()), first.track_ids.tolist(), strict=False))
    second = tracker.update(faces_at([51, 50, 61, 60], [1, 0, 11, 10]), 0.033)
    assert second.track_ids.tolist() == [ids[(50.0, 50.0)], ids[(0.0, 0.0)]]


def test_tracks_end_after_timeout_and_ids_are_not_reused():
    tracker = IouTracker(TrackerOptions(timeout_s=0.5))
    tracker.update(faces_at([0, 0, 10, 10]), 0.0)
    tracker.update(None, 0.4)
    assert not tracker.pop_ended()
    tracker.update(None, 0.6)
    ended = tracker.pop_ended()
    assert [t.track_id for t in ended] == [1] and not tracker.tracks
    again = tracker.update(faces_at([0, 0, 10, 10]), 0.7)
    assert again.track_ids.tolist() == [2]


def test_a_face_after_an_outage_starts_a_new_track_even_with_no_frame_between():
    tracker = IouTracker(TrackerOptions(timeout_s=0.5))
    for i in range(10):  # 30 frames/s
        tracker.update(faces_at([0, 0, 10, 10]), i / 30)
    later = tracker.update(faces_at([0, 0, 10, 10]), 2.3)  # the camera was away for 2 s
    assert later.track_ids.tolist() == [2]
    assert [t.track_id for t in tracker.pop_ended()] == [1]


def test_frames_sampled_further_apart_than_the_timeout_still_link():
    """``--max-fps 1`` on 29.97 frames/s: the sampled frames are 1.001 s apart."""
    tracker = IouTracker(TrackerOptions(timeout_s=1.0))
    ids = [tracker.update(faces_at([0, 0, 10, 10]), i * 1.001).track_ids.tolist()
           for i in range(6)]
    assert ids == [[1]] * 6 and not tracker.pop_ended()


def test_time_cannot_go_backwards():
    tracker = IouTracker()
    tracker.update(None, 1.0)
    with pytest.raises(ValueError, match="backwards"):
        tracker.update(None, 0.5)


@pytest.mark.parametrize("kwargs", [{"iou_threshold": 0.0}, {"iou_threshold": 1.5},
                                    {"timeout_s": 0}])
def test_invalid_tracker_options(kwargs):
    with pytest.raises(ConfigError):
        TrackerOptions(**kwargs)


def one_hot_faces(track_id, probs):
    faces = faces_at([0, 0, 10, 10])
    faces.track_ids[0] = track_id
    faces.probs[0] = probs
    return faces


def test_hysteresis_stops_flicker():
    smoother = Smoother(SmoothingOptions(half_life_s=0.0, hysteresis=0.1))
    close_a = [0, 0, 0, 0.46, 0, 0, 0.54]  # neutral slightly ahead
    close_b = [0, 0, 0, 0.52, 0, 0, 0.48]  # happy slightly ahead: not enough to switch
    clear_b = [0, 0, 0, 0.70, 0, 0, 0.30]
    labels = [int(smoother.update(one_hot_faces(1, p), t).smoothed_labels[0])
              for t, p in enumerate([close_a, close_b, close_a, close_b, clear_b])]
    assert labels == [6, 6, 6, 6, 3]


def test_ema_half_life():
    smoother = Smoother(SmoothingOptions(half_life_s=1.0, hysteresis=0.0))
    smoother.update(one_hot_faces(1, np.eye(7)[0]), 0.0)
    faces = smoother.update(one_hot_faces(1, np.eye(7)[3]), 1.0)  # one half-life later
    np.testing.assert_allclose(faces.smoothed_probs[0, [0, 3]], [0.5, 0.5], atol=1e-6)


def test_smoother_forgets_ended_tracks():
    smoother = Smoother()
    smoother.update(one_hot_faces(4, np.eye(7)[0]), 0.0)
    smoother.forget([4])
    again = smoother.update(one_hot_faces(4, np.eye(7)[3]), 0.01)  # no EMA carried over
    assert again.smoothed_labels.tolist() == [3]
    np.testing.assert_allclose(again.smoothed_probs[0], np.eye(7)[3])
