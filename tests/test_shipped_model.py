"""The shipped artifacts: manifest schema and hashes, ONNX vs PyTorch parity on real faces,
the preprocessing contract."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.manifest import (
    MANIFEST_PATH,
    detector_path,
    float_source,
    load_model_entry,
    read_manifest,
    validate_model_entry,
)


def test_manifest_entries_are_valid_and_files_match_their_hashes():
    manifest = read_manifest()
    assert manifest["default"] in manifest["models"]
    for name, raw in manifest["models"].items():
        validate_model_entry(raw)
        entry = load_model_entry(name)
        entry.verify()
        assert entry.file.stat().st_size <= 10_000_000
        for metric in raw["metrics"].values():
            assert metric["command"].startswith(("edgefer ", "python "))
    for kind in ("short", "full"):
        assert detector_path(kind).is_file()
    recipe = MANIFEST_PATH.parent / load_model_entry().raw["train"]["recipe"]
    assert recipe.is_file()


def test_an_input_the_aligner_cannot_make_is_a_model_error():
    """A manifest entry with a non-square input fails as the model's fault (exit 3), not as an
    internal error once the engine is open."""
    from dataclasses import replace

    from edgefer.errors import ModelError

    spec = load_model_entry().input
    with pytest.raises(ModelError, match="not square"):
        replace(spec, width=spec.width - 8)


def test_onnx_matches_pytorch_on_real_faces(demo_clip):
    pytest.importorskip("torch")
    from edgefer.align import Aligner
    from edgefer.backends import open_engine
    from edgefer.detect import DetectorOptions, FaceDetector
    from edgefer.sources import open_source
    from edgefer.training.metrics import softmax

    default = load_model_entry()
    entry = float_source(default)  # the int8 default is checked against it below
    aligner = Aligner(entry.input)
    batches = []
    with FaceDetector(DetectorOptions()) as detector, open_source(str(demo_clip), stride=10) as src:
        for frame in src:
            batch, valid = aligner.align(frame.image, detector.detect(frame))
            batches.append(batch[valid])
    faces = np.concatenate(batches)
    assert len(faces) >= 15
    with open_engine(entry, "onnxruntime") as ort_engine, open_engine(entry, "torch") as torch_engine, \
            open_engine(default, "onnxruntime") as int8_engine:
        float_probs = softmax(ort_engine.run(faces))
        difference = np.abs(float_probs - softmax(torch_engine.run(faces))).max()
        int8_probs = softmax(int8_engine.run(faces))
    assert difference <= 1e-4
    # the quantized default stays close to its float original on real faces
    assert np.abs(int8_probs - float_probs).max() <= 0.1
    assert (int8_probs.argmax(1) == float_probs.argmax(1)).mean() >= 0.9


def test_an_engine_with_a_batch_limit_runs_larger_batches_in_chunks():
    """A TensorRT plan takes at most its profile's batch (16 by default); a group photo or an
    evaluation batch can hold more faces: the engine splits them, rows in order."""
    from edgefer.backends import open_engine

    entry = load_model_entry()
    batch = np.random.default_rng(0).normal(size=(37, 1, 48, 48)).astype(np.float32)
    with open_engine(entry) as engine:
        whole = engine.run(batch)
        engine.max_batch = 16
        assert np.allclose(engine.run(batch), whole, atol=1e-5)
        assert engine.run(batch[:1]).shape == (1, 7)


def test_input_contract_formula():
    spec = load_model_entry().input
    pixels = np.array([[[0, 128], [255, 64]]], dtype=np.uint8)
    x = spec.normalize(pixels)
    expected = (pixels.astype(np.float32) * spec.scale - spec.mean[0]) / spec.std[0]
    np.testing.assert_allclose(x[0, 0], expected[0], rtol=1e-6)
    assert x.shape == (1, 1, 2, 2) and x.dtype == np.float32


def test_a_manifest_without_detectors_says_to_copy_engines_whole(tmp_path):
    """What an export into a fresh, empty EDGEFER_MANIFEST leads to."""
    from edgefer.errors import ModelError

    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"schema": 1, "models": {}}')
    with pytest.raises(ModelError, match="copied whole"):
        detector_path("short", manifest)


def test_an_int8_models_float_source_is_read_from_its_own_manifest(tmp_path):
    """A scratch manifest's int8 model runs on GPUs and PyTorch as its own float source, never
    as a same-named model of the checkout's manifest."""
    import json

    from edgefer.apps.distributed import running_model
    from edgefer.pipeline import RecognizerOptions

    manifest = read_manifest()
    default = manifest["default"]
    source = manifest["models"][default]["quantized_from"]
    manifest["models"]["mine"] = manifest["models"].pop(source)
    manifest["models"][default]["quantized_from"] = "mine"
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    assert float_source(load_model_entry(default, path)).name == "mine"
    options = RecognizerOptions(model=default, manifest=str(path), engine="torch")  # a str too
    assert running_model(options) == "mine"
    assert running_model(RecognizerOptions(model=default, manifest=path)) == default
