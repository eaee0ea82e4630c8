"""Validation accuracy of training checkpoints in both framings, alone and as an ensemble.

The "own / live / mean" figures of engines/MODEL_CARD.md ("What was tried"): each checkpoint,
mirror-averaged as exported models are, scored on FER2013's own crops and on the same images
framed by BlazeFace and the aligner as they will frame them for that checkpoint's export (its
head roll tolerance included; from `edgefer train`'s crop cache); with several checkpoints, also
their ensemble: their logits averaged, on the first checkpoint's framing, as `edgefer export A.pt
B.pt` writes it (`--no-mirror` scores each network without its mirror view;
`--ensemble-no-mirror` only the ensemble's networks, which then cost what one mirror-averaged
network costs, beside the single networks mirror-averaged as shipped).

    python tools/framing_figures.py engines/vgg_s.pt runs/vgg_s_live/last.pt \
        runs/vgg_s_live/last.pt:ema --val ../shared/data/fer2013/test --glob 'PublicTest_*' \
        --crop-cache runs/crop-cache

``PATH:ema`` scores a ``last.pt``'s weight average instead of its final weights (``best.pt``
and shipped ``.pt`` files hold only the weight average, as ``model``). Every row after the first
also says how far its mean stands from the first's, with the paired standard error: a rule to
ship can then ask for a gain beyond the noise (7,178 crops on PublicTest), not only for a
fixed margin.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np

FRAMINGS = ("own", "live")
WEIGHTS = ("model", "ema")


@dataclass(frozen=True, eq=False)
class FramingFigures:
    """Which images a checkpoint reads right in each framing: accuracy on each, their mean (what
    selects), and how far a difference from another row stands above the noise."""

    name: str
    correct: np.ndarray  # (2, images) bool: FER2013's own crops, then the live framing's

    @property
    def own(self) -> float:
        return float(self.correct[0].mean())

    @property
    def live(self) -> float:
        return float(self.correct[1].mean())

    @property
    def mean(self) -> float:
        return float(self.correct.mean())

    def line(self) -> str:
        return (f"{self.name}: own {self.own:.2%}  live {self.live:.2%}  "
                f"mean {self.mean:.2%}")

    def versus(self, base: FramingFigures) -> str:
        """The mean's difference from ``base`` with its paired standard error (each crop of
        either framing counted as one sample), and the crops only one of the two reads right."""
        gained = int(np.sum(self.correct & ~base.correct))
        lost = int(np.sum(base.correct & ~self.correct))
        n = self.correct.size
        difference = (gained - lost) / n
        error = np.sqrt(((gained + lost) / n - difference ** 2) / n)
        return (f"{difference * 100:+.2f} ± {error * 100:.2f} points against {base.name} "
                f"({gained} crops right only here, {lost} only there)")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file and which of its weights to score (``PATH`` or ``PATH:ema``)."""

    path: str
    weights: str = "model"

    @classmethod
    def parse(cls, spec: str) -> Checkpoint:
        path, _, weights = spec.rpartition(":")
        return cls(path, weights) if path and weights in WEIGHTS else cls(spec)


def framing_figures(checkpoints: list[str], val_dir: str, glob: str, crop_cache: str | None,
                    ferplus_csv: str | None = None, mirror: bool = True,
                    ensemble_mirror: bool | None = None) -> list[FramingFigures]:
    """One row per checkpoint (``PATH`` or ``PATH:ema``), each on its own export's framing, then
    one for their ensemble, on the first's, when there are several (its networks mirror-averaged
    as ``ensemble_mirror`` says, as ``mirror`` when None)."""
    from edgefer.training import datasets

    majority = datasets.ferplus_majority(ferplus_csv) if ferplus_csv else None
    scorer = _Scorer(val_dir, glob, crop_cache, majority)
    parsed = [Checkpoint.parse(spec) for spec in checkpoints]
    framings = [_framing(checkpoint) for checkpoint in parsed]
    rows = [scorer.figures(spec, [checkpoint], framing, mirror)
            for spec, checkpoint, framing in zip(checkpoints, parsed, framings, strict=True)]
    if len(parsed) > 1:
        ensemble_mirror = mirror if ensemble_mirror is None else ensemble_mirror
        name = "ensemble" if ensemble_mirror == mirror else (
            f"ensemble, {'mirror-averaged' if ensemble_mirror else 'unmirrored'}")
        rows.append(scorer.figures(name, parsed, framings[0], ensemble_mirror))
    return rows


Framing = tuple[int, float]  # face size, head roll tolerance


def _framing(checkpoint: Checkpoint) -> Framing:
    """The face size and head roll tolerance the checkpoint's export frames faces with."""
    import torch

    from edgefer.training.export import input_spec

    recipe = torch.load(checkpoint.path, map_location="cpu", weights_only=True)["recipe"]
    return recipe["input_size"], input_spec(recipe).crop.roll_tolerance


class _Scorer:
    """The validation images in each framing asked for, and each checkpoint's logits on them,
    each computed once."""

    def __init__(self, val_dir: str, glob: str, crop_cache: str | None,
                 majority: dict[str, str] | None) -> None:
        self.val_dir, self.glob, self.crop_cache = val_dir, glob, crop_cache
        self.majority = majority
        self._splits: dict[Framing, Any] = {}
        self._logits: dict[tuple[Checkpoint, Framing, bool], np.ndarray] = {}

    def figures(self, name: str, checkpoints: list[Checkpoint], framing: Framing,
                mirror: bool) -> FramingFigures:
        logits = np.mean([self.logits(checkpoint, framing, mirror) for checkpoint in checkpoints],
                         axis=0)
        labels = self.split(framing).labels.numpy()
        halves = np.split(logits, len(FRAMINGS))  # own framing's rows, then live's
        return FramingFigures(name, np.stack([half.argmax(1) == labels for half in halves]))

    def logits(self, checkpoint: Checkpoint, framing: Framing, mirror: bool) -> np.ndarray:
        """The own framing's rows, then the live framing's."""
        import torch

        from edgefer.training.train import checkpoint_logits

        key = (checkpoint, framing, mirror)
        if key not in self._logits:
            split = self.split(framing)
            both = torch.cat([split.pixels, split.live_pixels])  # one pass
            # checkpoint_logits refuses a checkpoint trained on another face size
            self._logits[key] = checkpoint_logits(checkpoint.path, both, framing[0],
                                                  weights=checkpoint.weights,
                                                  mirror=mirror).numpy()
        return self._logits[key]

    def split(self, framing: Framing) -> Any:
        from edgefer.training.recipe import Recipe
        from edgefer.training.train import load_split

        if framing not in self._splits:
            size, roll = framing
            recipe = Recipe(input_size=size, live_framing=1.0, live_roll_tolerance=roll)
            self._splits[framing] = load_split(self.val_dir, self.glob, recipe, {}, self.majority,
                                               self.crop_cache)
        return self._splits[framing]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+",
                        help="training checkpoints or shipped .pt files; PATH:ema for a last.pt's "
                             "weight average")
    parser.add_argument("--val", required=True, help="image folder of the validation split")
    parser.add_argument("--glob", default="*", help="file pattern inside --val")
    parser.add_argument("--crop-cache", help="where `edgefer train` cached the live crops")
    parser.add_argument("--ferplus", metavar="CSV", help="score against the FER+ majority")
    parser.add_argument("--no-mirror", dest="mirror", action="store_false",
                        help="score each checkpoint without averaging it with the mirror image "
                             "(half the compute: two models unmirrored cost one mirrored)")
    parser.add_argument("--ensemble-no-mirror", dest="ensemble_mirror", action="store_false",
                        default=None, help="score only the ensemble's networks without their "
                                           "mirror views, the single rows mirror-averaged")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = framing_figures(args.checkpoints, args.val, args.glob, args.crop_cache, args.ferplus,
                           args.mirror, args.ensemble_mirror)
    print(rows[0].line())
    for row in rows[1:]:
        print(f"{row.line()}\n    {row.versus(rows[0])}")


if __name__ == "__main__":
    main()
