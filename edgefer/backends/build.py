"""Building TensorRT engines from the shipped ONNX models, and the engine cache.

INT8 uses TensorRT's entropy calibrator (``IInt8EntropyCalibrator2``) with a calibration
cache, fed by the project's own preprocessing (pre-cropped faces, or full images through the
detector and aligner). Why not explicit Q/DQ: it needs NVIDIA ModelOpt or a quantization-aware
export in the training stack, while a calibrator needs nothing beyond TensorRT and a folder
of faces; for a 1.8M-parameter CNN of plain convolutions the two give the same kernels.
TensorRT 10 marks implicit quantization as deprecated, so the accuracy check after every
build (``edgefer eval --engine tensorrt``) is part of the workflow.

Plans are cached under ``engines/plans/`` (not committed) with a key of everything that makes
a plan valid: GPU name and compute capability, TensorRT version, precision, batch profile and
the ONNX file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.backends.base import PRECISIONS
from edgefer.backends.cuda import DeviceBuffer, check, cudart, current_gpu, require_tensorrt
from edgefer.errors import ConfigError, InputError, ModelError, require
from edgefer.files import atomic_write, write_json_atomic
from edgefer.manifest import ModelEntry
from edgefer.sources import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

# ONNX operators TensorRT 10's parser supports that a CNN of this family may contain.
TENSORRT_OPS = frozenset({
    "Conv", "BatchNormalization", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
    "Flatten", "Reshape", "Gemm", "MatMul", "Add", "Mul", "Sub", "Div", "Softmax", "Identity",
    "Dropout", "Concat", "Clip", "Sigmoid", "Transpose", "Constant", "Shape", "Gather",
    "Unsqueeze", "Squeeze", "PRelu", "LeakyRelu", "HardSigmoid", "Pad", "ReduceMean",
    "QuantizeLinear", "DequantizeLinear", "Slice", "Expand", "Range", "Cast",
})


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 4  # a typical number of faces in a frame
    max_batch: int = 16
    workspace_mb: int = 512
    timing_cache: Path | None = None
    calibration_dir: Path | None = None
    calibration_images: int = 512
    calibration_batch: int = 16
    calibration_mode: str = "crops"  # or "detect": full images through detector and aligner

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"batch profile needs 1 <= min <= opt <= max, got "
                              f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if self.precision == "int8" and self.calibration_dir is None:
            raise ConfigError("int8 needs --calibration DIR (face crops or images)")
        if self.calibration_mode not in ("crops", "detect"):
            raise ConfigError(f"calibration mode must be crops or detect, got "
                              f"{self.calibration_mode!r}")


def cache_key_parts(entry: ModelEntry, options: BuildOptions, gpu: str, compute: str,
                    tensorrt_version: str) -> dict[str, str]:
    return {"gpu": gpu, "compute_capability": compute, "tensorrt": tensorrt_version,
            "precision": options.precision,
            "batch_profile": f"{options.min_batch}/{options.opt_batch}/{options.max_batch}",
            "onnx_sha256": entry.sha256}


def cache_key(parts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def plan_path(engines_dir: Path, entry: ModelEntry, options: BuildOptions, key: str) -> Path:
    return engines_dir / "plans" / f"{entry.name}-{options.precision}-{key[:16]}.plan"


def require_ready_for_tensorrt(path: Path) -> None:
    """Raise ``ModelError`` naming every problem ``check_onnx_for_tensorrt`` finds."""
    problems = check_onnx_for_tensorrt(path)
    if problems:
        raise ModelError("ONNX model not ready for TensorRT: " + "; ".join(problems))


def check_onnx_for_tensorrt(path: Path) -> list[str]:
    """Problems that would stop or slow TensorRT: unsupported ops, a non-dynamic batch axis,
    dynamic spatial axes. Empty when the model is ready."""
    onnx = require("onnx")  # alone: the check runs where neither PyTorch nor TensorRT is
    model = onnx.load(str(path))
    problems = [f"operator {node.op_type} ({node.name}) is not in the supported set"
                for node in model.graph.node if node.op_type not in TENSORRT_OPS]
    initializers = {i.name for i in model.graph.initializer}
    for tensor in (t for t in model.graph.input if t.name not in initializers):
        dims = tensor.type.tensor_type.shape.dim
        if not dims or not dims[0].dim_param:
            problems.append(f"input {tensor.name}: the batch axis is not dynamic")
        for axis, dim in enumerate(dims[1:], start=1):
            if dim.dim_param or dim.dim_value <= 0:
                problems.append(f"input {tensor.name}: axis {axis} is not static")
    return problems


def calibration_batches(entry: ModelEntry, folder: Path, count: int, batch_size: int,
                        mode: str = "crops", seed: int = 0) -> list[np.ndarray]:
    """Float32 NCHW batches preprocessed exactly as at inference (the manifest's contract),
    all of them full (TensorRT calibrates at one batch size; the remainder is left out).

    ``crops``: images are face crops (any class-folder or flat layout); ``detect``: full images
    go through the detector and aligner, and each found face is one sample. Read before the
    build starts, so that too few faces is an error here, not a calibration on nothing.
    """
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"no calibration images under {folder}")
    rng = np.random.default_rng(seed)
    paths = [paths[i] for i in rng.permutation(len(paths))[:count]]
    samples = _crop_samples(entry, paths) if mode == "crops" else _detected_samples(entry, paths)
    batch: list[np.ndarray] = []
    batches: list[np.ndarray] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == batch_size:
            batches.append(np.stack(batch))
            batch = []
    if not batches:
        raise InputError(f"{len(batch)} usable faces in {folder} ({len(paths)} images read, "
                         f"--calibration-images {count}): int8 calibration needs at least "
                         f"{batch_size}")
    return batches


def _crop_samples(entry: ModelEntry, paths: list[Path]) -> Iterator[np.ndarray]:
    from edgefer.stills import crop_batch

    for path in paths:
        yield crop_batch([path], entry.input)[0]


def _detected_samples(entry: ModelEntry, paths: list[Path]) -> Iterator[np.ndarray]:
    from edgefer.stills import StillCropper

    with StillCropper(entry.input) as cropper:
        for path in paths:
            yield from entry.input.normalize(cropper.crops(str(path)))


def make_calibrator(batches: Iterator[np.ndarray], batch_size: int, cache_file: Path) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``batches`` (subclassing needs tensorrt, hence here)."""
    trt = require_tensorrt()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = batches
            self._device: DeviceBuffer | None = None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            batch = np.ascontiguousarray(batch, dtype=np.float32)
            if self._device is None:
                self._device = DeviceBuffer(batch.nbytes)
            check(cudart().cudaMemcpy(self._device.pointer, batch.ctypes.data, batch.nbytes,
                                      cudart().cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [self._device.pointer]

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: bytes) -> None:
            cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()


@dataclass(frozen=True)
class BuildReport:
    plan: Path
    key: str
    parts: dict[str, str]
    layers: int
    size_bytes: int
    seconds: float
    precision: str


def build_engine(entry: ModelEntry, options: BuildOptions, engines_dir: Path,
                 status: Callable[[str], None] = log.info) -> BuildReport:
    """Parse the ONNX file, build a serialized plan for this GPU, and write it with metadata."""
    trt = require_tensorrt()
    gpu = current_gpu()
    if gpu is None:
        raise ModelError("no CUDA GPU found: TensorRT engines can only be built on the GPU "
                         "that will run them")
    require_ready_for_tensorrt(entry.file)
    parts = cache_key_parts(entry, options, gpu.name, gpu.compute_capability, trt.__version__)
    key = cache_key(parts)
    plan = plan_path(engines_dir, entry, options, key)
    plan.parent.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(entry.file.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {entry.file}: {errors}")
    config = _builder_config(trt, builder, network, entry, options, plan, status)
    start = time.perf_counter()
    status(f"building {options.precision} engine for {gpu.name} (sm {gpu.compute_capability})")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError("TensorRT engine build failed (see the TensorRT log above)")
    seconds = time.perf_counter() - start
    atomic_write(plan, lambda handle: handle.write(bytes(serialized)))
    _save_timing_cache(config, options)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
    report = BuildReport(plan, key, parts, engine.num_layers, plan.stat().st_size, seconds,
                         options.precision)
    from edgefer.backends.tensorrt import metadata_path

    write_json_atomic(metadata_path(plan), {  # a plan without it is never used
        "key": key, "parts": parts,
        "options": asdict(options) | {"timing_cache": str(options.timing_cache),
                                      "calibration_dir": str(options.calibration_dir)},
        "layers": report.layers, "build_seconds": round(seconds, 1)})
    return report


def _builder_config(trt: Any, builder: Any, network: Any, entry: ModelEntry,
                    options: BuildOptions, plan: Path, status: Callable[[str], None]) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    spec = entry.input
    item = (spec.channels, spec.height, spec.width)
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, (options.min_batch, *item),
                      (options.opt_batch, *item), (options.max_batch, *item))
    config.add_optimization_profile(profile)
    if options.timing_cache is not None:
        data = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=False)
    if options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if options.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        cache = plan.with_suffix(".calib")
        batches: list[np.ndarray] = []  # with a cache, TensorRT reads its scales, not faces
        if cache.is_file():
            status(f"calibrating with {cache.name}, the scales an earlier build measured")
        else:
            batches = calibration_batches(entry, options.calibration_dir,
                                          options.calibration_images, options.calibration_batch,
                                          options.calibration_mode)
            status(f"calibrating on {len(batches) * options.calibration_batch} faces from "
                   f"{options.calibration_dir}")
        config.int8_calibrator = make_calibrator(iter(batches), options.calibration_batch, cache)
        calibration = builder.create_optimization_profile()
        calibration.set_shape(network.get_input(0).name, *(((options.calibration_batch, *item),) * 3))
        config.set_calibration_profile(calibration)
    return config


def _save_timing_cache(config: Any, options: BuildOptions) -> None:
    if options.timing_cache is not None:
        options.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
