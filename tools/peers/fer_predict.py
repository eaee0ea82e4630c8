"""Predictions of the `fer` package (PyPI) on a folder of face crops, for tools/peers/compare.py.

Runs in its own virtual environment (fer needs TensorFlow; see tools/peers/README.md), so it
imports nothing from edgefer. Two ways of handing fer a 48x48 face crop:

- ``crop``: the classifier sees the crop itself. ``FER(offsets=(0, 0))`` with the whole image as
  the face box makes fer's own ``detect_emotions`` cut exactly the image (its 40-pixel padding is
  added and removed again), then resize to its 64x64 input and scale to [-1, 1]. Scores are read
  unrounded through ``_classify_emotions`` on that same preprocessing (``detect_emotions`` rounds
  them to two decimals, which creates argmax ties); ``--check N`` verifies on N images that both
  routes pick the same label wherever the rounded scores have a unique maximum.
- ``whole-box``: fer's defaults (10-pixel offsets) with the whole image as the face box, so fer
  widens the box past the image and fills the border with the mean of the bottom rows: the way
  the old "50.2%" figure was produced.

Output: JSON with one prediction (a FER2013 class name) per image, in sorted path order.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

# fer's label order (fer.fer.FER._get_labels) is FER2013's own: the mapping is the identity.
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIDE = 64  # fer's classifier input (gray 64x64, scaled to [-1, 1])


def list_images(data_dir: Path, pattern: str) -> list[Path]:
    return sorted(p for p in data_dir.glob(f"*/{pattern}") if p.is_file())


def preprocess(gray: np.ndarray) -> np.ndarray:
    """fer's own preprocessing of a face crop (fer.fer.FER.detect_emotions)."""
    face = cv2.resize(gray, (INPUT_SIDE, INPUT_SIDE)).astype(np.float32) / 255.0
    return ((face - 0.5) * 2.0)[None]


def predict_crop(detector, gray: np.ndarray) -> str:
    scores = np.asarray(detector._classify_emotions(preprocess(gray)))[0]
    return FER_LABELS[int(scores.argmax())]


def predict_whole_box(detector, bgr: np.ndarray) -> str | None:
    height, width = bgr.shape[:2]
    found = detector.detect_emotions(bgr, face_rectangles=[(0, 0, width, height)])
    if not found:
        return None
    emotions = found[0]["emotions"]
    return max(FER_LABELS, key=lambda label: emotions[label])


def check_routes(detector, paths: list[Path]) -> dict[str, int]:
    """Agreement of the unrounded route with fer's public detect_emotions on the same crop."""
    compared = agreed = 0
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        height, width = bgr.shape[:2]
        scores = detector.detect_emotions(bgr, face_rectangles=[(0, 0, width, height)])[0]["emotions"]
        values = [scores[label] for label in FER_LABELS]
        if values.count(max(values)) > 1:
            continue
        compared += 1
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        agreed += FER_LABELS[int(np.argmax(values))] == predict_crop(detector, gray)
    return {"compared": compared, "agreed": agreed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="DIR/<class>/* images")
    parser.add_argument("-o", "--output", type=Path, required=True, help="predictions JSON")
    parser.add_argument("--glob", default="*")
    parser.add_argument("--mode", choices=("crop", "whole-box"), default="crop")
    parser.add_argument("--model", choices=("tflite", "keras"), default="tflite",
                        help="fer's default quantized TFLite model, or its Keras HDF5 original")
    parser.add_argument("--check", type=int, default=0, metavar="N",
                        help="crop mode: compare with detect_emotions on the first N images")
    args = parser.parse_args()

    import fer
    from fer.fer import FER

    paths = list_images(args.data_dir, args.glob)
    if not paths:
        parser.error(f"no images match {args.data_dir}/*/{args.glob}")
    offsets = (0, 0) if args.mode == "crop" else (10, 10)
    detector = FER(use_tflite=args.model == "tflite", offsets=offsets)
    predictions = []
    start = time.perf_counter()
    for path in paths:
        if args.mode == "crop":
            predictions.append(predict_crop(detector, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)))
        else:
            predictions.append(predict_whole_box(detector, cv2.imread(str(path), cv2.IMREAD_COLOR)))
    seconds = time.perf_counter() - start
    result = {
        "peer": "fer", "version": fer.__version__, "variant": f"{args.mode}, {args.model}",
        "backend": f"tensorflow {__import__('tensorflow').__version__} (CPU)",
        "data_dir": str(args.data_dir), "glob": args.glob,
        "seconds_per_image": seconds / len(paths),
        "images": [{"path": p.relative_to(args.data_dir).as_posix(), "pred": pred}
                   for p, pred in zip(paths, predictions, strict=True)],
    }
    if args.check and args.mode == "crop":
        result["route_check"] = check_routes(detector, paths[: args.check])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
