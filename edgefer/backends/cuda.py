"""Minimal CUDA runtime helpers over cuda-python (imported lazily).

Why cuda-python rather than torch CUDA tensors: it is NVIDIA's own thin binding (a few MB, in
JetPack's pip index), needs no second multi-GB framework on a Jetson, and maps one-to-one onto
the CUDA runtime calls that NVIDIA's TensorRT samples use. (pycuda needs a compiler on the
device; torch is fine on desktops but heavy on an edge box.)
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.errors import MissingDependency, ModelError, require

# Signs of an NVIDIA driver: desktop and server GPUs, and Jetson (Tegra) boards
DRIVER_SIGNS = ("/proc/driver/nvidia/version", "/dev/nvidia0", "/etc/nv_tegra_release",
                "/dev/nvhost-ctrl-gpu")


def require_tensorrt() -> Any:
    """The tensorrt module; on a machine without any NVIDIA driver, the error says that
    instead of sending the user to install TensorRT's wheels, which could not run here."""
    try:
        return require("tensorrt", "tensorrt")
    except MissingDependency:
        if not any(Path(sign).exists() for sign in DRIVER_SIGNS):
            raise ModelError("no NVIDIA GPU driver on this machine: TensorRT builds and runs "
                             "engines on an NVIDIA GPU (edgefer build and --engine tensorrt "
                             "need one); here ONNX Runtime runs the models on the CPU, the "
                             "default engine") from None
        raise


def cudart() -> Any:
    """The CUDA runtime module of cuda-python (new ``cuda.bindings`` layout first)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        runtime = require("cuda.cudart", "tensorrt")
    return runtime


def check(result: Any) -> Any:
    """Unpack a cuda-python ``(error, value...)`` tuple, raising ModelError on failure."""
    runtime = cudart()
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != runtime.cudaError_t.cudaSuccess:
        raise ModelError(f"CUDA error: {runtime.cudaGetErrorString(error)[1].decode()}")
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str


def current_gpu() -> Gpu | None:
    """The first CUDA device, or None when cuda-python or a device is missing."""
    try:
        runtime = cudart()
        count = check(runtime.cudaGetDeviceCount())
        if count < 1:
            return None
        props = check(runtime.cudaGetDeviceProperties(0))
    # no binding (MissingDependency), no device or driver (a CUDA error code: ModelError), a
    # driver library that does not load (OSError, RuntimeError); anything else is a bug
    except (MissingDependency, ModelError, ImportError, OSError, RuntimeError):
        return None
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return Gpu(name.strip("\x00"), f"{props.major}.{props.minor}")


class PinnedBuffer:
    """Page-locked host memory viewed as a NumPy array (fast, truly asynchronous copies)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.pointer = check(cudart().cudaMallocHost(self.nbytes))
        raw = (ctypes.c_byte * self.nbytes).from_address(self.pointer)
        self.array = np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free(self) -> None:
        if self.pointer:
            check(cudart().cudaFreeHost(self.pointer))
            self.pointer = 0


class DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.pointer = check(cudart().cudaMalloc(nbytes))

    def free(self) -> None:
        if self.pointer:
            check(cudart().cudaFree(self.pointer))
            self.pointer = 0
