"""Classification: aligned face batches to calibrated probabilities, one engine call per frame."""

from __future__ import annotations

import numpy as np

from edgefer.backends.base import Engine
from edgefer.types import EMOTIONS


class Classifier:
    """Runs an engine on a batch and applies the manifest's temperature.

    Temperature scaling (fitted on the validation split) leaves the argmax unchanged and makes
    the confidence mean what it says, which the LLM-fallback threshold relies on.
    """

    def __init__(self, engine: Engine, temperature: float = 1.0, classes: int = len(EMOTIONS)
                 ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.engine = engine
        self.classes = classes  # the manifest's class count
        self.temperature = temperature

    def classify(self, batch: np.ndarray) -> np.ndarray:
        """``(N, classes)`` float32 probabilities for an ``(N, C, H, W)`` batch."""
        if len(batch) == 0:
            return np.zeros((0, self.classes), dtype=np.float32)
        return softmax(self.engine.run(batch), self.temperature).astype(np.float32)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
