"""Temporal smoothing of per-track probabilities: an EMA with hysteresis on the label.

The EMA weight depends on the time since the track's last update (a half-life in seconds), so
smoothing behaves the same at 10 and 60 frames/s and with ``--stride``. The displayed label
changes only when another class beats it by ``hysteresis``: labels do not flicker between two
close classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgefer.errors import ConfigError
from edgefer.types import Faces


@dataclass(frozen=True)
class SmoothingOptions:
    half_life_s: float = 0.3
    hysteresis: float = 0.10

    def __post_init__(self) -> None:
        if self.half_life_s < 0:
            raise ConfigError(f"half_life_s must be >= 0 (0 disables smoothing), got {self.half_life_s}")
        if not 0 <= self.hysteresis < 1:
            raise ConfigError(f"hysteresis must be in [0, 1), got {self.hysteresis}")


@dataclass
class _State:
    probs: np.ndarray
    label: int
    time_s: float


class Smoother:
    """Fills ``faces.smoothed_probs`` and ``faces.smoothed_labels`` by track id."""

    def __init__(self, options: SmoothingOptions = SmoothingOptions()) -> None:
        self.options = options
        self._states: dict[int, _State] = {}

    def update(self, faces: Faces, time_s: float) -> Faces:
        for row, track_id in enumerate(faces.track_ids):
            state = self.step(int(track_id), faces.probs[row], time_s)
            faces.smoothed_probs[row] = state.probs
            faces.smoothed_labels[row] = state.label
        return faces

    def step(self, track_id: int, probs: np.ndarray, time_s: float) -> _State:
        """One face of ``track_id`` (negative: untracked, not remembered) at ``time_s``."""
        state = self._states.get(track_id)
        if state is None or track_id < 0:
            state = _State(probs.astype(np.float32).copy(), int(probs.argmax()), time_s)
            if track_id >= 0:
                self._states[track_id] = state
            return state
        weight = self._new_weight(time_s - state.time_s)
        state.probs = ((1 - weight) * state.probs + weight * probs).astype(np.float32)
        state.time_s = time_s
        best = int(state.probs.argmax())
        if best != state.label and state.probs[best] >= state.probs[state.label] + self.options.hysteresis:
            state.label = best
        return state

    def _new_weight(self, dt_s: float) -> float:
        if self.options.half_life_s == 0:
            return 1.0
        return float(1.0 - 0.5 ** (max(dt_s, 0.0) / self.options.half_life_s))

    def forget(self, track_ids: list[int]) -> None:
        for track_id in track_ids:
            self._states.pop(track_id, None)
