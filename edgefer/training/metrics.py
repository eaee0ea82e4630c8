"""Classification metrics on integer labels and probability arrays (NumPy only).

Conventions: ``y_true``/``y_pred`` are int arrays in ``Emotion`` order; ``probs`` is
``(N, K)``. Macro averages run over the classes present in ``y_true`` so a 6-class set such as
CK+48 is not penalised for the class it lacks.
"""

from __future__ import annotations

import logging

import numpy as np

from edgefer.classify import softmax
from edgefer.types import EMOTIONS

log = logging.getLogger(__name__)

NUM_CLASSES = len(EMOTIONS)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int = NUM_CLASSES) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns."""
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int = NUM_CLASSES
                        ) -> dict[str, float | np.ndarray]:
    """Per-class precision, recall, F1 and support, and their macro averages.

    A class never predicted has precision 0 (as scikit-learn's ``zero_division=0``).
    """
    matrix = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(matrix).astype(float)
    support = matrix.sum(1)
    predicted = matrix.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    return {
        "precision": precision, "recall": recall, "f1": f1, "support": support,
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
    }


def summary(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1: one row of a comparison table."""
    scores = precision_recall_f1(y_true, y_pred)
    return {"n": len(y_true), "accuracy": accuracy(y_true, y_pred),
            "macro_precision": scores["macro_precision"], "macro_recall": scores["macro_recall"],
            "macro_f1": scores["macro_f1"]}


def random_baseline(y_true: np.ndarray, classes: np.ndarray, runs: int = 10, seed: int = 0
                    ) -> dict[str, float]:
    """Mean over ``runs`` of uniform random guesses among ``classes``."""
    rng = np.random.default_rng(seed)
    rows = [summary(y_true, rng.choice(classes, size=len(y_true))) for _ in range(runs)]
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def majority_baseline(y_true: np.ndarray, train_labels: np.ndarray | None = None
                      ) -> dict[str, float]:
    """Always answer the most frequent class (of ``train_labels`` if given, else of ``y_true``)."""
    reference = np.asarray(train_labels if train_labels is not None else y_true)
    majority = int(np.bincount(reference, minlength=NUM_CLASSES).argmax())
    return summary(y_true, np.full(len(y_true), majority))


def nll(logits: np.ndarray, y_true: np.ndarray, temperature: float = 1.0) -> float:
    probs = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, None))))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray, low: float = 0.05, high: float = 20.0
                    ) -> float:
    """Temperature minimising validation NLL (Guo et al. 2017), by golden-section search in log T.

    NLL is unimodal in T for a fixed set of logits, so the 1-D search is exact to ~1e-4.
    """
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(80):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if nll(logits, y_true, np.exp(c)) < nll(logits, y_true, np.exp(d)):
            b = d
        else:
            a = c
    temperature = float(np.exp((a + b) / 2))
    if not low * 1.01 < temperature < high * 0.99:  # the best lies beyond: no calibration
        log.warning("the temperature search stopped at its limit (%.2f): the probabilities "
                    "cannot be calibrated on these %d images (too few, or a network that has not "
                    "learned)", temperature, len(y_true))
    return temperature


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| * share."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            ece += abs(correct[members].mean() - confidence[members].mean()) * members.mean()
    return float(ece)


def selective_table(probs: np.ndarray, y_true: np.ndarray,
                    thresholds: tuple[float, ...] = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
                    ) -> list[dict[str, float]]:
    """For each confidence threshold: the share of faces kept and the accuracy on kept/deferred ones.

    Faces below the threshold are the ones a cascade would send to the LLM.
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    rows = []
    for threshold in thresholds:
        kept = confidence >= threshold
        rows.append({
            "threshold": float(threshold),
            "coverage": float(kept.mean()),
            "accuracy_kept": float(correct[kept].mean()) if kept.any() else float("nan"),
            "accuracy_deferred": float(correct[~kept].mean()) if (~kept).any() else float("nan"),
        })
    return rows
