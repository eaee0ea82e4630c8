"""Metric functions against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.training import metrics

Y_TRUE = np.array([0, 0, 1, 1, 1, 2])
Y_PRED = np.array([0, 1, 1, 1, 0, 0])


def test_accuracy_and_confusion():
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(3 / 6)
    matrix = metrics.confusion_matrix(Y_TRUE, Y_PRED, k=3)
    assert matrix.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 0]]


def test_precision_recall_f1_by_hand():
    scores = metrics.precision_recall_f1(Y_TRUE, Y_PRED, k=3)
    # class 0: tp 1, predicted 3, support 2 -> p 1/3, r 1/2, f1 0.4
    # class 1: tp 2, predicted 3, support 3 -> p 2/3, r 2/3, f1 2/3
    # class 2: tp 0, predicted 0, support 1 -> p 0, r 0, f1 0
    np.testing.assert_allclose(scores["precision"], [1 / 3, 2 / 3, 0])
    np.testing.assert_allclose(scores["recall"], [1 / 2, 2 / 3, 0])
    np.testing.assert_allclose(scores["f1"], [0.4, 2 / 3, 0])
    assert scores["macro_f1"] == pytest.approx((0.4 + 2 / 3) / 3)


def test_macro_average_skips_absent_classes():
    scores = metrics.precision_recall_f1(np.array([0, 1]), np.array([0, 1]))
    assert scores["macro_f1"] == 1.0


def test_majority_and_random_baselines():
    y = np.array([3, 3, 3, 1])
    assert metrics.majority_baseline(y)["accuracy"] == 0.75
    random = metrics.random_baseline(np.repeat(np.arange(7), 1000), np.arange(7), runs=10)
    assert random["accuracy"] == pytest.approx(1 / 7, abs=0.01)


def test_softmax_temperature():
    probs = metrics.softmax(np.array([[2.0, 0.0]]), temperature=2.0)
    np.testing.assert_allclose(probs, [[np.e / (np.e + 1), 1 / (np.e + 1)]])


def test_ece_by_hand():
    # two bins used: confidence 0.9 (2 items, 1 correct) and 0.6 (2 items, 2 correct)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0])
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert metrics.expected_calibration_error(probs, y) == pytest.approx(expected)


def test_fit_temperature_recovers_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 7)) * 2
    y = np.array([rng.choice(7, p=p) for p in metrics.softmax(true_logits)])
    fitted = metrics.fit_temperature(true_logits * 3.0, y)  # over-confident by 3x
    assert fitted == pytest.approx(3.0, rel=0.1)


def test_selective_table():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.55, 0.45], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    rows = {r["threshold"]: r for r in metrics.selective_table(probs, y, (0.0, 0.7))}
    assert rows[0.0]["coverage"] == 1.0
    assert rows[0.0]["accuracy_kept"] == 0.75
    assert rows[0.7]["coverage"] == 0.5
    assert rows[0.7]["accuracy_kept"] == 0.5
    assert rows[0.7]["accuracy_deferred"] == 1.0


def test_a_temperature_at_the_search_limit_is_warned(caplog):
    """Confidently wrong logits want an infinite temperature: the search stops at its limit,
    and says that these probabilities cannot be calibrated."""
    from edgefer.training.metrics import fit_temperature

    y = np.arange(70) % 7
    logits = np.eye(7)[(y + 1) % 7] * 10.0  # every face confidently wrong
    assert fit_temperature(logits, y) > 19
    assert "stopped at its limit" in caplog.text
