"""Inference backends behind one ``Engine`` interface, opened by name.

``onnxruntime`` (CPU) is the default. ``torch`` runs the training checkpoint (for parity checks).
GPU backends are added by ``edgefer.backends.select``.
"""

from __future__ import annotations

from edgefer.backends.base import Engine
from edgefer.errors import ConfigError
from edgefer.manifest import ModelEntry

BACKENDS = ("onnxruntime", "torch")


def open_engine(entry: ModelEntry, backend: str = "onnxruntime", threads: int = 1) -> Engine:
    """Open ``entry`` on ``backend``; the model file is verified against its sha256 first."""
    entry.verify()
    if backend == "onnxruntime":
        from edgefer.backends.onnxruntime import OnnxRuntimeEngine

        return OnnxRuntimeEngine(entry.file, entry.input, threads=threads)
    if backend == "torch":
        from edgefer.backends.torch import TorchEngine

        return TorchEngine.from_entry(entry, threads=threads)
    raise ConfigError(f"unknown engine {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Engine", "open_engine"]
