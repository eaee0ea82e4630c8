"""``engines/manifest.json``: the single source of truth for every shipped artifact.

Each model entry carries its preprocessing contract (input size, colour, scale, mean/std, layout,
the face-crop geometry its training images had), its class order, its calibration temperature,
and measured metrics with the commands that produced them. Inference code reads all of it from
here and hard-codes none of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.errors import ModelError
from edgefer.files import write_json_atomic
from edgefer.types import EMOTIONS

ENGINES_DIR = Path(__file__).resolve().parent.parent / "engines"
# The checkout, where the README's commands run: manifests record data paths relative to it.
REPOSITORY = ENGINES_DIR.parent
# EDGEFER_MANIFEST points edgefer at another set of artifacts (your own fine-tuned model, say).
MANIFEST_PATH = Path(os.environ.get("EDGEFER_MANIFEST", ENGINES_DIR / "manifest.json"))


# Head roll left unlevelled for networks trained on FER2013's own crops only: those crops show
# that much roll (90th percentile of |roll| over 1,449 training crops: 18 degrees,
# tools/measure_crop.py), and 20 scored best on the validation split (tools/framing_sweep.py).
FER2013_ROLL_TOLERANCE = 20.0


@dataclass(frozen=True)
class CropSpec:
    """Where the eyes and mouth sit in the model's input, as fractions of its side.

    The defaults are the medians of BlazeFace keypoints on 1,465 FER2013 training crops
    (``tools/measure_crop.py``), so live crops are framed like the training images.
    ``edgefer.align`` scales by whichever of the eye distance and the eye-to-mouth distance
    is larger relative to these, which keeps the scale right under yaw and under pitch.
    ``roll_tolerance`` is the head roll (degrees) left as it is: only the roll beyond it is
    levelled (0 levels every face).
    """

    eye_distance: float = 0.362
    eye_center_y: float = 0.402
    eye_to_mouth: float = 0.376
    roll_tolerance: float = 0.0


@dataclass(frozen=True)
class InputSpec:
    """The model's input contract: ``x = (pixels * scale - mean) / std`` in ``layout``."""

    name: str
    height: int
    width: int
    channels: int
    color: str  # "gray" | "rgb"
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str = "NCHW"
    crop: CropSpec = CropSpec()

    def __post_init__(self) -> None:
        if self.color not in ("gray", "rgb"):
            raise ModelError(f"input color must be 'gray' or 'rgb', got {self.color!r}")
        if self.layout != "NCHW":
            raise ModelError(f"only NCHW inputs are supported, got {self.layout!r}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ModelError("input mean and std need one value per channel")
        if self.height != self.width or self.height < 1:
            raise ModelError(f"the aligner makes square crops: input {self.height}x{self.width} "
                             "is not square")

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W[, C])`` pixels to the float32 NCHW tensor the model expects."""
        x = pixels.astype(np.float32)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return np.ascontiguousarray((x * np.float32(self.scale) - mean) / std)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "height": self.height, "width": self.width,
                "channels": self.channels, "color": self.color, "scale": self.scale,
                "mean": list(self.mean), "std": list(self.std), "layout": self.layout,
                "crop": dataclasses.asdict(self.crop)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InputSpec:
        values = dict(values)
        crop = CropSpec(**values.pop("crop", {}))
        return cls(**{**values, "mean": tuple(values["mean"]), "std": tuple(values["std"])},
                   crop=crop)


@dataclass(frozen=True)
class ModelEntry:
    """One shipped classifier as the manifest describes it."""

    name: str
    file: Path
    sha256: str
    classes: tuple[str, ...]
    input: InputSpec
    temperature: float
    raw: dict[str, Any]
    manifest: Path = MANIFEST_PATH  # the manifest that lists it (its float source is there too)

    def verify(self) -> None:
        """Fail clearly if the file is missing or is not the file the manifest describes."""
        if not self.file.is_file():
            raise ModelError(f"model file missing: {self.file} (listed in the manifest)")
        if sha256_file(self.file) != self.sha256:
            raise ModelError(f"model file {self.file} does not match its manifest sha256; "
                             "re-export it or restore the shipped file")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path = MANIFEST_PATH) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ModelError(f"model manifest not found: {path} (the models live in the repository's "
                         "engines/ folder: install from a checkout with pip install -e, or set "
                         "EDGEFER_MANIFEST to an engines/manifest.json)") from err
    except json.JSONDecodeError as err:
        raise ModelError(f"{path} is not valid JSON: {err}") from err


def load_model_entry(name: str | None = None, path: Path = MANIFEST_PATH) -> ModelEntry:
    """The named model (default: the manifest's ``default``), validated."""
    manifest = read_manifest(path)
    name = name or manifest.get("default")
    models = manifest.get("models", {})
    if name not in models:
        wanted = f"model {name!r} is not" if name else "no default model is"
        raise ModelError(f"{wanted} in {path}; available: {', '.join(models) or 'none'}")
    raw = models[name]
    validate_model_entry(raw)
    return ModelEntry(name=name, file=path.parent / raw["file"], sha256=raw["sha256"],
                      classes=tuple(raw["classes"]), input=InputSpec.from_dict(raw["input"]),
                      temperature=float(raw["temperature"]), raw=raw, manifest=path)


REQUIRED_MODEL_FIELDS = ("file", "sha256", "classes", "input", "temperature", "metrics", "train")
REQUIRED_INPUT_FIELDS = ("height", "width", "channels", "color", "scale", "mean", "std", "layout")


def validate_model_entry(raw: dict[str, Any]) -> None:
    """Check a manifest entry's schema; raise ModelError naming the first problem."""
    for key in REQUIRED_MODEL_FIELDS:
        if key not in raw:
            raise ModelError(f"manifest model entry lacks {key!r}")
    for key in REQUIRED_INPUT_FIELDS:
        if key not in raw["input"]:
            raise ModelError(f"manifest model input lacks {key!r}")
    if tuple(raw["classes"]) != EMOTIONS:
        raise ModelError(f"manifest classes {raw['classes']} differ from edgefer's {list(EMOTIONS)}")
    if not (isinstance(raw["temperature"], (int, float)) and raw["temperature"] > 0):
        raise ModelError(f"manifest temperature must be positive, got {raw['temperature']!r}")
    if len(raw["sha256"]) != 64:
        raise ModelError("manifest sha256 must be 64 hex digits")
    for key, metric in raw["metrics"].items():
        if "value" not in metric or "command" not in metric:
            raise ModelError(f"manifest metric {key!r} needs a value and the command that produced it")
    InputSpec.from_dict(raw["input"])


def float_source(entry: ModelEntry) -> ModelEntry:
    """The float model an int8 model was quantized from (GPU engines and PyTorch start there),
    from the entry's own manifest; the entry itself for float models."""
    source = entry.raw.get("quantized_from")
    return load_model_entry(source, entry.manifest) if source else entry


def detector_path(kind: str, path: Path = MANIFEST_PATH) -> Path:
    """The vendored BlazeFace model for ``kind`` ("short" or "full"), checked against its hash."""
    detectors = read_manifest(path).get("detectors", {})
    if not detectors:
        raise ModelError(f"{path} lists no face detectors: a manifest of your own needs the "
                         "repository's engines/ copied whole (cp -r engines DIR), blazeface/ "
                         "and its entries included")
    if kind not in detectors:
        raise ModelError(f"unknown face detector {kind!r}; available: {', '.join(detectors)}")
    entry = detectors[kind]
    file = path.parent / entry["file"]
    if not file.is_file() or sha256_file(file) != entry["sha256"]:
        raise ModelError(f"face-detector model {file} is missing or does not match its sha256")
    return file


def update_manifest(name: str, entry: dict[str, Any], path: Path = MANIFEST_PATH,
                    make_default: bool = False) -> None:
    """Insert or replace a model entry; written to a temporary file first, then renamed."""
    manifest = read_manifest(path) if path.is_file() else {"schema": 1, "models": {}}
    manifest.setdefault("models", {})[name] = entry
    if make_default or "default" not in manifest:
        manifest["default"] = name
    write_manifest(manifest, path)


def write_manifest(manifest: dict[str, Any], path: Path = MANIFEST_PATH) -> None:
    write_json_atomic(path, manifest)
