"""PyTorch backend: runs the shipped ``.pt`` weights (reference for parity checks; needs torch)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.backends.base import Engine
from edgefer.errors import InputError, ModelError, require
from edgefer.manifest import InputSpec, ModelEntry


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, module: Any, spec: InputSpec, threads: int = 1) -> None:
        super().__init__(spec)
        self._torch = require("torch", "torch")
        self._torch.set_num_threads(threads)
        self._module = module.eval()

    @classmethod
    def from_entry(cls, entry: ModelEntry, threads: int = 1) -> TorchEngine:
        weights = entry.raw.get("pytorch_file")
        if not weights:
            raise ModelError(f"model {entry.name!r} ships no PyTorch weights (pytorch_file)")
        module = load_module(entry.file.parent / weights)
        if entry.raw.get("tta") == "flip":
            from edgefer.models import with_flip_average

            module = with_flip_average(module)
        return cls(module, entry.input, threads)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self._module(self._torch.from_numpy(batch)).float().numpy()


def load_module(path: Path) -> Any:
    """A model from a training checkpoint or shipped weights: ``{"recipe": {...}, "model": state}``."""
    return load_checkpoint(path)[0]


def load_checkpoint(path: Path, weights: str = "model") -> tuple[Any, dict[str, Any]]:
    """The model in eval mode and the whole saved dictionary (recipe, data, epoch...).

    ``weights = "ema"`` loads a training ``last.pt``'s weight average instead of its final
    weights (``best.pt`` and shipped files hold only the average, as ``model``). An exported
    ensemble holds its networks as ``members``, each with its recipe and ``model`` weights.
    """
    torch = require("torch", "torch")
    from edgefer import models

    if not path.is_file():
        raise ModelError(f"PyTorch weights not found: {path}")
    try:
        # weights_only: unpickling anything else would run code from the file
        saved = torch.load(path, map_location="cpu", weights_only=True)
        members = saved.get("members", [saved])
        if any(weights not in member and "model" in member for member in members):
            raise InputError(f"{path} holds no {weights!r} weights (best.pt and shipped .pt "
                             "files hold only the weight average, as 'model')")
        networks = [network(member, weights) for member in members]
    except (KeyError, AttributeError, IndexError, TypeError, ValueError, RuntimeError, EOFError,
            pickle.UnpicklingError) as err:  # what torch's unpickler raises on other files
        # torch's own messages (several lines, suggesting weights_only=False) do not help here
        raise ModelError(f"{path} is not an edgefer checkpoint (a .pt written by edgefer train "
                         "or export; --debug shows what reading it raised)") from err
    module = networks[0] if "members" not in saved else models.average_of(networks)
    return module.eval(), saved


def network(saved: dict[str, Any], weights: str) -> Any:
    """One network built from its recipe and loaded with the ``weights`` state."""
    from edgefer import models

    module = models.build(saved["recipe"]["arch"], input_size=saved["recipe"]["input_size"])
    module.load_state_dict(saved[weights])
    return module
