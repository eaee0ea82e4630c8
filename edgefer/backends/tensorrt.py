"""TensorRT runtime behind the ``Engine`` interface (TensorRT 10 tensor-name API).

One execution context, one CUDA stream, pinned host buffers and device buffers sized for the
optimization profile's maximum batch; per call: set the input shape, copy in asynchronously,
``execute_async_v3``, copy out, synchronize once. ``tensorrt`` and cuda-python are imported
when an engine is opened, never at module import.

Not run on a GPU by the authors: this machine has none (see README, "TensorRT").
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.backends.base import Engine
from edgefer.backends.cuda import DeviceBuffer, PinnedBuffer, check, cudart, require_tensorrt
from edgefer.errors import ModelError
from edgefer.manifest import InputSpec

log = logging.getLogger(__name__)


class TensorRTEngine(Engine):
    name = "tensorrt"

    def __init__(self, plan_path: Path, spec: InputSpec,
                 expected_parts: dict[str, str] | None = None) -> None:
        trt = require_tensorrt()
        check_plan_metadata(plan_path, expected_parts)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self._engine is None:
            raise ModelError(f"TensorRT could not load {plan_path} (built with another TensorRT "
                             "version or GPU?); rebuild it with: edgefer build")
        self._context = self._engine.create_execution_context()
        self._input, self._output = _io_names(trt, self._engine)
        min_shape, _, max_shape = self._engine.get_tensor_profile_shape(self._input, 0)
        super().__init__(spec, max_batch=int(max_shape[0]))
        self.min_batch = int(min_shape[0])
        classes = int(self._engine.get_tensor_shape(self._output)[-1])
        item_shape = (spec.channels, spec.height, spec.width)
        self._stream = check(cudart().cudaStreamCreate())
        self._host_in = PinnedBuffer((self.max_batch, *item_shape), np.float32)
        self._host_out = PinnedBuffer((self.max_batch, classes), np.float32)
        self._device_in = DeviceBuffer(self._host_in.nbytes)
        self._device_out = DeviceBuffer(self._host_out.nbytes)
        self._context.set_tensor_address(self._input, self._device_in.pointer)
        self._context.set_tensor_address(self._output, self._device_out.pointer)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        runtime = cudart()
        n = len(batch)
        if n < self.min_batch:
            raise ModelError(f"batch of {n} is below the engine profile's minimum {self.min_batch}")
        self._host_in.array[:n] = batch
        self._context.set_input_shape(self._input, batch.shape)
        to_device = runtime.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(runtime.cudaMemcpyAsync(self._device_in.pointer, self._host_in.pointer,
                                      batch.nbytes, to_device, self._stream))
        if not self._context.execute_async_v3(self._stream):
            raise ModelError("TensorRT execution failed")
        out_bytes = n * self._host_out.array.shape[1] * 4
        check(runtime.cudaMemcpyAsync(self._host_out.pointer, self._device_out.pointer,
                                      out_bytes, to_host, self._stream))
        check(runtime.cudaStreamSynchronize(self._stream))
        return self._host_out.array[:n].copy()

    def close(self) -> None:
        for buffer in ("_host_in", "_host_out", "_device_in", "_device_out"):
            if hasattr(self, buffer):
                getattr(self, buffer).free()
        if getattr(self, "_stream", None) is not None:
            check(cudart().cudaStreamDestroy(self._stream))
            self._stream = None
        self._context = self._engine = self._runtime = None


def _io_names(trt: Any, engine: Any) -> tuple[str, str]:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"expected one input and one output tensor, got {inputs} / {outputs}")
    return inputs[0], outputs[0]


def metadata_path(plan_path: Path) -> Path:
    return plan_path.with_suffix(".json")


def read_plan_metadata(plan_path: Path) -> dict[str, Any] | None:
    """The build record beside a plan; None when it is missing or unreadable (a build that
    stopped before writing it whole): such a plan is rebuilt, never trusted."""
    try:
        metadata = json.loads(metadata_path(plan_path).read_text())
    except (OSError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) else None


def check_plan_metadata(plan_path: Path, expected_parts: dict[str, str] | None) -> dict[str, Any]:
    """Refuse a plan whose recorded key parts differ from ``expected_parts`` (another GPU,
    TensorRT version or ONNX file), with a hint to rebuild."""
    if not plan_path.is_file():
        raise ModelError(f"TensorRT plan not found: {plan_path}; build it with: edgefer build")
    metadata = read_plan_metadata(plan_path)
    if metadata is None:
        raise ModelError(f"{plan_path} has no readable {metadata_path(plan_path).name}; rebuild "
                         "it with: edgefer build")
    parts = metadata.get("parts", {})
    mismatched = [k for k, v in (expected_parts or {}).items() if parts.get(k) != v]
    if mismatched:
        raise ModelError(
            f"{plan_path} was built for {parts.get('gpu', '?')} (sm {parts.get('compute_capability', '?')}) "
            f"with TensorRT {parts.get('tensorrt', '?')}; it differs here in {', '.join(mismatched)}. "
            "Rebuild it on this machine with: edgefer build")
    return metadata
