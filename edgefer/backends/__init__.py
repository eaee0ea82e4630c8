"""Inference backends behind one ``Engine`` interface, opened by name.

``onnxruntime`` (CPU) is the default; ``onnxruntime-gpu`` uses ONNX Runtime's TensorRT/CUDA
providers; ``tensorrt`` runs a plan built by ``edgefer build``; ``torch`` runs the shipped
PyTorch weights (parity checks); ``auto`` picks the fastest available and says why.
"""

from __future__ import annotations

import logging

from edgefer.backends.base import ENGINES, PRECISIONS, Engine
from edgefer.errors import ConfigError, ModelError
from edgefer.manifest import ModelEntry, float_source

log = logging.getLogger(__name__)

def open_engine(entry: ModelEntry, backend: str = "onnxruntime", threads: int = 1,
                precision: str = "fp16") -> Engine:
    """Open ``entry`` on ``backend``; the model file is verified against its sha256 first.

    GPU and PyTorch backends run the float model an int8 entry was quantized from: the
    engine's ``entry`` names the model that runs, so reports and figures are filed under it.
    """
    requested, auto = entry, backend == "auto"
    if auto:
        from edgefer.backends.select import choose_engine

        choice = choose_engine(float_source(entry), precision)
        log.warning("engine auto: using %s (%s)", choice.engine, choice.reason)
        backend = choice.engine
    entry = model_that_runs(entry, backend)
    entry.verify()
    try:
        engine = _open(entry, backend, threads, precision)
    except ModelError as err:
        if not auto or backend == "onnxruntime":
            raise
        # a GPU provider listed but unusable (no device, no CUDA libraries): auto promises the CPU
        log.warning("engine auto: %s; using onnxruntime on the CPU", err)
        entry, backend = requested, "onnxruntime"
        entry.verify()
        engine = _open(entry, backend, threads, precision)
    engine.entry = entry
    return engine


def model_that_runs(entry: ModelEntry, backend: str) -> ModelEntry:
    """The model ``backend`` runs for ``entry``: ONNX Runtime on the CPU runs the entry itself,
    every other backend an int8 entry's float source. ``auto``, decided on each machine, is
    named as on a machine without a GPU."""
    return entry if backend in ("onnxruntime", "auto") else float_source(entry)


def _open(entry: ModelEntry, backend: str, threads: int, precision: str) -> Engine:
    if backend == "onnxruntime-gpu":
        from edgefer.backends.select import ort_gpu_engine

        return ort_gpu_engine(entry, threads)
    if backend == "tensorrt":
        from edgefer.backends.select import environment_parts, find_plan
        from edgefer.backends.tensorrt import TensorRTEngine

        plan = find_plan(entry, precision)
        if plan is None:
            raise ModelError(f"no {precision} TensorRT plan for this GPU; build one with: "
                             f"edgefer build --precision {precision}")
        return TensorRTEngine(plan, entry.input, environment_parts(entry))
    if backend == "onnxruntime":
        from edgefer.backends.onnxruntime import OnnxRuntimeEngine

        return OnnxRuntimeEngine(entry.file, entry.input, threads=threads)
    if backend == "torch":
        from edgefer.backends.torch import TorchEngine

        return TorchEngine.from_entry(entry, threads=threads)
    raise ConfigError(f"unknown engine {backend!r}; choose one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "PRECISIONS", "Engine", "open_engine"]
