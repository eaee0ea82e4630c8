"""edgefer: real-time facial-emotion recognition at the edge, with a vision-LLM second opinion.

``import edgefer`` stays light: heavy stages (MediaPipe, ONNX Runtime, torch, TensorRT) load
when first used.
"""

import os

# OpenCV's FFmpeg and capture layers print to stderr for every damaged frame or unreadable file;
# edgefer reports those itself, once and in plain words. Users can still set these variables.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

from edgefer.errors import EdgeferError
from edgefer.types import EMOTIONS, Emotion, Faces, Frame, FrameResult

__version__ = "0.1.0"

__all__ = ["EMOTIONS", "EdgeferError", "Emotion", "Faces", "Frame", "FrameResult", "__version__"]
