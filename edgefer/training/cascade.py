"""The CNN-vs-LLM experiment: CNN alone, LLM alone, and the cascade at every share of faces sent.

The LLM is asked once about every evaluated face; the cascade for any threshold is then computed
offline from the same answers (the faces the CNN is least sure of go to the LLM). Operating
points are chosen on one half of the faces (stratified by class, fixed seed) and reported on the
other, because these are test images.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefer.llm.cache import AnswerCache, cache_key
from edgefer.llm.client import LlmClient, LlmStats
from edgefer.llm.config import LlmConfig
from edgefer.llm.constants import CROP_SIZE
from edgefer.llm.parse import Answer
from edgefer.llm.prompt import FaceQuery, encode_jpeg
from edgefer.training import metrics
from edgefer.types import EMOTIONS

SHARES = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 21))


@dataclass
class LlmAnswers:
    labels: np.ndarray  # int label per face, -1 when the LLM gave no usable answer
    stats: LlmStats


def face_queries(images: list[np.ndarray], probs: np.ndarray, model: str, top2: bool
                 ) -> list[FaceQuery]:
    """One query per pre-cropped face: upscaled to the live crop size, JPEG-encoded."""
    import cv2

    queries = []
    for i, image in enumerate(images):
        colour = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
        crop = cv2.resize(colour, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_CUBIC)
        jpeg = encode_jpeg(crop)
        options = None
        if top2:
            best = np.argsort(probs[i])[::-1][:2]
            options = (EMOTIONS[best[0]], EMOTIONS[best[1]])
        variant = f"top2={options}" if options else ""
        queries.append(FaceQuery(f"i{i}", jpeg, cache_key(jpeg, model, variant), options))
    return queries


def ask_all(queries: list[FaceQuery], config: LlmConfig,
            progress: Callable[[int, int], None] | None = None, chunk: int = 100) -> LlmAnswers:
    """Ask the LLM about every query (batched, cached, budgeted); returns labels in order."""
    stats = LlmStats()
    cache = AnswerCache(config.cache_path)

    async def run() -> dict[str, Answer | None]:
        client = LlmClient(config, cache, stats)
        answers: dict[str, Answer | None] = {}
        try:
            for start in range(0, len(queries), chunk):
                answers.update(await client.answer(queries[start:start + chunk]))
                if progress:
                    progress(min(start + chunk, len(queries)), len(queries))
        finally:
            await client.close()
        return answers

    try:
        answers = asyncio.run(run())
    finally:
        cache.close()
    labels = np.array([EMOTIONS.index(answers[q.face_id].label) if answers.get(q.face_id) else -1
                       for q in queries])
    return LlmAnswers(labels, stats)


def cascade_predictions(cnn_probs: np.ndarray, llm_labels: np.ndarray, share: float) -> np.ndarray:
    """The CNN's labels, with the ``share`` least confident faces replaced by the LLM's answer
    (where it gave one)."""
    predictions = cnn_probs.argmax(1).copy()
    count = round(share * len(predictions))
    if count:
        least_confident = np.argsort(cnn_probs.max(1), kind="stable")[:count]
        answered = least_confident[llm_labels[least_confident] >= 0]
        predictions[answered] = llm_labels[answered]
    return predictions


def split_halves(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves, stratified by class, with a fixed seed."""
    rng = np.random.default_rng(seed)
    first = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        first.append(members[: len(members) // 2])
    chosen = np.zeros(len(labels), dtype=bool)
    chosen[np.concatenate(first)] = True
    return np.flatnonzero(chosen), np.flatnonzero(~chosen)


def llm_alone(y_true: np.ndarray, llm_labels: np.ndarray) -> dict[str, float]:
    """LLM-only figures; a face without a usable answer counts as wrong."""
    predictions = np.where(llm_labels >= 0, llm_labels, -1)
    row = metrics.summary(y_true, np.where(predictions >= 0, predictions, 0))
    row["accuracy"] = float(np.mean(predictions == y_true))
    row["answered"] = float(np.mean(llm_labels >= 0))
    return row


def threshold_share(cnn_probs: np.ndarray, threshold: float) -> float:
    return float(np.mean(cnn_probs.max(1) < threshold))


def cascade_report(y_true: np.ndarray, cnn_probs: np.ndarray, llm: LlmAnswers,
                   threshold: float, seed: int = 0) -> dict[str, Any]:
    """Every row of the comparison, the curve, and the held-out operating point."""
    present = np.unique(y_true)
    cnn = metrics.summary(y_true, cnn_probs.argmax(1))
    default_share = threshold_share(cnn_probs, threshold)
    curve = [{"share_sent": share,
              **metrics.summary(y_true, cascade_predictions(cnn_probs, llm.labels, share))}
             for share in SHARES]
    tune, held_out = split_halves(y_true, seed)
    tune_scores = [metrics.accuracy(y_true[tune], cascade_predictions(cnn_probs[tune],
                                                                      llm.labels[tune], s))
                   for s in SHARES]
    best_share = SHARES[int(np.argmax(tune_scores))]
    held = {
        "chosen_share_on_first_half": best_share,
        "first_half_accuracy": float(max(tune_scores)),
        "second_half_cnn": metrics.summary(y_true[held_out], cnn_probs[held_out].argmax(1)),
        "second_half_cascade": metrics.summary(
            y_true[held_out], cascade_predictions(cnn_probs[held_out], llm.labels[held_out],
                                                  best_share)),
    }
    return {
        "rows": {
            "cnn": cnn,
            "llm": llm_alone(y_true, llm.labels),
            f"cascade (threshold {threshold:g}, {default_share:.0%} sent)": metrics.summary(
                y_true, cascade_predictions(cnn_probs, llm.labels, default_share)),
            "random (mean of 10)": metrics.random_baseline(y_true, present, runs=10),
            "majority class": metrics.majority_baseline(y_true),
        },
        "curve": curve,
        "held_out": held,
        "llm_stats": llm.stats.to_dict(),
        "share_answered": float(np.mean(llm.labels >= 0)),
    }
