"""Drawing results onto frames: boxes, labels with confidence bars, track ids, LLM marks, HUD."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgefer.types import EMOTIONS, UNKNOWN, Faces, Keypoint, LabelSource, label_name

# BGR colours per emotion, chosen to stay distinct for common colour-vision deficiencies.
COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (170, 60, 150),
    "happy": (0, 200, 255), "sad": (200, 120, 30), "surprise": (230, 200, 0),
    "neutral": (200, 200, 200), UNKNOWN: (128, 128, 128),
}
LLM_MARK_COLOR = (255, 0, 255)
REFERENCE_SIDE_PX = 480  # text is drawn at scale 1 on a 480-pixel-high (or wide) frame


def text_scale(image: np.ndarray) -> float:
    """How much larger than on a 480p frame text and lines are drawn, so labels and the HUD keep
    the same share of the picture from a 480p webcam to 1080p and beyond."""
    return max(0.5, min(image.shape[:2]) / REFERENCE_SIDE_PX)


@dataclass(frozen=True)
class Hud:
    fps: float | None = None
    latency_ms: float | None = None
    extra: str = ""


def face_label(faces: Faces, row: int) -> tuple[str, float, bool]:
    """The label ``decide_labels`` chose for ``row`` ("unknown" if unset), the confidence
    behind it (the LLM's own for the LLM's label, which may be one the CNN gave 3%; else the
    CNN's), and whether the LLM had a hand in it."""
    index = int(faces.final_labels[row])
    label = label_name(index)
    source = faces.label_sources[row]
    probs = faces.llm_probs[row] if source == LabelSource.LLM else faces.cnn_probs(row)
    confidence = float(probs[index]) if index >= 0 else 0.0
    return label, confidence, bool(source in (LabelSource.LLM, LabelSource.FUSE))


def draw_faces(image: np.ndarray, faces: Faces, debug: bool = False) -> np.ndarray:
    """Draw every face onto ``image`` in place and return it."""
    import cv2

    scale = text_scale(image)
    for row in range(len(faces)):
        label, confidence, from_llm = face_label(faces, row)
        color = COLORS[label]
        x0, y0, x1, y1 = (round(v) for v in faces.xyxy[row])
        cv2.rectangle(image, (x0, y0), (x1, y1), color, max(1, int(2 * scale)))
        text = f"{label} {confidence:.0%}"
        if faces.track_ids[row] >= 0:
            text = f"#{faces.track_ids[row]} {text}"
        _label_box(image, text, (x0, y0), color, scale)
        _confidence_bar(image, (x0, y1), x1 - x0, confidence, color, scale)
        if from_llm:
            cv2.circle(image, (x1 - int(8 * scale), y0 + int(8 * scale)), max(3, int(6 * scale)),
                       LLM_MARK_COLOR, -1)
        if debug:
            _debug_overlay(image, faces, row, scale)
    return image


def _label_box(image: np.ndarray, text: str, corner: tuple[int, int],
               color: tuple[int, int, int], scale: float) -> None:
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    thickness = max(1, round(1.5 * scale))
    (width, height), baseline = cv2.getTextSize(text, font, 0.6 * scale, thickness)
    x, y = corner
    pad = max(2, round(3 * scale))
    top = max(0, y - height - baseline - 2 * pad)
    cv2.rectangle(image, (x, top), (x + width + 2 * pad, top + height + baseline + 2 * pad), color, -1)
    cv2.putText(image, text, (x + pad, top + height + pad), font, 0.6 * scale, (0, 0, 0),
                thickness, cv2.LINE_AA)


def _confidence_bar(image: np.ndarray, corner: tuple[int, int], width: int, confidence: float,
                    color: tuple[int, int, int], scale: float) -> None:
    import cv2

    x, y = corner
    height = max(3, int(6 * scale))
    cv2.rectangle(image, (x, y + 2), (x + width, y + 2 + height), (60, 60, 60), -1)
    cv2.rectangle(image, (x, y + 2), (x + int(width * confidence), y + 2 + height), color, -1)


def _debug_overlay(image: np.ndarray, faces: Faces, row: int, scale: float) -> None:
    import cv2

    for point in faces.keypoints[row]:
        cv2.circle(image, (int(point[0]), int(point[1])), max(2, int(3 * scale)), (0, 255, 0), -1)
    eyes = faces.keypoints[row][[Keypoint.RIGHT_EYE, Keypoint.LEFT_EYE]].astype(int)
    cv2.line(image, tuple(eyes[0]), tuple(eyes[1]), (0, 255, 0), 1)
    x0, _, _x1, y1 = (int(v) for v in faces.xyxy[row])
    for i, (name, p) in enumerate(zip(EMOTIONS, faces.probs[row], strict=False)):
        y = y1 + int((22 + 16 * i) * scale)
        cv2.rectangle(image, (x0, y - int(11 * scale)), (x0 + int(80 * scale * p), y), COLORS[name], -1)
        cv2.putText(image, f"{name[:3]} {p:.2f}", (x0 + int(84 * scale), y),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, (255, 255, 255), max(1, round(scale)),
                    cv2.LINE_AA)


def draw_hud(image: np.ndarray, hud: Hud) -> np.ndarray:
    """Frames/s and capture-to-display latency in the top-left corner, scaled with the frame."""
    import cv2

    parts = []
    if hud.fps is not None:
        parts.append(f"{hud.fps:5.1f} fps")
    if hud.latency_ms is not None:
        parts.append(f"{hud.latency_ms:5.1f} ms")
    if hud.extra:
        parts.append(hud.extra)
    if parts:
        text = "  ".join(parts)
        scale = text_scale(image)
        thickness = max(1, round(1.5 * scale))
        (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale,
                                                    thickness)
        pad = round(6 * scale)
        cv2.rectangle(image, (0, 0), (width + 2 * pad, height + baseline + 2 * pad), (0, 0, 0), -1)
        cv2.putText(image, text, (pad, pad + height), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return image


def message_screen(message: str, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A black frame with ``message``: what the window and the page show while no frame is
    current (the source reconnecting, not started yet, or ended)."""
    import cv2

    image = np.zeros((*size, 3), np.uint8)
    scale = text_scale(image)
    cv2.putText(image, message, (20, size[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale,
                (255, 255, 255), max(1, round(scale)), cv2.LINE_AA)
    return image
