"""Alignment geometry on synthetic keypoints, and crops of a real face."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgefer.align import Aligner, similarity_transforms, valid_rows
from edgefer.manifest import CropSpec, InputSpec
from edgefer.types import Faces, Keypoint

CROP = CropSpec()
SPEC = InputSpec("input", 48, 48, 1, "gray", 1 / 255, (0.5,), (0.25,))


def face_keypoints(center=(200.0, 150.0), eye_distance=60.0, angle_deg=0.0, mouth_drop=None):
    """Keypoints of a frontal face rotated by ``angle_deg`` around the eye midpoint."""
    mouth_drop = eye_distance * CROP.eye_to_mouth / CROP.eye_distance if mouth_drop is None \
        else mouth_drop
    local = np.zeros((6, 2))
    local[Keypoint.RIGHT_EYE] = (-eye_distance / 2, 0)
    local[Keypoint.LEFT_EYE] = (eye_distance / 2, 0)
    local[Keypoint.NOSE_TIP] = (0, mouth_drop / 2)
    local[Keypoint.MOUTH] = (0, mouth_drop)
    local[Keypoint.RIGHT_EAR] = (-eye_distance, 10)
    local[Keypoint.LEFT_EAR] = (eye_distance, 10)
    a = math.radians(angle_deg)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return local @ rotation.T + np.asarray(center)


def apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize("angle", [0.0, 25.0, -40.0, 170.0])
@pytest.mark.parametrize("eye_distance", [20.0, 60.0, 300.0])
def test_eyes_land_on_the_template(angle, eye_distance):
    keypoints = face_keypoints(eye_distance=eye_distance, angle_deg=angle)
    matrix = similarity_transforms(keypoints[None], CROP, 48)[0]
    eyes = apply(matrix, keypoints[[Keypoint.RIGHT_EYE, Keypoint.LEFT_EYE]])
    half = CROP.eye_distance * 48 / 2
    np.testing.assert_allclose(eyes[0], [24 - half, CROP.eye_center_y * 48], atol=1e-6)
    np.testing.assert_allclose(eyes[1], [24 + half, CROP.eye_center_y * 48], atol=1e-6)


def roll_in_crop(matrix, keypoints):
    eyes = apply(matrix, keypoints[[Keypoint.RIGHT_EYE, Keypoint.LEFT_EYE]])
    return math.degrees(math.atan2(*(eyes[1] - eyes[0])[::-1]))


@pytest.mark.parametrize("angle, kept", [(12.0, 12.0), (-19.0, -19.0), (35.0, 20.0),
                                         (-60.0, -20.0), (170.0, 20.0)])
def test_roll_within_the_tolerance_is_kept_and_only_the_excess_levelled(angle, kept):
    tolerant = CropSpec(roll_tolerance=20.0)
    keypoints = face_keypoints(angle_deg=angle)
    matrix = similarity_transforms(keypoints[None], tolerant, 48)[0]
    assert roll_in_crop(matrix, keypoints) == pytest.approx(kept, abs=1e-6)
    # the eyes' midpoint and the scale are those of a levelled crop
    levelled = similarity_transforms(keypoints[None], CROP, 48)[0]
    middle = keypoints[[Keypoint.RIGHT_EYE, Keypoint.LEFT_EYE]].mean(0)
    np.testing.assert_allclose(apply(matrix, middle), apply(levelled, middle), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(matrix[:, 0]), np.linalg.norm(levelled[:, 0]))


def test_turned_head_scales_by_eye_to_mouth():
    # yaw: eyes look closer together, the eye-to-mouth distance is unchanged
    frontal = similarity_transforms(face_keypoints()[None], CROP, 48)[0]
    turned = similarity_transforms(
        face_keypoints(eye_distance=30.0, mouth_drop=60.0 * CROP.eye_to_mouth / CROP.eye_distance)[None],
        CROP, 48)[0]
    np.testing.assert_allclose(np.linalg.norm(turned[:, 0]), np.linalg.norm(frontal[:, 0]))


@pytest.mark.parametrize("keypoints", [np.zeros((6, 2)), np.full((6, 2), np.nan)])
def test_degenerate_keypoints_are_invalid(keypoints):
    matrices = similarity_transforms(keypoints[None], CROP, 48)
    assert not valid_rows(matrices).any()


def test_aligner_produces_the_manifest_tensor():
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    keypoints = np.stack([face_keypoints(), face_keypoints(center=(0, 0)), np.zeros((6, 2))])
    faces = Faces(np.zeros((3, 4)), np.ones(3), keypoints)
    batch, valid = Aligner(SPEC).align(image, faces)
    assert batch.shape == (3, 1, 48, 48) and batch.dtype == np.float32
    assert valid.tolist() == [True, True, False]
    assert batch[0].min() >= -2.0 and batch[0].max() <= 2.0  # (x/255 - 0.5) / 0.25
    np.testing.assert_array_equal(batch[2], -2.0)  # invalid rows stay black


def test_color_crops_for_the_llm(portrait):
    from edgefer.detect import DetectorOptions, FaceDetector
    from edgefer.types import Frame

    with FaceDetector(DetectorOptions(mode="image")) as detector:
        faces = detector.detect(Frame(0, 0.0, portrait))
    crops = Aligner(SPEC).crops(portrait, faces, size=160, color="bgr")
    assert crops.shape == (1, 160, 160, 3)
    # the face fills the crop: its centre is skin, not the blue background or the navy uniform
    b, _g, r = crops[0, 70:90, 70:90].reshape(-1, 3).mean(0)
    assert r > b
