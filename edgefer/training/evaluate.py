"""Evaluation of a shipped model on an image-folder dataset.

Two input modes: ``crops`` feeds pre-cropped faces (FER2013, CK+48) straight to the model;
``detect`` runs every image through the live detector and aligner first, so the figure measures
what users get. Metrics, baselines, calibration and the selective-prediction table are computed
from the same probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.backends import open_engine
from edgefer.errors import InputError
from edgefer.manifest import MANIFEST_PATH, ModelEntry, load_model_entry
from edgefer.training import datasets, metrics
from edgefer.types import EMOTIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    data_dir: Path
    glob: str = "*"
    exclude_list: Path | None = None
    ferplus_labels: Path | None = None  # replace folder labels by the FER+ majority vote
    mode: str = "crops"  # "crops" | "detect"
    detector: str = "short"
    model: str | None = None
    engine: str = "onnxruntime"
    precision: str = "fp16"
    manifest: Path = MANIFEST_PATH
    limit: int | None = None  # stratified sample of this many images
    seed: int = 0


@dataclass
class EvalResult:
    paths: list[Path]
    y_true: np.ndarray
    logits: np.ndarray
    temperature: float
    face_found: np.ndarray
    excluded: int = 0
    relabelled_dropped: int = 0
    folder_labels: np.ndarray | None = None  # FER2013's own labels when scored against FER+
    model: str = ""  # the manifest name of the model scored: every report says which

    @property
    def probs(self) -> np.ndarray:
        return metrics.softmax(self.logits, self.temperature)

    @property
    def y_pred(self) -> np.ndarray:
        return self.logits.argmax(1)


@dataclass(frozen=True)
class EvalData:
    """The images to evaluate and their labels, plus what the options left out."""

    folder: datasets.ImageFolder
    excluded: int  # by the exclude list
    relabelled_dropped: int  # without a 7-class FER+ majority
    folder_labels: np.ndarray | None  # the folder's own labels when FER+ labels replaced them


def load_dataset(options: EvalOptions) -> EvalData:
    exclude = datasets.read_exclude_list(options.exclude_list) if options.exclude_list else None
    folder = datasets.scan_image_folder(options.data_dir, options.glob)
    kept = datasets.scan_image_folder(options.data_dir, options.glob, exclude) if exclude else folder
    if exclude and len(kept) == len(folder):  # a list of another dataset's names, most likely
        log.warning("none of the %d names in %s is among the %d images evaluated", len(exclude),
                    options.exclude_list, len(folder))
    original = dict(zip(kept.paths, kept.labels.tolist(), strict=True))
    dropped = 0
    if options.ferplus_labels:
        kept, dropped = datasets.relabel_ferplus(
            kept, datasets.ferplus_majority(options.ferplus_labels))
    if options.limit:
        kept = kept.subset(datasets.stratified_sample(kept.labels, options.limit, options.seed))
    folder_labels = np.array([original[p] for p in kept.paths], dtype=np.int64) \
        if options.ferplus_labels else None
    return EvalData(kept, len(folder) - len(original), dropped, folder_labels)


def evaluate(options: EvalOptions, progress: Callable[[int, int], None] | None = None
             ) -> EvalResult:
    requested = load_model_entry(options.model, options.manifest)
    data = load_dataset(options)
    folder = data.folder
    with open_engine(requested, options.engine, threads=2, precision=options.precision) as engine:
        entry = engine.entry or requested  # what runs: GPU engines run an int8 entry's float source
        if options.mode == "crops":
            logits, found = _predict_crops(folder, entry, engine.run, progress)
        elif options.mode == "detect":
            logits, found = _predict_detected(folder, entry, engine.run, options.detector, progress)
        else:
            raise InputError(f"eval mode must be 'crops' or 'detect', got {options.mode!r}")
    return EvalResult(list(folder.paths), folder.labels, logits, entry.temperature, found,
                      data.excluded, data.relabelled_dropped, data.folder_labels, entry.name)


def _predict_crops(folder: datasets.ImageFolder, entry: ModelEntry,
                   run: Callable[[np.ndarray], np.ndarray],
                   progress: Callable[[int, int], None] | None, batch_size: int = 256
                   ) -> tuple[np.ndarray, np.ndarray]:
    from edgefer.stills import crop_batch

    chunks = []
    for start in range(0, len(folder), batch_size):
        chunks.append(run(crop_batch(list(folder.paths[start:start + batch_size]), entry.input)))
        if progress:
            progress(min(start + batch_size, len(folder)), len(folder))
    return np.concatenate(chunks), np.ones(len(folder), dtype=bool)


def _predict_detected(folder: datasets.ImageFolder, entry: ModelEntry,
                      run: Callable[[np.ndarray], np.ndarray], detector: str,
                      progress: Callable[[int, int], None] | None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the largest detected face per image, and which images had a usable face."""
    from edgefer.stills import StillCropper

    logits = np.zeros((len(folder), len(entry.classes)), dtype=np.float32)
    found = np.zeros(len(folder), dtype=bool)
    with StillCropper(entry.input, detector) as cropper:
        for i, path in enumerate(folder.paths):
            crop = cropper.largest_crop(str(path))
            if crop is not None:
                logits[i] = run(entry.input.normalize(crop[None]))[0]
                found[i] = True
            if progress and (i % 64 == 0 or i == len(folder) - 1):
                progress(i + 1, len(folder))
    return logits, found


def report(result: EvalResult, thresholds: tuple[float, ...] = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
           ) -> dict[str, Any]:
    """Every figure ``edgefer eval`` prints, as one JSON-ready dict.

    In ``detect`` mode an image whose face was not found counts as wrong in ``accuracy``; the
    other figures cover the images where a face was found.
    """
    found = result.face_found
    y_true, y_pred, probs = result.y_true[found], result.y_pred[found], result.probs[found]
    logits = result.logits[found]
    present = np.unique(y_true)
    scores = metrics.precision_recall_f1(y_true, y_pred)
    out: dict[str, Any] = {
        "model": result.model,
        **metrics.summary(y_true, y_pred),
        "n": len(result.y_true),
        "accuracy": float(np.sum(y_true == y_pred) / len(result.y_true)),
        "accuracy_on_found_faces": metrics.accuracy(y_true, y_pred),
        "excluded_by_list": result.excluded,
        "dropped_without_ferplus_majority": result.relabelled_dropped,
        "faces_found": int(result.face_found.sum()),
        "classes_present": [EMOTIONS[c] for c in present],
        "per_class": {EMOTIONS[c]: {"precision": float(scores["precision"][c]),
                                    "recall": float(scores["recall"][c]),
                                    "f1": float(scores["f1"][c]), "support": int(scores["support"][c])}
                      for c in present},
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred).tolist(),
        "baselines": {"random": metrics.random_baseline(y_true, present, runs=10),
                      "majority": metrics.majority_baseline(y_true)},
        "temperature": result.temperature,
        "ece_before_temperature": metrics.expected_calibration_error(
            metrics.softmax(logits), y_true),
        "ece_after_temperature": metrics.expected_calibration_error(probs, y_true),
        "selective": metrics.selective_table(probs, y_true, thresholds),
    }
    if len(present) < len(EMOTIONS):
        restricted = present[logits[:, present].argmax(1)]
        out["restricted_to_present_classes"] = metrics.summary(y_true, restricted)
    if result.folder_labels is not None:
        out["label_sets"] = label_sets(result)
    sequences = sequence_accuracy([p for p, f in zip(result.paths, found, strict=True) if f],
                                  y_true, probs)
    if sequences is not None:
        out["per_sequence"] = sequences
    return out


def label_sets(result: EvalResult) -> dict[str, Any]:
    """The same predictions scored against both truths: FER2013's one label per image and the
    FER+ majority of ten annotators (who call many weak expressions neutral). Misses of
    ``detect`` mode count as wrong in both."""
    found = result.face_found
    return {name: {**metrics.summary(labels[found], result.y_pred[found]),
                   "accuracy": float(np.sum(labels[found] == result.y_pred[found]) / len(labels))}
            for name, labels in (("fer2013", result.folder_labels), ("ferplus", result.y_true))}


def sequence_accuracy(paths: list[Path], y_true: np.ndarray, probs: np.ndarray
                      ) -> dict[str, float] | None:
    """For CK+-style names (``S<subject>_<sequence>_<frame>``): accuracy per sequence, from the
    mean probabilities of its frames (its peak frames are near-duplicates, so per-image accuracy
    overstates the evidence). None for other datasets."""
    import re

    keys = [re.match(r"(S\d+_\d+)_\d+$", p.stem) for p in paths]
    if not keys or not all(keys):
        return None
    groups: dict[str, list[int]] = {}
    for row, match in enumerate(keys):
        groups.setdefault(match.group(1), []).append(row)
    truth = np.array([y_true[rows[0]] for rows in groups.values()])
    predicted = np.array([probs[rows].mean(0).argmax() for rows in groups.values()])
    return {"sequences": len(groups), "accuracy": metrics.accuracy(truth, predicted)}
