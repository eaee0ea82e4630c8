"""Training images re-framed by the live detector and aligner, computed once and cached.

FER2013's crops are framed by its own (2013) face detector; at run time the model sees crops
cut by BlazeFace and ``edgefer.align``. Training on both framings closes that gap. Images
where BlazeFace finds no usable face keep their original framing (``found`` says which).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgefer.files import atomic_write
from edgefer.manifest import CropSpec, InputSpec
from edgefer.stills import DETECT_MIN_SIDE, DETECT_PAD
from edgefer.training.datasets import ImageFolder, image_key

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def gray_spec(size: int, crop: CropSpec | None = None) -> InputSpec:
    """The input contract of a gray ``size`` x ``size`` model (only its geometry matters here)."""
    return InputSpec("input", size, size, 1, "gray", 1 / 255, (0.5,), (0.25,), crop=crop or CropSpec())


def cache_key(folder: ImageFolder, spec: InputSpec, detector: str) -> str:
    """Changes whenever the images, the framing or the detector would give other crops."""
    digest = hashlib.sha256()
    recipe = {"version": CACHE_VERSION, "size": spec.width, "crop": spec.to_dict()["crop"],
              "detector": detector, "min_side": DETECT_MIN_SIDE, "pad": DETECT_PAD}
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for path in folder.paths:
        digest.update(image_key(path).encode())
        digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()[:16]


def live_framed_pixels(folder: ImageFolder, spec: InputSpec, cache_dir: str | Path,
                       detector: str = "short",
                       progress: Callable[[int, int], None] | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels, found)``: uint8 ``(N, H, W)`` live-framed crops and where a face was found.

    Read from ``cache_dir`` when an earlier run computed them for the same images and framing.
    """
    cache = Path(cache_dir) / f"live_crops_{cache_key(folder, spec, detector)}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            log.info("live-framed crops from %s", cache)
            return saved["pixels"], saved["found"]
    pixels, found = _compute(folder, spec, detector, progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, lambda handle: np.savez(handle, pixels=pixels, found=found))
    log.info("live-framed crops: face found in %d of %d images; cached in %s",
             int(found.sum()), len(found), cache)
    return pixels, found


def _compute(folder: ImageFolder, spec: InputSpec, detector: str,
             progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray]:
    from edgefer.sources import load_gray
    from edgefer.stills import StillCropper

    pixels = np.zeros((len(folder), spec.height, spec.width), np.uint8)
    found = np.zeros(len(folder), bool)
    with StillCropper(spec, detector) as cropper:
        for row, path in enumerate(folder.paths):
            crop = cropper.largest_crop(str(path))
            found[row] = crop is not None
            pixels[row] = crop if crop is not None else load_gray(path, (spec.height, spec.width))
            if progress and (row % 500 == 0 or row == len(folder) - 1):
                progress(row + 1, len(folder))
    return pixels, found
