"""``decide_labels``: the one rule for the label shown and who gave it."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.decide import decide_labels
from edgefer.llm.fusion import FusionModel
from edgefer.types import EMOTIONS, Faces, LabelSource

HAPPY, SAD, NEUTRAL = EMOTIONS.index("happy"), EMOTIONS.index("sad"), EMOTIONS.index("neutral")


def one_face(probs: list[float] | None, smoothed: int = -1, llm: int = -1) -> Faces:
    faces = Faces(np.zeros((1, 4)), np.ones(1), np.zeros((1, 6, 2)))
    if probs is not None:
        faces.probs[0] = probs
        faces.smoothed_probs[0] = probs
    faces.smoothed_labels[0] = smoothed
    if llm >= 0:
        faces.llm_labels[0] = llm
        faces.llm_probs[0] = np.eye(len(EMOTIONS))[llm]
    return faces


P_HAPPY = [0, 0, 0, 0.6, 0.4, 0, 0]  # happy 0.6, sad 0.4


@pytest.mark.parametrize(("faces", "policy", "weight", "label", "source"), [
    (one_face(None), "override", 0.5, -1, LabelSource.UNKNOWN),  # unclassified: unknown
    (one_face(None, llm=SAD), "override", 0.5, -1, LabelSource.UNKNOWN),  # no CNN label: no answer
    (one_face(P_HAPPY), "override", 0.5, HAPPY, LabelSource.CNN),  # raw argmax
    (one_face(P_HAPPY, smoothed=NEUTRAL), "override", 0.5, NEUTRAL, LabelSource.CNN),  # smoothed
    (one_face(P_HAPPY, smoothed=HAPPY, llm=SAD), "override", 0.5, SAD, LabelSource.LLM),
    (one_face(P_HAPPY, smoothed=HAPPY, llm=SAD), "fuse", 0.5, SAD, LabelSource.FUSE),  # .3/.7
    (one_face(P_HAPPY, smoothed=HAPPY, llm=SAD), "fuse", 0.1, HAPPY, LabelSource.FUSE),  # .64/.46
])
def test_decide(faces, policy, weight, label, source):
    decide_labels(faces, policy, weight)
    assert faces.final_labels.tolist() == [label]
    assert faces.label_sources.tolist() == [source]


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="policy"):
        decide_labels(one_face(P_HAPPY), "vote")


def biased_fusion(recalibrated_to: int, fused_to: int) -> FusionModel:
    """A fusion model whose biases alone decide: every unanswered face is recalibrated to
    ``recalibrated_to``, every answered one fused to ``fused_to``."""
    classes = len(EMOTIONS)
    recalibration = np.zeros((1 + classes, classes))
    recalibration[0, recalibrated_to] = 10
    fusion = np.zeros((1 + 2 * classes, classes))
    fusion[0, fused_to] = 10
    never_answers = np.eye(classes + 1)[np.full(classes, classes)]
    return FusionModel(recalibration, fusion, never_answers, np.eye(classes), 0.0)


def test_learned_policy_decides_answered_and_unanswered_faces_by_its_model():
    faces = Faces(np.zeros((3, 4)), np.ones(3), np.zeros((3, 6, 2)))
    faces.probs[:2] = faces.smoothed_probs[:2] = P_HAPPY  # face 2: not classified
    faces.smoothed_labels[:2] = HAPPY
    faces.llm_labels[1] = SAD
    faces.llm_probs[1] = np.eye(len(EMOTIONS))[SAD]
    decide_labels(faces, "learned", fusion=biased_fusion(recalibrated_to=SAD, fused_to=NEUTRAL))
    assert faces.final_labels.tolist() == [SAD, NEUTRAL, -1]
    assert faces.label_sources.tolist() == [LabelSource.CNN, LabelSource.FUSE, LabelSource.UNKNOWN]


def test_learned_policy_without_a_model_is_refused():
    with pytest.raises(ValueError, match="fusion model"):
        decide_labels(one_face(P_HAPPY), "learned")


def test_an_llm_label_is_shown_with_the_llms_confidence():
    """The LLM may answer a label the CNN gave little: its bar shows the LLM's confidence, not
    the CNN's 0% for that label."""
    from edgefer.annotate import face_label

    faces = one_face(P_HAPPY, smoothed=HAPPY, llm=EMOTIONS.index("fear"))
    faces.llm_probs[0] *= 0.8
    decide_labels(faces, "override")
    assert face_label(faces, 0) == ("fear", pytest.approx(0.8), True)
    faces = decide_labels(one_face(P_HAPPY, smoothed=HAPPY), "override")
    assert face_label(faces, 0) == ("happy", pytest.approx(0.6), False)
