"""``--engine auto``: TensorRT, then ONNX Runtime on CUDA, then ONNX Runtime on the CPU.

Every choice comes with the reason, which the CLI prints, so a user on a Jetson knows why they
got the CPU path (no tensorrt module, no GPU, no plan built yet...).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import edgefer.backends.cuda as cuda
from edgefer.backends.base import Engine
from edgefer.errors import ModelError
from edgefer.manifest import ModelEntry

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Choice:
    """What ``--engine auto`` runs on, and why (logged: a user should know what runs)."""

    engine: str
    reason: str


def ort_gpu_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    available = onnxruntime.get_available_providers()
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]


def choose_engine(entry: ModelEntry, precision: str = "fp16") -> Choice:
    """``--engine auto``: TensorRT where a plan is built for this GPU, else ONNX Runtime with a
    GPU provider, else ONNX Runtime on the CPU."""
    tensorrt_reason = _tensorrt_unavailable()
    if tensorrt_reason is None:
        if find_plan(entry, precision) is not None:
            return Choice("tensorrt", "TensorRT, a CUDA GPU and a plan built for it are present")
        tensorrt_reason = "no TensorRT plan built for this GPU yet (run: edgefer build)"
    providers = ort_gpu_providers()
    if providers:
        return Choice("onnxruntime-gpu", f"{tensorrt_reason}; ONNX Runtime offers {providers[0]}")
    return Choice("onnxruntime", f"{tensorrt_reason}; ONNX Runtime has no GPU provider")


def _tensorrt_unavailable() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt module is not installed"
    if cuda.current_gpu() is None:
        return "no CUDA GPU found"
    return None


def environment_parts(entry: ModelEntry) -> dict[str, str]:
    """The parts of a plan's cache key that this machine and model fix (not the batch profile)."""
    tensorrt = cuda.require_tensorrt()
    gpu = cuda.current_gpu()
    if gpu is None:
        raise ModelError("no CUDA GPU found")
    return {"gpu": gpu.name, "compute_capability": gpu.compute_capability,
            "tensorrt": tensorrt.__version__, "onnx_sha256": entry.sha256}


def find_plan(entry: ModelEntry, precision: str) -> Path | None:
    """A cached plan of ``precision`` built on this GPU and TensorRT from this ONNX file."""
    from edgefer.backends.tensorrt import read_plan_metadata

    expected = environment_parts(entry)
    for plan in sorted((entry.file.parent / "plans").glob(f"{entry.name}-{precision}-*.plan")):
        parts = (read_plan_metadata(plan) or {}).get("parts", {})
        if all(parts.get(k) == v for k, v in expected.items()):
            return plan
    return None


def ort_gpu_engine(entry: ModelEntry, threads: int = 1) -> Engine:
    """ONNX Runtime with the TensorRT and CUDA execution providers, caching engines on disk."""
    from edgefer.backends.onnxruntime import CPU, OnnxRuntimeEngine

    gpu_providers = ort_gpu_providers()
    if not gpu_providers:
        raise ModelError("--engine onnxruntime-gpu: this ONNX Runtime has no CUDA or TensorRT "
                         "provider; install onnxruntime-gpu on a machine with a CUDA GPU, or use "
                         "--engine onnxruntime (the CPU)")
    cache = entry.file.parent / "plans" / "ort"
    cache.mkdir(parents=True, exist_ok=True)
    providers: list = []
    for provider in gpu_providers:
        if provider == "TensorrtExecutionProvider":
            providers.append((provider, {"trt_engine_cache_enable": True,
                                         "trt_engine_cache_path": str(cache),
                                         "trt_timing_cache_enable": True,
                                         "trt_fp16_enable": True}))
        else:
            providers.append(provider)
    engine = OnnxRuntimeEngine(entry.file, entry.input, threads=threads,
                               providers=[*providers, CPU])
    if engine.providers == [CPU]:  # the GPU providers failed to start (no GPU, no CUDA)
        engine.close()
        raise ModelError("--engine onnxruntime-gpu: the CUDA and TensorRT providers did not "
                         "start (no CUDA GPU or libraries?); --debug shows ONNX Runtime's "
                         "reason, --engine onnxruntime runs on the CPU")
    return engine
