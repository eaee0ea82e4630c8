"""Image helpers that more than one stage needs: the LLM's requests and the operator's page
both shrink frames and send JPEGs."""

from __future__ import annotations

import numpy as np


def shrink_to(image: np.ndarray, longest: int) -> np.ndarray:
    """``image`` shrunk so that its longest side is ``longest`` pixels; smaller ones as they are."""
    import cv2

    scale = longest / max(image.shape[:2])
    if scale >= 1:
        return image
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()
