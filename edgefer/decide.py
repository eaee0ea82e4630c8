"""The one place that decides the label shown for each face, and who gave it.

Sinks, annotation and the live window read ``Faces.final_labels`` and ``Faces.label_sources``
(the second-opinion stage asks about ``cnn_labels``), which only ``decide_labels`` writes: the
CNN's label (smoothed over the track), replaced by the LLM's answer (policy ``override``), mixed
with it (``fuse``), or both decided by the fusion model fitted by ``edgefer llm calibrate``
(``learned``) where the second opinion left an answer in ``llm_labels``/``llm_probs``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edgefer.types import Faces, LabelSource

POLICIES = ("override", "fuse", "learned")


class Fusion(Protocol):
    """What the learned policy needs from ``edgefer.llm.fusion.FusionModel``."""

    def recalibrate(self, probs: np.ndarray) -> np.ndarray: ...
    def fuse(self, probs: np.ndarray, llm_probs: np.ndarray) -> np.ndarray: ...


def decide_labels(faces: Faces, policy: str = "override", fuse_weight: float = 0.5,
                  fusion: Fusion | None = None) -> Faces:
    """Fill ``faces.final_labels`` and ``faces.label_sources`` in place and return ``faces``.

    Faces without a CNN label stay -1 / ``UNKNOWN``; an LLM answer applies only to a face the
    CNN has labelled (the stage asks about classified faces only). Under ``learned`` (which
    needs ``fusion``) the answered faces get the fused label and the others the CNN's
    probabilities recalibrated to the label space the model was fitted on.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown merge policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if policy == "learned" and fusion is None:
        raise ValueError("the learned policy needs a fusion model (`edgefer llm calibrate`)")
    cnn = faces.cnn_labels
    final = cnn.copy()
    sources = np.where(cnn >= 0, LabelSource.CNN, LabelSource.UNKNOWN).astype(np.int8)
    answered = (faces.llm_labels >= 0) & (cnn >= 0)
    if policy == "learned":
        unanswered = (cnn >= 0) & ~answered
        if unanswered.any():
            final[unanswered] = fusion.recalibrate(faces.cnn_probs(unanswered)).argmax(axis=1)
    if answered.any() and policy == "override":
        final[answered] = faces.llm_labels[answered]
        sources[answered] = LabelSource.LLM
    elif answered.any():
        cnn_probs, llm_probs = faces.cnn_probs(answered), faces.llm_probs[answered]
        fused = fusion.fuse(cnn_probs, llm_probs) if policy == "learned" \
            else (1 - fuse_weight) * cnn_probs + fuse_weight * llm_probs
        final[answered] = fused.argmax(axis=1)
        sources[answered] = LabelSource.FUSE
    faces.final_labels[:] = final
    faces.label_sources[:] = sources
    return faces
