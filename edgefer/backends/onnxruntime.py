"""ONNX Runtime backend: the CPU default, and the CUDA / TensorRT execution providers on GPUs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgefer.backends.base import Engine
from edgefer.errors import ModelError, require
from edgefer.manifest import InputSpec

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"

    def __init__(self, model_path: Path, spec: InputSpec, threads: int = 1,
                 providers: list[str | tuple[str, dict]] | None = None) -> None:
        """``threads`` is intra-op parallelism: 1 keeps the other core for decode and detection."""
        super().__init__(spec)
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(model_path), options,
                                                 providers=providers or [CPU])
        except Exception as err:  # ORT raises its own untyped errors for bad files
            raise ModelError(f"cannot load ONNX model {model_path}: {err}") from err
        self.providers = self._session.get_providers()
        inputs = self._session.get_inputs()
        self._input_name = inputs[0].name
        log.info("onnxruntime session on %s with providers %s", model_path, self.providers)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: batch})[0]

    def close(self) -> None:
        self._session = None
