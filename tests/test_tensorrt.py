"""TensorRT path: everything that can be checked without a GPU runs here; GPU tests skip."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgefer.backends import select
from edgefer.backends.build import (
    BuildOptions,
    cache_key,
    cache_key_parts,
    calibration_batches,
    check_onnx_for_tensorrt,
)
from edgefer.backends.tensorrt import check_plan_metadata
from edgefer.errors import ConfigError, InputError, ModelError
from edgefer.manifest import load_model_entry


@pytest.fixture(scope="module")
def entry():
    return load_model_entry()


def test_shipped_onnx_is_ready_for_tensorrt(entry):
    assert check_onnx_for_tensorrt(entry.file) == []


def toy_onnx(path: Path, op: str = "Relu", batch: str | int = "batch", side: int | str = 48) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    shape = [batch, 1, side, side]
    node = helper.make_node(op, ["x"], ["y"])
    graph = helper.make_graph([node], "toy",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({}, None),
    ({"op": "Einsum"}, "operator Einsum"),
    ({"batch": 1}, "batch axis is not dynamic"),
    ({"side": "h"}, "axis 2 is not static"),
])
def test_onnx_readiness_checks(tmp_path, kwargs, problem):
    problems = check_onnx_for_tensorrt(toy_onnx(tmp_path / "toy.onnx", **kwargs))
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems)


def test_calibration_batches_match_inference_preprocessing(entry, tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    images = []
    for i in range(21):
        image = rng.integers(0, 255, (64, 64), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), image)
        images.append(image)
    batches = calibration_batches(entry, tmp_path, count=20, batch_size=8)
    assert [b.shape for b in batches] == [(8, 1, 48, 48)] * 2  # 20 images: 2 full batches
    assert all(b.dtype == np.float32 for b in batches)
    resized = cv2.resize(images[0], (48, 48), interpolation=cv2.INTER_AREA)
    expected = entry.input.normalize(resized[None])[0]
    assert any(np.allclose(sample, expected) for b in batches for sample in b)


def test_calibration_through_the_detector(entry, tmp_path, portrait):
    import cv2

    cv2.imwrite(str(tmp_path / "portrait.jpg"), portrait)
    (batch,) = calibration_batches(entry, tmp_path, 10, batch_size=1, mode="detect")
    assert batch.shape == (1, 1, 48, 48) and batch.min() >= -2.01 and batch.max() <= 2.01


def test_too_few_calibration_faces_is_an_error_before_the_build(entry, tmp_path, portrait):
    import cv2

    cv2.imwrite(str(tmp_path / "portrait.jpg"), portrait)  # one face: not one batch of 16
    with pytest.raises(InputError, match=r"1 usable faces .* needs at least 16"):
        calibration_batches(entry, tmp_path, 10, batch_size=16, mode="detect")


def test_cache_key_changes_with_every_part(entry):
    options = BuildOptions()
    base = cache_key_parts(entry, options, "Orin", "8.7", "10.3.0")
    keys = {cache_key(base)}
    variants = [cache_key_parts(entry, options, "RTX 4090", "8.7", "10.3.0"),
                cache_key_parts(entry, options, "Orin", "8.9", "10.3.0"),
                cache_key_parts(entry, options, "Orin", "8.7", "10.4.0"),
                cache_key_parts(entry, replace(options, precision="fp32"), "Orin", "8.7", "10.3.0"),
                cache_key_parts(entry, replace(options, max_batch=32), "Orin", "8.7", "10.3.0"),
                cache_key_parts(replace(entry, sha256="0" * 64), options, "Orin", "8.7", "10.3.0")]
    keys |= {cache_key(v) for v in variants}
    assert len(keys) == 1 + len(variants)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"precision": "int4"}, "precision"),
    ({"min_batch": 2, "opt_batch": 1}, "batch profile"),
    ({"precision": "int8"}, "calibration"),
])
def test_invalid_build_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BuildOptions(**kwargs)


def test_plan_from_another_machine_is_refused(tmp_path):
    plan = tmp_path / "m-fp16-abc.plan"
    plan.write_bytes(b"plan")
    plan.with_suffix(".json").write_text(json.dumps({"key": "k", "parts": {
        "gpu": "NVIDIA RTX 4090", "compute_capability": "8.9", "tensorrt": "10.3.0",
        "onnx_sha256": "x"}}))
    here = {"gpu": "Orin", "compute_capability": "8.7", "tensorrt": "10.3.0", "onnx_sha256": "x"}
    with pytest.raises(ModelError, match=r"RTX 4090.*differs here in gpu, compute_capability.*"
                                         r"edgefer build"):
        check_plan_metadata(plan, here)
    with pytest.raises(ModelError, match="not found"):
        check_plan_metadata(tmp_path / "missing.plan", here)


@pytest.mark.parametrize("record", [None, '{"key": "k", "par', "[]"])
def test_a_plan_without_a_whole_record_is_rebuilt_not_used(tmp_path, monkeypatch, record):
    """A build stopped between the plan and its record (or a torn record): the plan is refused
    with the command to rebuild, and never chosen by --engine auto."""
    from edgefer.backends import select

    monkeypatch.setattr(select, "environment_parts", lambda entry: {"gpu": "Orin"})

    plans = tmp_path / "plans"
    plans.mkdir()
    plan = plans / "m-fp16-abc.plan"
    plan.write_bytes(b"plan")
    if record is not None:
        plan.with_suffix(".json").write_text(record)
    with pytest.raises(ModelError, match=r"no readable m-fp16-abc\.json; rebuild it with: edgefer build"):
        check_plan_metadata(plan, None)
    assert select.find_plan(SimpleNamespace(name="m", file=tmp_path / "m.onnx"), "fp16") is None
    plan.with_suffix(".json").write_text(json.dumps({"parts": {"gpu": "Orin"}}))
    assert select.find_plan(SimpleNamespace(name="m", file=tmp_path / "m.onnx"), "fp16") == plan


def test_auto_falls_back_without_tensorrt(entry, monkeypatch):
    monkeypatch.setattr(select.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(select, "ort_gpu_providers", lambda: [])
    choice = select.choose_engine(entry)
    assert choice.engine == "onnxruntime" and "tensorrt module is not installed" in choice.reason
    monkeypatch.setattr(select, "ort_gpu_providers", lambda: ["CUDAExecutionProvider"])
    choice = select.choose_engine(entry)
    assert choice.engine == "onnxruntime-gpu" and "CUDAExecutionProvider" in choice.reason


def test_auto_runs_on_the_cpu_when_a_listed_gpu_provider_cannot_start(entry, monkeypatch):
    """onnxruntime-gpu installed on a machine whose GPU (or CUDA) is missing lists its providers
    but cannot start them: an explicit --engine onnxruntime-gpu is refused, auto runs on the CPU."""
    from edgefer.backends import onnxruntime as ort_backend
    from edgefer.backends import open_engine
    from edgefer.backends.onnxruntime import CPU
    from edgefer.manifest import load_model_entry

    real = ort_backend.OnnxRuntimeEngine

    def gpu_fails_to_start(path, spec, threads=1, providers=None):  # what ORT does without CUDA
        return real(path, spec, threads=threads, providers=[CPU])

    monkeypatch.setattr(ort_backend, "OnnxRuntimeEngine", gpu_fails_to_start)
    monkeypatch.setattr(select.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(select, "ort_gpu_providers", lambda: ["CUDAExecutionProvider"])
    with pytest.raises(ModelError, match="did not start"):
        open_engine(load_model_entry(), "onnxruntime-gpu")
    with open_engine(load_model_entry(), "auto") as engine:
        assert engine.providers == [CPU] and engine.entry == load_model_entry()


def test_auto_falls_back_without_a_gpu(entry, monkeypatch):
    import edgefer.backends.cuda as cuda

    monkeypatch.setattr(select.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(cuda, "current_gpu", lambda: None)
    monkeypatch.setattr(select, "ort_gpu_providers", lambda: [])
    choice = select.choose_engine(entry)
    assert choice.engine == "onnxruntime" and "no CUDA GPU" in choice.reason


def test_auto_takes_tensorrt_only_with_a_plan_built_for_this_gpu(entry, monkeypatch, tmp_path):
    import edgefer.backends.cuda as cuda

    monkeypatch.setattr(select.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(cuda, "current_gpu", lambda: SimpleNamespace(name="Orin"))
    monkeypatch.setattr(select, "ort_gpu_providers", lambda: [])
    monkeypatch.setattr(select, "find_plan", lambda entry, precision: None)
    choice = select.choose_engine(entry)
    assert choice.engine == "onnxruntime" and "edgefer build" in choice.reason
    monkeypatch.setattr(select, "find_plan", lambda entry, precision: tmp_path / "m.plan")
    assert select.choose_engine(entry).engine == "tensorrt"


def test_core_imports_without_gpu_packages():
    """Every module but training's (a new backend included, without being listed here) imports
    without the heavy optional packages: they are imported where they are used."""
    code = ("import importlib, pkgutil, sys, edgefer\n"
            "for m in pkgutil.walk_packages(edgefer.__path__, 'edgefer.'):\n"
            "    if not m.name.startswith(('edgefer.training', 'edgefer.__main__')):\n"
            "        importlib.import_module(m.name)\n"
            "heavy = [m for m in ('tensorrt', 'torch', 'cuda', 'openai', 'ray') if m in sys.modules]\n"
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(select.importlib.util.find_spec("tensorrt") is not None,
                    reason="checks the message shown when tensorrt is missing")
def test_missing_tensorrt_says_what_would_help(entry, monkeypatch, tmp_path):
    """With an NVIDIA driver, the install command; without one, that TensorRT cannot run here
    (installing its wheels would not help)."""
    from edgefer.backends import cuda, open_engine
    from edgefer.errors import MissingDependency

    driver = tmp_path / "version"
    driver.write_text("NVRM version")
    monkeypatch.setattr(cuda, "DRIVER_SIGNS", (str(driver),))
    with pytest.raises(MissingDependency, match=r"pip install 'edgefer\[tensorrt\]'"):
        open_engine(entry, "tensorrt")
    monkeypatch.setattr(cuda, "DRIVER_SIGNS", (str(tmp_path / "absent"),))
    with pytest.raises(ModelError, match=r"no NVIDIA GPU driver on this machine.*ONNX Runtime"):
        open_engine(entry, "tensorrt")


def cuda_available() -> bool:
    try:
        from edgefer.backends.cuda import current_gpu

        return select.importlib.util.find_spec("tensorrt") is not None and current_gpu() is not None
    except Exception:
        return False


gpu = pytest.mark.skipif(not cuda_available(), reason="needs an NVIDIA GPU with TensorRT")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gpu_build_run_and_parity(entry, tmp_path, precision):
    from edgefer.backends import open_engine
    from edgefer.backends.build import build_engine

    build_engine(entry, BuildOptions(precision=precision, max_batch=8), entry.file.parent)
    x = np.random.default_rng(0).normal(size=(5, 1, 48, 48)).astype(np.float32)
    with open_engine(entry, "tensorrt", precision=precision) as trt_engine, \
            open_engine(entry, "onnxruntime") as cpu_engine:
        from edgefer.training.metrics import softmax

        difference = np.abs(softmax(trt_engine.run(x)) - softmax(cpu_engine.run(x))).max()
        assert difference <= 1e-2
        assert trt_engine.run(x[:1]).shape == (1, 7)


def test_build_check_only_needs_no_gpu_and_says_which_file_it_checked():
    """`edgefer build --check-only` is the part of a Jetson build that runs anywhere: it names
    the float original an int8 entry builds from, and checks the build flags too."""
    pytest.importorskip("onnx")
    from conftest import assert_one_line_error, run_cli

    from edgefer.manifest import float_source

    int8 = load_model_entry(None)
    result = run_cli("build", "--check-only", "--model", int8.name)
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert f"{float_source(int8).file.name} (the float original of {int8.name}, which TensorRT " \
           "builds at fp16): ready for TensorRT" in said
    assert_one_line_error(run_cli("build", "--check-only", "--max-batch", "0"), 2,
                          "batch profile needs 1 <= min <= opt <= max")
