"""edgefer: real-time facial-emotion recognition at the edge, with a vision-LLM second opinion.

``import edgefer`` stays light: heavy stages (MediaPipe, ONNX Runtime, torch, TensorRT) load
when first used.
"""

from edgefer.errors import EdgeferError
from edgefer.types import EMOTIONS, Emotion, Faces, Frame, FrameResult

__version__ = "0.1.0"

__all__ = ["EMOTIONS", "EdgeferError", "Emotion", "Faces", "Frame", "FrameResult", "__version__"]
