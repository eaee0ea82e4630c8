"""The inference-engine interface every backend implements.

Modelled on Polygraphy's runners: the base class validates the batch (dtype, rank, spatial shape)
and splits it at the engine's batch limit; subclasses only implement ``_infer``. Latency is
measured by the pipeline (per stage) and by ``tools/bench.py``. Backends import their heavy
library on construction, never at module import.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from edgefer.errors import InputError
from edgefer.manifest import InputSpec, ModelEntry
from edgefer.types import EMOTIONS

# The one list of engine names (--engine, open_engine, the choice of --engine auto) and
# of TensorRT plan precisions.
ENGINES = ("auto", "onnxruntime", "onnxruntime-gpu", "tensorrt", "torch")
PRECISIONS = ("fp32", "fp16", "int8")


class Engine(ABC):
    """Runs a classifier on a float32 NCHW batch and returns logits ``(N, classes)``."""

    name: str = "engine"

    def __init__(self, spec: InputSpec, max_batch: int | None = None) -> None:
        self.spec = spec
        self.entry: ModelEntry | None = None  # the model it runs, set by open_engine
        self.max_batch = max_batch  # the most rows one _infer call takes (a TensorRT profile's)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Validate ``batch`` and run it, in chunks of ``max_batch`` rows where the engine has a
        limit (a group photo's faces, an evaluation batch); an empty batch returns no rows."""
        self._check(batch)
        if len(batch) == 0:
            return np.zeros((0, len(EMOTIONS)), dtype=np.float32)
        step = self.max_batch or len(batch)
        if len(batch) <= step:  # every frame's batch on the CPU engine: no split, no copy
            return self._infer(batch)
        return np.concatenate([self._infer(batch[i:i + step]) for i in range(0, len(batch), step)])

    def _check(self, batch: np.ndarray) -> None:
        expected = (self.spec.channels, self.spec.height, self.spec.width)
        if batch.dtype != np.float32:
            raise InputError(f"{self.name}: input must be float32, got {batch.dtype}")
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise InputError(f"{self.name}: input must be (N, {', '.join(map(str, expected))}), "
                             f"got {batch.shape}")

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing to free
        """Release native resources; the engine may not be used afterwards."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
