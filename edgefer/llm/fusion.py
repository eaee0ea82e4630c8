"""The learned policy: a fusion model fitted on the endpoint's answers (``edgefer llm calibrate``).

Two small linear models and a table of the endpoint's answers, applied here with NumPy and
fitted offline (``training/cascade.py``):

- ``recalibration``: multinomial logistic regression from the CNN's calibrated log-probabilities
  to the label space of the calibration data (used for faces without an answer);
- ``fusion``: the same, from the CNN's log-probabilities and the LLM's answer distribution
  (used for faces with an answer);
- ``answer_confusion`` and ``typical_answers``: how often the endpoint's top answer is each
  class given the true class, and its mean answer distribution for each top answer. With them
  the expected benefit of asking about a face is computed before asking (see
  ``FusionModel.expected_benefit``); faces are asked about when it exceeds ``benefit_threshold``
  (never below zero), the most beneficial first.

The file is keyed by LLM model and prompt (an answer distribution means something only for
the endpoint and question it was fitted on) and carries its provenance and figures.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.classify import softmax
from edgefer.errors import ConfigError
from edgefer.llm.constants import PROMPT_VERSION

log = logging.getLogger(__name__)

FORMAT = 2
CNN_FLOOR = 1e-4  # log-probabilities are clipped here (a saturated softmax carries no more)
LLM_FLOOR = 1e-3
ARRAYS = ("recalibration", "fusion", "answer_confusion", "typical_answers")


def cnn_features(probs: np.ndarray) -> np.ndarray:
    """[1, log p_cnn] per row."""
    probs = np.atleast_2d(probs)
    return np.hstack([np.ones((len(probs), 1)), np.log(np.clip(probs, CNN_FLOOR, 1.0))])


def fused_features(probs: np.ndarray, llm_probs: np.ndarray) -> np.ndarray:
    """[1, log p_cnn, log p_llm] per row."""
    return np.hstack([cnn_features(probs), np.log(np.clip(np.atleast_2d(llm_probs), LLM_FLOOR, 1))])


def fusion_key(model: str, prompt: str) -> str:
    """File name for an LLM model and prompt: ``<model>__<prompt>_v<prompt version>.json``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"
    return f"{slug}__{prompt}_v{PROMPT_VERSION}.json"


def default_fusion_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "edgefer" / "fusion"


def fusion_path(model: str, prompt: str, configured: str | None = None) -> Path:
    """``configured`` when given, else the user's fusion folder (``$XDG_CONFIG_HOME``)."""
    return Path(configured) if configured else default_fusion_dir() / fusion_key(model, prompt)


@dataclass(frozen=True)
class FusionModel:
    recalibration: np.ndarray  # (1 + C, C)
    fusion: np.ndarray  # (1 + 2C, C)
    answer_confusion: np.ndarray  # (C, C + 1): P(top answer | true class); last: no usable answer
    typical_answers: np.ndarray  # (C, C): mean answer distribution per top answer
    benefit_threshold: float
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def asks(self) -> bool:
        """False when the fit found that asking does not beat the CNN: no face is ever sent."""
        return bool(np.isfinite(self.benefit_threshold))

    def recalibrate(self, probs: np.ndarray) -> np.ndarray:
        return softmax(cnn_features(probs) @ self.recalibration)

    def fuse(self, probs: np.ndarray, llm_probs: np.ndarray) -> np.ndarray:
        return softmax(fused_features(probs, llm_probs) @ self.fusion)

    def expected_benefit(self, probs: np.ndarray) -> np.ndarray:
        """Expected accuracy gain from asking, per face, before asking.

        The true class is weighed by the recalibrated CNN, the endpoint's top answer for it by
        its fitted confusion, and for each possible answer the fused decision (with that
        answer's typical distribution) is compared with the recalibrated one. Assumes the answer
        depends on the face through its true class only; a decision it cannot change scores 0,
        so a face is worth asking only where some plausible answer would flip it for the better.
        """
        probs = np.atleast_2d(probs)
        recalibrated = self.recalibrate(probs)
        classes = recalibrated.shape[1]
        # fused logits are [1, log p_cnn] @ W_cnn + log p_llm @ W_llm: the CNN's part once per
        # face, the answer's part once per typical answer, and argmax needs no softmax
        cnn_part = cnn_features(probs) @ self.fusion[:1 + classes]
        answer_part = np.log(np.clip(self.typical_answers, LLM_FLOOR, 1)) @ self.fusion[1 + classes:]
        fused = (cnn_part[None] + answer_part[:, None]).argmax(2)  # (answer, face)
        rows, answers = np.arange(len(probs)), np.arange(classes)[:, None]
        current = recalibrated.argmax(1)
        helped = recalibrated[rows, fused] * self.answer_confusion[fused, answers]
        kept = recalibrated[rows, current] * self.answer_confusion[current, answers]
        # an answer that leaves the decision as it is contributes exactly 0, not rounding noise
        return np.where(fused == current, 0.0, helped - kept).sum(0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ARRAYS:
            out[key] = np.round(out[key], 6).tolist()
        return {"format": FORMAT, **out}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], classes: int = 7) -> FusionModel:
        if raw.get("format") != FORMAT:
            raise ConfigError(f"fusion file format {raw.get('format')!r} is not {FORMAT}; "
                              "re-run `edgefer llm calibrate`")
        arrays = {key: np.asarray(raw[key], np.float64) for key in ARRAYS}
        threshold = raw["benefit_threshold"]  # null: never ask (strict JSON has no infinity)
        model = cls(**arrays, benefit_threshold=np.inf if threshold is None else float(threshold),
                    provenance=dict(raw.get("provenance", {})))
        shapes = {"recalibration": (1 + classes, classes), "fusion": (1 + 2 * classes, classes),
                  "answer_confusion": (classes, classes + 1),
                  "typical_answers": (classes, classes)}
        for key, shape in shapes.items():
            if getattr(model, key).shape != shape:
                raise ConfigError(f"fusion file: {key} has shape {getattr(model, key).shape}, "
                                  f"expected {shape}")
        return model

    def save(self, path: Path) -> None:
        from edgefer.files import write_json_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> FusionModel:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read the fusion file {path}: {err}") from err
        try:
            return cls.from_dict(raw)
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"invalid fusion file {path}: {err}") from err


def load_for(model: str, prompt: str, configured: str | None = None
             ) -> tuple[FusionModel | None, Path]:
    """The fitted model for this endpoint model and prompt, or None when there is none."""
    path = fusion_path(model, prompt, configured)
    if not path.is_file():
        if configured:
            raise ConfigError(f"fusion file {path} does not exist")
        return None, path
    return FusionModel.load(path), path
