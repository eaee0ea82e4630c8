"""``decide_labels``: the one rule for the label shown and who gave it."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.decide import decide_labels
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
