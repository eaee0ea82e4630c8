"""Export a trained checkpoint to ONNX, check it, calibrate it and describe it in the manifest.

Export is checked three ways: ``onnx.checker``, a dynamic-batch run in ONNX Runtime, and parity
of probabilities with PyTorch on real validation images (max absolute difference <= 1e-4).
The temperature is fitted on the validation split's logits, never on the test split.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.errors import InputError, ModelError, require
from edgefer.files import atomic_write
from edgefer.manifest import (
    FER2013_ROLL_TOLERANCE,
    MANIFEST_PATH,
    REPOSITORY,
    CropSpec,
    InputSpec,
    ModelEntry,
    sha256_file,
)
from edgefer.training import datasets, metrics
from edgefer.training.recipe import Recipe
from edgefer.types import EMOTIONS

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Member:
    """A trained network inside an exported model, and what it learned from (for the manifest)."""

    recipe: dict[str, Any]
    data: dict[str, Any]
    epoch: int


@dataclass(frozen=True)
class ExportReport:
    onnx_path: Path
    weights_path: Path
    temperature: float
    parity_max_abs_diff: float
    parity_images: int
    val_accuracy: float
    val_ece_before: float
    val_ece_after: float
    size_bytes: int
    parameters: int
    members: tuple[Member, ...]
    tta: str = "none"

    @property
    def recipe(self) -> dict[str, Any]:
        """The first network's recipe: the input and labels every member shares."""
        return self.members[0].recipe


def export_onnx(module: Any, path: Path, spec: InputSpec, opset: int = OPSET) -> None:
    """Write ``module`` as ONNX with a dynamic batch axis, then validate it with ``onnx.checker``."""
    torch = require("torch", "torch")
    onnx = require("onnx", "torch")
    dummy = torch.zeros(2, spec.channels, spec.height, spec.width)
    torch.onnx.export(module.eval(), (dummy,), str(path), input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)


def parity(module: Any, onnx_path: Path, batch: np.ndarray) -> float:
    """Max absolute difference of softmax probabilities between PyTorch and ONNX Runtime."""
    torch = require("torch", "torch")
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        reference = torch.softmax(module(torch.from_numpy(batch)), 1).numpy()
    logits = session.run(None, {INPUT_NAME: batch})[0]
    return float(np.abs(metrics.softmax(logits) - reference).max())


def input_spec(recipe: dict[str, Any]) -> InputSpec:
    """The input contract of a network trained with ``recipe``. Its live framing follows what the
    network learnt: one trained on FER2013's own crops alone reads faces at the roll those crops
    show, one that also saw live crops reads faces as those crops were framed (levelled beyond
    the recipe's ``live_roll_tolerance``)."""
    size = recipe["input_size"]
    roll = recipe.get("live_roll_tolerance", 0.0) if recipe.get("live_framing") \
        else FER2013_ROLL_TOLERANCE
    return InputSpec(name=INPUT_NAME, height=size, width=size, channels=1, color="gray",
                     scale=1 / 255, mean=(recipe["mean"],), std=(recipe["std"],),
                     crop=CropSpec(roll_tolerance=roll))


def validation_folder(val_dir: str, val_glob: str, ferplus_csv: str | None
                      ) -> datasets.ImageFolder:
    """The validation images with the labels the model is judged by: the folder's, or the FER+
    majority (images without one left out) for models trained to FER+."""
    folder = datasets.scan_image_folder(val_dir, val_glob)
    if ferplus_csv:
        folder, _ = datasets.relabel_ferplus(folder, datasets.ferplus_majority(ferplus_csv))
    return folder


def export_checkpoint(checkpoints: Sequence[Path], name: str, val_dir: str, val_glob: str,
                      engines_dir: Path = MANIFEST_PATH.parent, tta: str = "none",
                      ferplus_csv: str | None = None, weights: str = "model",
                      recipe_files: Sequence[str] = ()) -> ExportReport:
    """Export ``checkpoints`` as ``engines/<name>.onnx`` (+ ``.pt`` weights) and calibrate it.

    Several checkpoints export as one ensemble: their logits averaged inside the graph.
    ``weights`` picks a ``last.pt``'s final weights or its weight average (``"ema"``), as in
    ``edgefer.backends.torch.load_checkpoint``. ``tta="flip"`` exports the model averaged with
    its mirror image (twice the compute). Models trained to FER+ (``target_labels = "ferplus"``)
    are calibrated against the FER+ majority, which ``ferplus_csv`` must then provide.
    ``recipe_files``, the provenance the manifest will record, must describe these networks.
    """
    torch = require("torch", "torch")
    from edgefer.models import average_of, with_flip_average

    networks, members = load_members(checkpoints, weights)
    for path, member, recipe_file in zip(checkpoints, members, recipe_files, strict=False):
        check_recipe_file(path, member.recipe, recipe_file)
    if members[0].recipe.get("target_labels") == "ferplus" and not ferplus_csv:
        raise ModelError(f"{checkpoints[0]} learned FER+ labels: calibrate it against them with "
                         "--ferplus-labels ferplus_labels.csv")
    base = networks[0] if len(networks) == 1 else average_of(networks)
    module = with_flip_average(base).eval() if tta == "flip" else base.eval()
    spec = input_spec(members[0].recipe)
    engines_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = engines_dir / f"{name}.onnx"
    weights_path = engines_dir / f"{name}.pt"
    export_onnx(module, onnx_path, spec)
    shipped = shipped_weights(networks, members)
    atomic_write(weights_path, lambda handle: torch.save(shipped, handle))
    folder = validation_folder(val_dir, val_glob, ferplus_csv)
    batch = spec.normalize(datasets.load_pixels(folder, (spec.height, spec.width)))
    max_diff = parity(module, onnx_path, batch)
    if max_diff > PARITY_TOLERANCE:
        raise ModelError(f"ONNX export differs from PyTorch by {max_diff:.2e} "
                         f"(tolerance {PARITY_TOLERANCE:.0e})")
    with torch.inference_mode():
        logits = module(torch.from_numpy(batch)).numpy()
    temperature = metrics.fit_temperature(logits, folder.labels)
    return ExportReport(
        onnx_path=onnx_path, weights_path=weights_path, temperature=temperature,
        parity_max_abs_diff=max_diff, parity_images=len(batch),
        val_accuracy=metrics.accuracy(folder.labels, logits.argmax(1)),
        val_ece_before=metrics.expected_calibration_error(metrics.softmax(logits), folder.labels),
        val_ece_after=metrics.expected_calibration_error(
            metrics.softmax(logits, temperature), folder.labels),
        size_bytes=onnx_path.stat().st_size,
        parameters=sum(p.numel() for p in base.parameters()), tta=tta, members=members)


def load_members(checkpoints: Sequence[Path], weights: str) -> tuple[list[Any], tuple[Member, ...]]:
    """Each checkpoint's network and provenance; refuses networks that read faces differently
    or learned different labels (their logits could not be averaged), and exported ensembles."""
    from edgefer.backends.torch import load_checkpoint

    networks, members = [], []
    for path in checkpoints:
        network, saved = load_checkpoint(path, weights)
        if "members" in saved:
            raise InputError(f"{path} is already an ensemble: export from its members' checkpoints")
        networks.append(network)
        members.append(Member(saved["recipe"], saved.get("data", {}), saved.get("epoch", 0)))
    for path, member in zip(checkpoints[1:], members[1:], strict=True):
        if reads(member.recipe) != reads(members[0].recipe):
            raise InputError(f"{path} and {checkpoints[0]} differ in input size, "
                             "normalization or labels: they cannot form one ensemble")
    return networks, tuple(members)


READS = ("input_size", "mean", "std", "target_labels")  # what a network's logits mean
MIN_CALIBRATION_IMAGES = 100  # fewer int8 calibration images than this are warned


def check_recipe_file(checkpoint: Path, saved: dict[str, Any], recipe_file: str) -> None:
    """Refuse a recipe file that describes another network than the checkpoint saved (its
    architecture, or what its logits mean), before anything is written."""
    given, trained = Recipe.load(recipe_file).to_dict(), Recipe.from_dict(saved).to_dict()
    differs = [f"{key} {given[key]!r} there, {trained[key]!r} in the checkpoint"
               for key in ("arch", *READS) if given[key] != trained[key]]
    if differs:
        raise InputError(f"{recipe_file} is not the recipe {checkpoint} was trained with: "
                         + "; ".join(differs))
    # the same network trained otherwise is said; the options `edgefer train` takes on its
    # command line (recorded in the manifest too) are not
    settings = sorted(key for key in trained if given.get(key) != trained[key]
                      and key not in ("epochs", "seed", "threads"))
    if settings:
        log.warning("%s differs from the recipe %s was trained with in %s: the manifest "
                    "records the file as its recipe", recipe_file, checkpoint, ", ".join(settings))


def reads(recipe: dict[str, Any]) -> tuple[Any, ...]:
    """What a network's logits mean: its input size and normalization, and its labels."""
    return tuple(recipe.get(key, "fer2013" if key == "target_labels" else None) for key in READS)


def shipped_weights(networks: Sequence[Any], members: Sequence[Member]) -> dict[str, Any]:
    """What ``NAME.pt`` holds: the weights and recipe, or each network's for an ensemble (read
    back by ``edgefer.backends.torch.load_checkpoint``)."""
    states = [{"model": network.state_dict(), "recipe": member.recipe}
              for network, member in zip(networks, members, strict=True)]
    if len(states) == 1:
        return states[0]
    return {"recipe": members[0].recipe, "members": states}


def repo_relative(path: str, root: Path) -> str:
    """``path`` relative to the repository ``root`` (``../shared/data/...``): the manifest is
    committed, so it records no absolute path of the machine that trained the model."""
    return os.path.relpath(Path(path).resolve(), root.resolve())


def recorded_path(path: str, root: Path) -> str:
    """A path given on the command line as the manifest records it: as typed when relative (the
    README's commands run from the repository), relative to the repository ``root`` when
    absolute, so that no path of the machine that exported the model is committed."""
    return repo_relative(path, root) if Path(path).is_absolute() else path


DATA_PATHS = ("train_dir", "val_dir", "ferplus_csv", "crop_cache", "init_from", "teachers")


def relative_data(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """A checkpoint's ``TrainData`` with every path made relative to the repository ``root``."""
    def convert(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return recorded_path(value, root) if value else value

    return {key: convert(value) if key in DATA_PATHS else value for key, value in data.items()}


UNSTATED_LICENSE = "not stated (edgefer export --license records one)"


def manifest_entry(report: ExportReport, recipe_files: Sequence[str], val_dir: str,
                   val_glob: str, command: str = "", train_commands: Sequence[str] = (),
                   license_text: str = UNSTATED_LICENSE) -> dict[str, Any]:
    """The manifest entry for an export; metrics start with the validation figures.

    ``recipe_files`` and ``train_commands`` name each member's recipe and training command;
    ``command`` is the export command line, recorded beside each figure it produced. Only
    whoever trained the weights can state their license, so none is assumed.
    """
    engines_dir = report.onnx_path.parent
    commands = list(train_commands) or [""] * len(report.members)
    train = [train_record(member, recipe_file, train_command, engines_dir)
             for member, recipe_file, train_command
             in zip(report.members, recipe_files, commands, strict=True)]
    return {
        "file": report.onnx_path.name,
        "sha256": sha256_file(report.onnx_path),
        "pytorch_file": report.weights_path.name,
        "pytorch_sha256": sha256_file(report.weights_path),
        "arch": " + ".join(member.recipe["arch"] for member in report.members),
        "parameters": report.parameters,
        "size_bytes": report.size_bytes,
        "opset": OPSET,
        "classes": list(EMOTIONS),
        "input": input_spec(report.recipe).to_dict(),
        "output": {"name": OUTPUT_NAME, "kind": "logits"},
        "temperature": round(report.temperature, 4),
        "tta": report.tta,
        "license": license_text,
        "metrics": {
            "val_accuracy": {"value": round(report.val_accuracy, 4), "command": command,
                             "data": f"{recorded_path(val_dir, REPOSITORY)} {val_glob}"},
            "val_ece_before_temperature": {"value": round(report.val_ece_before, 4),
                                           "command": command},
            "val_ece_after_temperature": {"value": round(report.val_ece_after, 4),
                                          "command": command},
            "onnx_parity_max_abs_prob_diff": {"value": report.parity_max_abs_diff,
                                              "images": report.parity_images, "command": command},
        },
        # The truth the model learned: "fer2013" (folder labels) or "ferplus" (FER+ majority).
        "labels": report.recipe.get("target_labels", "fer2013"),
        # How it was trained; for an ensemble, each network in the order its logits are averaged.
        "train": train[0] if len(train) == 1 else {"members": train},
    }


def train_record(member: Member, recipe_file: str, train_command: str, engines_dir: Path
                 ) -> dict[str, Any]:
    """How one network was trained: data relative to the repository (the checkout, whichever
    manifest the model goes into), the recipe relative to the manifest's folder when it lies
    there (``recipes/x.toml``), else as its other paths, epochs, command."""
    recipe = Path(recipe_file).resolve()
    return {
        "data": relative_data(member.data, REPOSITORY),
        "recipe": str(recipe.relative_to(engines_dir.resolve()))
        if recipe.is_relative_to(engines_dir.resolve()) else recorded_path(recipe_file, REPOSITORY),
        "epochs": member.epoch,
        "date": date.today().isoformat(),
        "command": train_command,
    }


def quantize_int8(source: ModelEntry, name: str, val_dir: str, val_glob: str,
                  engines_dir: Path = MANIFEST_PATH.parent, calibration_images: int = 512,
                  ferplus_csv: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Static int8 quantization (QDQ, per-channel weights) of ``source`` for ONNX Runtime CPUs.

    Weights use 7 bits (``reduce_range``): ONNX Runtime's u8s8 kernels on x86 CPUs without VNNI
    (AVX2-only, e.g. many AMD EPYC and older Intel parts) can saturate 16-bit intermediate sums
    with full-range 8-bit weights; measured here on an AVX2 EPYC, the full-range model lost 2.5
    points of PrivateTest accuracy against the float model.

    Calibrated on a stratified sample of the validation split; returns the file and its figures
    on the whole validation split (accuracy, agreement with the float model, temperature).
    """
    quantization = require("onnxruntime.quantization", "torch")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = validation_folder(val_dir, val_glob, ferplus_csv)
    spec = source.input
    batch = spec.normalize(datasets.load_pixels(folder, (spec.height, spec.width)))
    sample = batch[datasets.stratified_sample(folder.labels, calibration_images)]
    if len(sample) < MIN_CALIBRATION_IMAGES:
        log.warning("int8 scales calibrated on %d images only: activations they never show may "
                    "saturate (quantize reads up to %d)", len(sample), calibration_images)

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.chunks = iter(np.array_split(sample, max(1, len(sample) // 16)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self.chunks, None)
            return None if chunk is None else {spec.name: chunk}

    target = engines_dir / f"{name}.onnx"
    prepared = target.with_suffix(".pre.onnx")
    quant_pre_process(str(source.file), str(prepared))
    try:
        quantization.quantize_static(
            str(prepared), str(target), Reader(), quant_format=quantization.QuantFormat.QDQ,
            per_channel=True, reduce_range=True, activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    quantized, reference = _logits(target, batch), _logits(source.file, batch)
    figures = {
        "val_accuracy": metrics.accuracy(folder.labels, quantized.argmax(1)),
        "float_val_accuracy": metrics.accuracy(folder.labels, reference.argmax(1)),
        "agreement_with_float": float(np.mean(quantized.argmax(1) == reference.argmax(1))),
        "temperature": metrics.fit_temperature(quantized, folder.labels),
        "images": len(batch),
        "calibration_images": len(sample),
        "data": f"{recorded_path(val_dir, REPOSITORY)} {val_glob}",
    }
    return target, figures


def _logits(path: Path, batch: np.ndarray) -> np.ndarray:
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: batch[i:i + 256]})[0]
                           for i in range(0, len(batch), 256)])


def quantized_entry(source: ModelEntry, target: Path, figures: dict[str, Any], command: str
                    ) -> dict[str, Any]:
    entry = {k: v for k, v in source.raw.items() if k not in ("pytorch_file", "pytorch_sha256")}
    return {
        **entry, "file": target.name, "sha256": sha256_file(target),
        "size_bytes": target.stat().st_size, "quantized_from": source.name,
        "quantization": "onnxruntime static int8, QDQ, per-channel 7-bit weights, calibrated on "
                        f"{figures['calibration_images']} validation images",
        "temperature": round(figures["temperature"], 4),
        "metrics": {
            "val_accuracy": {"value": round(figures["val_accuracy"], 4), "command": command,
                             "data": figures["data"]},
            "val_agreement_with_float": {"value": round(figures["agreement_with_float"], 4),
                                         "float_value": round(figures["float_val_accuracy"], 4),
                                         "command": command},
        },
    }
