"""Training recipes: every hyperparameter of a run, kept in a TOML file beside the weights.

The recipe holds no data paths (those belong to the machine and go on the command line); the
manifest records both, so a shipped model can be reproduced exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefer.errors import ConfigError
from edgefer.files import read_toml


@dataclass(frozen=True)
class Augment:
    """Face-suited augmentation; magnitudes are maxima of uniform draws."""

    rotate_deg: float = 12.0
    scale: float = 0.12
    shift: float = 0.10
    hflip: bool = True
    brightness: float = 0.25
    contrast: float = 0.30
    erase_prob: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.20)
    # Capture degradations the live path meets: low resolution (a far face upscaled), sensor
    # noise and exposure curves. Zero turns each off (the shipped vgg_s recipe predates them).
    blur_prob: float = 0.0  # share of images downscaled to a random side, then back up
    blur_min_side: int = 16  # the smallest side they are downscaled to
    noise_std: float = 0.0  # maximum standard deviation of added Gaussian noise (0-1 scale)
    gamma: float = 0.0  # gamma drawn log-uniformly in [exp(-gamma), exp(gamma)]


@dataclass(frozen=True)
class Recipe:
    arch: str = "vgg_s"
    input_size: int = 48
    mean: float = 0.5
    std: float = 0.25
    epochs: int = 80
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    class_weights: str = "sqrt_inverse"  # none | sqrt_inverse | inverse
    ferplus_weight: float = 0.0  # share of the target taken from FER+ votes when given
    # Which truth the model learns and is selected on: "fer2013" (the folder labels) or "ferplus"
    # (the FER+ majority of ten annotators; images without a 7-class majority are left out).
    target_labels: str = "fer2013"
    # Share of training samples shown as the live detector and aligner frame them (needs the
    # cached live crops, see edgefer.training.live_crops); model selection then averages the
    # validation accuracy of both framings.
    live_framing: float = 0.0
    # Head roll (degrees) the live-framed crops keep unlevelled, as the aligner will keep it for
    # the exported model; 0 levels every face, as the recipes before session 10 did.
    live_roll_tolerance: float = 0.0
    # Knowledge distillation: share of the target taken from the teachers' probabilities
    # (``edgefer train --teacher PT``, averaged over teachers and mirror images, softened by
    # ``teacher_temperature``), computed once per image and framing before training.
    teacher_weight: float = 0.0
    teacher_temperature: float = 2.0
    # Which framing the teachers score for a live-framed sample: "same" (its live crop) or
    # "original" (FER2013's own crop of the same image, which teachers trained on FER2013 read
    # better: the student learns to see through the live framing, not to copy its errors).
    teacher_framing: str = "same"
    # Sharpness-aware minimization (Foret et al. 2021): each step takes the gradient at the
    # weights a step of this L2 radius uphill, seeking flat minima; 0 is plain SGD. Costs a
    # second forward and backward pass per step.
    sam_rho: float = 0.0
    ema_decay: float = 0.999
    bf16: bool = True  # autocast on CPUs with AMX/AVX512-BF16 (ignored elsewhere); weights stay fp32
    seed: int = 0
    threads: int = 2
    augment: Augment = field(default_factory=Augment)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "ferplus_weight": 0 <= self.ferplus_weight <= 1,
            "live_framing": 0 <= self.live_framing <= 1,
            "live_roll_tolerance": 0 <= self.live_roll_tolerance <= 180,
            "target_labels": self.target_labels in ("fer2013", "ferplus"),
            "teacher_weight": 0 <= self.teacher_weight <= 1,
            "teacher_temperature": self.teacher_temperature > 0,
            "teacher_framing": self.teacher_framing in ("same", "original"),
            "sam_rho": self.sam_rho >= 0,
            "ema_decay": 0 <= self.ema_decay < 1, "threads": self.threads >= 1,
            "class_weights": self.class_weights in ("none", "sqrt_inverse", "inverse"),
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"invalid recipe value {key}={getattr(self, key)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        values = dict(values)
        augment = values.pop("augment", {})
        _reject_unknown(values, cls, "")
        _reject_unknown(augment, Augment, "augment.")
        _check_types(values, cls(), "")
        _check_types(augment, Augment(), "augment.")
        if "erase_area" in augment:
            augment["erase_area"] = tuple(augment["erase_area"])
        try:
            return cls(**values, augment=Augment(**augment))
        except TypeError as err:
            raise ConfigError(f"invalid recipe: {err}") from err

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        return cls.from_dict(read_toml(path))


KINDS = {int: "a whole number", float: "a number", str: "a string", bool: "true or false",
         tuple: "a list"}


def _check_types(values: dict[str, Any], defaults: Any, prefix: str) -> None:
    """Each value of the type its default has (an int where a float goes): ``epochs = "3"``
    is named here rather than failing later in a comparison that names no key."""
    for key, value in values.items():
        expected = type(getattr(defaults, key))
        if expected is tuple:
            ok = isinstance(value, (list, tuple))
        elif expected is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, expected) and (expected is bool) == isinstance(value, bool)
        if not ok:
            raise ConfigError(f"recipe key {prefix + key!r} must be {KINDS[expected]}, "
                              f"got {value!r}")


def _reject_unknown(values: dict[str, Any], kind: type, prefix: str) -> None:
    known = {f.name for f in dataclasses.fields(kind)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown recipe key {prefix + key!r}; known: {', '.join(sorted(known))}")
