"""Face crops of still images, framed exactly as the live path frames them.

Evaluation in ``detect`` mode, TensorRT INT8 calibration and the training-crop cache all need
"what the model would see at run time" for a folder of pictures; this is the one place that
computes it: small pictures (FER2013's 48x48) are upscaled and padded so BlazeFace finds the
face, then the live ``Aligner`` cuts the crop from the picture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefer.align import Aligner
from edgefer.detect import DetectorOptions, FaceDetector
from edgefer.manifest import InputSpec
from edgefer.sources import load_gray, read_image
from edgefer.types import Faces, Frame

DETECT_MIN_SIDE = 192  # small pictures are upscaled (and padded) so BlazeFace can see the face
# Padding around small pictures, as a share of their side. The detector sees the face larger
# with less: 0.25 finds a face in 3,554 of FER2013's 3,589 PublicTest crops where 0.5 found 3,536,
# and the default's live-path accuracy there rose from 67.71% to 68.21% (0.2: 3,541 faces;
# tools/framing_sweep.py --pad).
DETECT_PAD = 0.25


def prepare_small_image(image: np.ndarray, pad: float = DETECT_PAD) -> np.ndarray:
    """Upscale and pad tiny face crops (FER2013 is 48x48) so the detector can find the face."""
    import cv2

    side = min(image.shape[:2])
    if side >= DETECT_MIN_SIDE:
        return image
    factor = int(np.ceil(DETECT_MIN_SIDE / side))
    big = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    border = int(pad * min(big.shape[:2]))
    return cv2.copyMakeBorder(big, border, border, border, border, cv2.BORDER_CONSTANT,
                              value=(0, 0, 0))


def crop_batch(paths: list[Path], spec: InputSpec) -> np.ndarray:
    """Pre-cropped face pictures (FER2013, CK+48) as the model's normalized input batch.

    The one preprocessing for crops that evaluation and TensorRT calibration share: resized to
    the model's side, grey copied into three channels for RGB models."""
    pixels = np.stack([load_gray(path, (spec.height, spec.width)) for path in paths])
    if spec.color == "rgb":
        pixels = np.repeat(pixels[..., None], 3, axis=3)
    return spec.normalize(pixels)


def largest(faces: Faces) -> int:
    areas = np.prod(faces.xyxy[:, 2:] - faces.xyxy[:, :2], axis=1)
    return int(areas.argmax())


class StillCropper:
    """``crops(path)`` / ``largest_crop(path)``: aligned uint8 crops of a picture's faces.

    A context manager over one BlazeFace detector in image mode.
    """

    def __init__(self, spec: InputSpec, detector: str = "short", pad: float = DETECT_PAD) -> None:
        self.aligner = Aligner(spec)
        self._pad = pad
        self._detector = FaceDetector(DetectorOptions(model=detector, mode="image"))
        self._count = 0

    def faces(self, path: str) -> tuple[np.ndarray, Faces]:
        """The prepared picture and its detected faces."""
        image = prepare_small_image(read_image(path), self._pad)
        self._count += 1
        return image, self._detector.detect(Frame(self._count, 0.0, image, path, still=True))

    def crops(self, path: str) -> np.ndarray:
        """Aligned crops (model size and colour) of every face with usable keypoints."""
        image, faces = self.faces(path)
        if not len(faces):
            return np.zeros((0, self.aligner.spec.height, self.aligner.spec.width), np.uint8)
        crops, valid = self.aligner.crops_and_validity(image, faces)
        return crops[valid]

    def largest_crop(self, path: str) -> np.ndarray | None:
        """The aligned crop of the largest face, or None when no usable face is found."""
        image, faces = self.faces(path)
        if not len(faces):
            return None
        crops, valid = self.aligner.crops_and_validity(image, faces)
        row = largest(faces)
        return crops[row] if valid[row] else None

    def close(self) -> None:
        self._detector.close()

    def __enter__(self) -> StillCropper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
