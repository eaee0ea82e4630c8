"""A demo clip built at run time from a public-domain portrait, so the main job runs anywhere.

The portrait is ``grace_hopper.jpg`` from matplotlib's sample data (a U.S. Navy photograph,
public domain), installed with mediapipe's matplotlib dependency. The clip pans, zooms and
tilts the face, lets it leave the frame and return, and adds a second, smaller mirrored face
half-way through, so detection, alignment, tracking and smoothing all have work to do.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgefer.errors import InputError, require

WIDTH, HEIGHT, FPS, SECONDS = 640, 480, 30.0, 5.0


def portrait_path() -> Path:
    matplotlib = require("matplotlib", "plot")  # the demo's portrait is its sample data
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        raise InputError(f"sample portrait not found at {path}")
    return path


def demo_frames(portrait: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` BGR frames of the moving portrait (and, in the second half, a second face)."""
    import cv2

    frames = []
    background = np.full((HEIGHT, WIDTH, 3), (70, 60, 50), np.uint8)
    for i in range(count):
        t = i / max(1, count - 1)
        frame = background.copy()
        # Main face: drifts right and off the edge near the end, zooms 0.85-1.15x, tilts +-12 deg.
        centre = (WIDTH * (0.35 + 0.75 * t), HEIGHT * 0.55 + 30 * math.sin(4 * math.pi * t))
        _paste(frame, portrait, centre, 1.0 + 0.15 * math.sin(2 * math.pi * t),
               12 * math.sin(3 * math.pi * t))
        if t >= 0.4:  # a second person arrives on the left
            _paste(frame, cv2.flip(portrait, 1), (WIDTH * 0.16, HEIGHT * 0.6), 0.75, -6.0)
        frames.append(frame)
    return frames


def _paste(frame: np.ndarray, portrait: np.ndarray, centre: tuple[float, float], zoom: float,
           angle_deg: float) -> None:
    import cv2

    h, w = portrait.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, zoom)
    matrix[:, 2] += np.array(centre) - np.array([w / 2, h / 2])
    mask = cv2.warpAffine(np.full((h, w), 255, np.uint8), matrix, (WIDTH, HEIGHT))
    warped = cv2.warpAffine(portrait, matrix, (WIDTH, HEIGHT))
    frame[mask > 0] = warped[mask > 0]


def write_demo_clip(path: Path, seconds: float = SECONDS) -> Path:
    """Write the demo clip (MPEG-4, 640x480, 30 frames/s) and return its path."""
    import cv2

    portrait = cv2.imread(str(portrait_path()))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise InputError(f"cannot write the demo clip to {path}")
    try:
        for frame in demo_frames(portrait, int(seconds * FPS)):
            writer.write(frame)
    finally:
        writer.release()
    return path
