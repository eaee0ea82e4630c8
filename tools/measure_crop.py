"""Measure where BlazeFace puts the eyes and mouth in FER2013's 48x48 crops.

The medians become ``CropSpec`` (edgefer/manifest.py), the framing the aligner reproduces.

    python tools/measure_crop.py ../shared/data/fer2013/train --limit 1500
"""

from __future__ import annotations

import argparse

import numpy as np

from edgefer.detect import DetectorOptions, FaceDetector
from edgefer.sources import load_gray
from edgefer.training.datasets import scan_image_folder, stratified_sample
from edgefer.types import Frame, Keypoint

FER_SIDE = 48  # FER2013 images are 48x48 face crops (the dataset's size, not a model's)
UPSCALE = 4  # BlazeFace wants faces of 40+ pixels
PAD = 96  # a border so the face is not cut by the detector's own crop


def measure(root: str, limit: int) -> np.ndarray:
    folder = scan_image_folder(root)
    folder = folder.subset(stratified_sample(folder.labels, limit))
    keypoints = []
    with FaceDetector(DetectorOptions(model="short", mode="image")) as detector:
        for i, path in enumerate(folder.paths):
            gray = load_gray(path, (FER_SIDE, FER_SIDE))
            big = np.kron(gray, np.ones((UPSCALE, UPSCALE), np.uint8))
            big = np.pad(big, PAD)
            faces = detector.detect(Frame(i, 0.0, np.repeat(big[..., None], 3, axis=2)))
            if len(faces) == 1:
                keypoints.append((faces.keypoints[0] - PAD) / (FER_SIDE * UPSCALE))
    return np.asarray(keypoints)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--limit", type=int, default=1500)
    args = parser.parse_args()
    points = measure(args.root, args.limit)
    right, left = points[:, Keypoint.RIGHT_EYE], points[:, Keypoint.LEFT_EYE]
    center_y = (right[:, 1] + left[:, 1]) / 2
    print(f"faces measured: {len(points)}")
    print(f"eye_distance = {np.median(np.linalg.norm(left - right, axis=1)):.3f}")
    print(f"eye_center_y = {np.median(center_y):.3f}")
    print(f"eye_to_mouth = {np.median(points[:, Keypoint.MOUTH, 1] - center_y):.3f}")
    roll = np.degrees(np.abs(np.arctan2(*(left - right)[:, ::-1].T)))
    print(f"roll_tolerance = {np.percentile(roll, 90):.1f}  (90th percentile of |roll|, degrees)")


if __name__ == "__main__":
    main()
