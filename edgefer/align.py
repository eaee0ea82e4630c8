"""Face alignment: one similarity transform per face from its eye and mouth keypoints.

The transform centres the eyes' midpoint where the model's training crops have it, scales by the
larger of the eye distance and the eye-to-mouth distance relative to the training framing
(``CropSpec``), so a turned or tilted head is not over-zoomed, and levels only the roll beyond
what the training crops themselves show (``CropSpec.roll_tolerance``): the model has learnt that
much roll, and levelling it anyway resamples the face and, near a picture's edge, brings in
border where the training crops had face and background.
"""

from __future__ import annotations

import numpy as np

from edgefer.manifest import CropSpec, InputSpec
from edgefer.types import Faces, Keypoint

MIN_EYE_DISTANCE_PX = 2.0  # below this the keypoints carry no usable geometry


def similarity_transforms(keypoints: np.ndarray, crop: CropSpec, size: int) -> np.ndarray:
    """``(N, 2, 3)`` affine matrices mapping frame pixels to a ``size`` x ``size`` aligned crop.

    Rows whose keypoints are degenerate (eyes closer than ``MIN_EYE_DISTANCE_PX`` and no
    eye-to-mouth distance either, or non-finite) get NaN matrices; ``valid_rows`` finds them.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, len(Keypoint), 2)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows end up NaN: rejected
        return _transforms(keypoints, crop, size)


def _transforms(keypoints: np.ndarray, crop: CropSpec, size: int) -> np.ndarray:
    right = keypoints[:, Keypoint.RIGHT_EYE]
    left = keypoints[:, Keypoint.LEFT_EYE]
    mouth = keypoints[:, Keypoint.MOUTH]
    eye_vector = left - right
    eye_distance = np.linalg.norm(eye_vector, axis=1)
    roll = np.arctan2(eye_vector[:, 1], eye_vector[:, 0])
    middle = (left + right) / 2
    # Mouth offset measured perpendicular to the eye line, i.e. in the levelled face.
    offset = mouth - middle
    eye_to_mouth = np.abs(-np.sin(roll) * offset[:, 0] + np.cos(roll) * offset[:, 1])
    scale = np.maximum(eye_distance / crop.eye_distance, eye_to_mouth / crop.eye_to_mouth) / size
    scale = np.where(np.maximum(eye_distance, eye_to_mouth) >= MIN_EYE_DISTANCE_PX, scale, np.nan)
    zoom = 1.0 / scale
    angle = levelling_angle(roll, crop.roll_tolerance)
    cos, sin = np.cos(angle), np.sin(angle)
    matrices = np.empty((len(keypoints), 2, 3))
    matrices[:, 0, 0] = zoom * cos
    matrices[:, 0, 1] = zoom * sin
    matrices[:, 1, 0] = -zoom * sin
    matrices[:, 1, 1] = zoom * cos
    target = np.array([0.5 * size, crop.eye_center_y * size])
    matrices[:, :, 2] = target - np.einsum("nij,nj->ni", matrices[:, :, :2], middle)
    return matrices


def levelling_angle(roll: np.ndarray, tolerance_degrees: float) -> np.ndarray:
    """The rotation (radians) that brings a ``roll`` within the tolerance, and no further."""
    tolerance = np.radians(tolerance_degrees)
    return np.sign(roll) * np.maximum(np.abs(roll) - tolerance, 0.0)


def valid_rows(matrices: np.ndarray) -> np.ndarray:
    return np.isfinite(matrices).all(axis=(1, 2))


def warp_crops(image: np.ndarray, matrices: np.ndarray, size: int) -> np.ndarray:
    """Aligned ``(N, size, size[, C])`` uint8 crops; rows with invalid matrices stay black."""
    import cv2

    shape = (len(matrices), size, size, *image.shape[2:])
    crops = np.zeros(shape, dtype=np.uint8)
    for row, matrix in enumerate(matrices):
        if np.isfinite(matrix).all():
            cv2.warpAffine(image, matrix, (size, size), dst=crops[row], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    return crops


class Aligner:
    """Turns a frame's faces into the exact tensor a model's ``InputSpec`` declares."""

    def __init__(self, spec: InputSpec) -> None:
        if spec.height != spec.width:
            raise ValueError(f"square model inputs only, got {spec.height}x{spec.width}")
        self.spec = spec

    def crops(self, image: np.ndarray, faces: Faces, size: int | None = None,
              color: str | None = None) -> np.ndarray:
        """Aligned uint8 crops of a BGR frame; ``color`` is "gray", "bgr" or "rgb"
        (default: the model's), ``size`` the side in pixels (default: the model's)."""
        size = size or self.spec.width
        matrices = similarity_transforms(faces.keypoints, self.spec.crop, size)
        return warp_crops(convert_color(image, color or self.spec.color), matrices, size)

    def crops_and_validity(self, image: np.ndarray, faces: Faces) -> tuple[np.ndarray, np.ndarray]:
        """``(crops, valid)``: uint8 crops in the model's size and colour, and which rows had
        usable keypoints (invalid rows are black crops)."""
        matrices = similarity_transforms(faces.keypoints, self.spec.crop, self.spec.width)
        crops = warp_crops(convert_color(image, self.spec.color), matrices, self.spec.width)
        return crops, valid_rows(matrices)

    def align(self, image: np.ndarray, faces: Faces) -> tuple[np.ndarray, np.ndarray]:
        """``(batch, valid)``: the normalized NCHW float32 batch, and which rows had usable
        keypoints (invalid rows are black crops; callers should not trust their output)."""
        crops, valid = self.crops_and_validity(image, faces)
        return self.spec.normalize(crops), valid


def convert_color(image: np.ndarray, color: str) -> np.ndarray:
    """A BGR (or already gray) frame in ``color`` ("gray", "bgr" or "rgb")."""
    import cv2

    if image.ndim == 2:
        return image if color == "gray" else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if color == "gray":
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color == "rgb" else image
