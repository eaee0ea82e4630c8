"""The one place that decides the label shown for each face, and who gave it.

Sinks, annotation, the live window and the second-opinion stage read ``Faces.final_labels``
and ``Faces.label_sources``, which only ``decide_labels`` writes: the CNN's label (smoothed over
the track), replaced by the LLM's answer (policy ``override``) or mixed with it (``fuse``)
where the second opinion left one in ``llm_labels``/``llm_probs``.
"""

from __future__ import annotations

import numpy as np

from edgefer.types import Faces, LabelSource

POLICIES = ("override", "fuse")


def decide_labels(faces: Faces, policy: str = "override", fuse_weight: float = 0.5) -> Faces:
    """Fill ``faces.final_labels`` and ``faces.label_sources`` in place and return ``faces``.

    Faces without a CNN label stay -1 / ``UNKNOWN``; an LLM answer applies only to a face the
    CNN has labelled (the stage asks about classified faces only).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown merge policy {policy!r}; choose one of {', '.join(POLICIES)}")
    cnn = faces.cnn_labels
    final = cnn.copy()
    sources = np.where(cnn >= 0, LabelSource.CNN, LabelSource.UNKNOWN).astype(np.int8)
    answered = (faces.llm_labels >= 0) & (cnn >= 0)
    if answered.any() and policy == "override":
        final[answered] = faces.llm_labels[answered]
        sources[answered] = LabelSource.LLM
    elif answered.any():
        fused = (1 - fuse_weight) * faces.smoothed_probs[answered] \
            + fuse_weight * faces.llm_probs[answered]
        final[answered] = fused.argmax(axis=1)
        sources[answered] = LabelSource.FUSE
    faces.final_labels[:] = final
    faces.label_sources[:] = sources
    return faces
