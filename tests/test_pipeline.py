"""The whole pipeline with the shipped model on a real (generated) video."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.pipeline import Recognizer, RecognizerOptions, run_in_thread
from edgefer.sources import open_source


@pytest.fixture(scope="module")
def recognizer():
    with Recognizer() as recognizer:
        yield recognizer


def test_stream_results_match_frame_by_frame(recognizer, demo_clip):
    with open_source(str(demo_clip)) as source:
        streamed = [(r.frame.index, r.faces.xyxy.copy(), r.faces.probs.copy(),
                     r.faces.track_ids.copy()) for r in recognizer.run(source)]
    recognizer.reset()
    with open_source(str(demo_clip)) as source:
        single = [recognizer.process(frame) for frame in source]
    recognizer.reset()
    assert [s[0] for s in streamed] == [r.frame.index for r in single] == list(range(150))
    for (_, xyxy, probs, ids), result in zip(streamed, single, strict=False):
        np.testing.assert_allclose(xyxy, result.faces.xyxy)
        np.testing.assert_allclose(probs, result.faces.probs, atol=1e-5)
        np.testing.assert_array_equal(ids, result.faces.track_ids)


def test_faces_tracks_and_probabilities(recognizer, demo_clip):
    with open_source(str(demo_clip)) as source:
        results = list(recognizer.run(source))
    recognizer.reset()
    counts = np.array([len(r.faces) for r in results])
    # one face until 40% of the clip, then two; the first leaves through the right edge
    assert (counts[:55] == 1).mean() > 0.95
    assert (counts[62:120] == 2).mean() > 0.95
    for r in results:
        np.testing.assert_allclose(r.faces.probs.sum(1), 1.0, atol=1e-4)
        assert (r.faces.smoothed_labels >= 0).all()
        assert set(r.latency_ms) >= {"decode", "detect", "align", "classify", "track"}
    # the first face keeps its id while it is visible
    first_ids = {int(r.faces.track_ids[r.faces.xyxy[:, 0].argmax()]) for r in results[:55]}
    assert len(first_ids) == 1


def test_abandoned_stream_leaves_no_thread(recognizer, demo_clip):
    import threading

    before = threading.active_count()
    with open_source(str(demo_clip)) as source:
        stream = recognizer.run(source)
        next(stream)
        stream.close()
    recognizer.reset()
    assert threading.active_count() <= before


def test_errors_in_the_producer_reach_the_consumer():
    def broken():
        yield 1
        raise RuntimeError("decoder exploded")

    items = run_in_thread(broken(), 2, "test")
    assert next(items) == 1
    with pytest.raises(RuntimeError, match="exploded"):
        next(items)


def test_unknown_model_is_a_clear_error():
    from edgefer.errors import ModelError

    with pytest.raises(ModelError, match="not in"):
        Recognizer(RecognizerOptions(model="nope"))
