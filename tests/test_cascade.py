"""The CNN/LLM cascade arithmetic, and the merge stage with a real worker and server."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.decide import decide_labels
from edgefer.llm.parse import Answer
from edgefer.llm.stage import is_uncertain
from edgefer.training.cascade import cascade_predictions, llm_alone, split_halves
from edgefer.types import EMOTIONS, Faces, Frame, LabelSource


def test_cascade_replaces_the_least_confident_answered_faces():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    llm = np.array([1, 1, -1, 1])  # face 2 got no answer
    # confidences 0.9, 0.6, 0.7, 0.55: face 3 is sent first, then 1, then 2 (unanswered)
    assert cascade_predictions(probs, llm, 0.0).tolist() == [0, 0, 1, 0]
    assert cascade_predictions(probs, llm, 0.25).tolist() == [0, 0, 1, 1]
    assert cascade_predictions(probs, llm, 0.5).tolist() == [0, 1, 1, 1]
    assert cascade_predictions(probs, llm, 0.75).tolist() == [0, 1, 1, 1]
    assert cascade_predictions(probs, llm, 1.0).tolist() == [1, 1, 1, 1]


def test_llm_alone_counts_unanswered_as_wrong():
    row = llm_alone(np.array([0, 1, 2, 3]), np.array([0, 1, -1, -1]))
    assert row["accuracy"] == 0.5 and row["answered"] == 0.5


def test_halves_are_disjoint_and_stratified():
    labels = np.repeat(np.arange(7), 10)
    first, second = split_halves(labels, seed=3)
    assert not set(first) & set(second) and len(first) + len(second) == 70
    assert np.bincount(labels[first]).tolist() == [5] * 7


@pytest.mark.parametrize(("probs", "threshold", "margin", "expected"), [
    ([0.4, 0.3, 0.3, 0, 0, 0, 0], 0.5, 0.0, True),
    ([0.6, 0.3, 0.1, 0, 0, 0, 0], 0.5, 0.0, False),
    ([0.6, 0.35, 0.05, 0, 0, 0, 0], 0.5, 0.3, True),
])
def test_uncertainty(probs, threshold, margin, expected):
    assert is_uncertain(np.array(probs), threshold, margin) is expected


@pytest.mark.parametrize(("answer", "policy", "label", "source"), [
    (Answer("neutral", 0.9), "override", "neutral", LabelSource.LLM),
    (Answer("neutral", 0.9), "fuse", "neutral", LabelSource.FUSE),
    (Answer("sad", 0.2), "fuse", "happy", LabelSource.FUSE),  # a weak answer loses the mix
])
def test_merge_policies(answer, policy, label, source):
    faces = Faces(np.zeros((1, 4)), np.ones(1), np.zeros((1, 6, 2)))
    faces.probs[0] = faces.smoothed_probs[0] = [0.1, 0, 0, 0.5, 0, 0, 0.4]
    faces.llm_probs[0] = answer.distribution()
    faces.llm_labels[0] = EMOTIONS.index(answer.label)
    decide_labels(faces, policy, 0.5)
    assert (EMOTIONS[faces.final_labels[0]], faces.label_sources[0]) == (label, source)
    np.testing.assert_allclose(faces.llm_probs.sum(), 1.0, atol=1e-6)


def test_recognizer_with_llm_never_stalls_and_merges(demo_clip):
    pytest.importorskip("openai")
    import threading

    from edgefer.llm.config import LlmConfig
    from edgefer.pipeline import Recognizer, RecognizerOptions
    from edgefer.sources import open_source
    from tools.openai_stub import StubServer, StubState

    gate = threading.Event()  # the server answers nothing until the clip has been processed
    with StubServer(StubState(gate=gate, answer=lambda face: "surprise")) as server:
        config = LlmConfig(model="stub", base_url=server.base_url, threshold=1.0, cooldown_s=0.5,
                           batch_wait_s=0.05)
        with Recognizer(RecognizerOptions(llm=config)) as recognizer, \
                open_source(str(demo_clip)) as source:
            results = list(recognizer.run(source))  # would hang here if the loop waited
            gate.set()
            events = recognizer.wait_for_second_opinions(10)
            last = results[-1].frame  # the same picture once more, now that answers are in
            after = recognizer.process(Frame(last.index + 1, last.timestamp_s + 1 / 30, last.image))
    # the loop ran to the end while every question was outstanding: no answer during the run,
    # answers (to questions asked during it) only after the server was let go
    assert len(results) == 150 and server.state.requests
    assert {int(s) for r in results for s in r.faces.label_sources} == {LabelSource.CNN}
    assert events and all(e["llm_label"] == "surprise" for e in events)
    answered = after.faces.llm_labels >= 0
    assert answered.any()  # the stub's answer is merged into the face it was asked about ...
    assert (after.faces.final_labels[answered] == EMOTIONS.index("surprise")).all()
    assert (after.faces.label_sources[answered] == LabelSource.LLM).all()  # policy override
    assert (after.faces.cnn_labels[answered] >= 0).all()  # ... and the CNN's label is kept


def test_context_frame_is_sent_when_asked(demo_clip):
    pytest.importorskip("openai")
    from edgefer.llm.config import LlmConfig
    from edgefer.pipeline import Recognizer, RecognizerOptions
    from edgefer.sources import open_source
    from tools.openai_stub import StubServer, StubState

    with StubServer(StubState()) as server:
        config = LlmConfig(model="stub", base_url=server.base_url, threshold=1.0,
                           context_frame=True, batch_wait_s=0.05)
        with Recognizer(RecognizerOptions(llm=config)) as recognizer, \
                open_source(str(demo_clip), stride=30) as source:
            list(recognizer.run(source))
            assert recognizer.wait_for_second_opinions(10)
        assert server.state.requests and server.state.requests[0]["faces"] >= 1
        assert server.state.images_per_request[0] == 2 * server.state.requests[0]["faces"]
