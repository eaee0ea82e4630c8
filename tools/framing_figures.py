"""Validation accuracy of training checkpoints in both framings, alone and as an ensemble.

The "own / live / mean" figures of engines/MODEL_CARD.md ("What was tried"): each checkpoint,
mirror-averaged as exported models are, scored on FER2013's own crops and on the same images
framed by BlazeFace and the aligner (the crops `edgefer train` validates on, from its crop
cache); with several checkpoints, also their averaged probabilities (an ensemble, the kind of
teacher `--teacher` distils from).

    python tools/framing_figures.py engines/vgg_s.pt runs/vgg_s_live/last.pt \
        --val ../shared/data/fer2013/test --glob 'PublicTest_*' --crop-cache runs/crop-cache

``--weights ema`` scores a ``last.pt``'s weight average instead of its final weights (``best.pt``
and shipped ``.pt`` files hold only the weight average, as ``model``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

FRAMINGS = ("own", "live")


@dataclass(frozen=True)
class FramingFigures:
    """Accuracy on each framing's crops of the same images, and their mean (what selects)."""

    name: str
    own: float
    live: float

    @property
    def mean(self) -> float:
        return (self.own + self.live) / 2

    def line(self) -> str:
        return (f"{self.name}: own {self.own:.2%}  live {self.live:.2%}  "
                f"mean {self.mean:.2%}")


def framing_figures(checkpoints: list[str], val_dir: str, glob: str, crop_cache: str | None,
                    weights: str = "model", ferplus_csv: str | None = None
                    ) -> list[FramingFigures]:
    """One row per checkpoint, then one for their ensemble when there are several."""
    import torch

    from edgefer import models
    from edgefer.errors import InputError
    from edgefer.training import datasets
    from edgefer.training.recipe import Recipe
    from edgefer.training.train import load_split, predict_split

    loaded = [torch.load(path, map_location="cpu", weights_only=True) for path in checkpoints]
    recipes = [Recipe.from_dict(saved["recipe"]) for saved in loaded]
    if len({recipe.input_size for recipe in recipes}) > 1:
        raise InputError("the checkpoints take faces of different sizes")
    majority = datasets.ferplus_majority(ferplus_csv) if ferplus_csv else None
    split = load_split(val_dir, glob, recipes[0].replace(live_framing=1.0), {}, majority,
                       crop_cache)
    labels = split.labels.numpy()
    rows, totals = [], {framing: 0.0 for framing in FRAMINGS}
    for path, saved, recipe in zip(checkpoints, loaded, recipes, strict=True):
        if weights not in saved:
            raise InputError(f"{path} holds no {weights!r} weights")
        net = models.build(recipe.arch)
        net.load_state_dict(saved[weights])
        flipped = models.with_flip_average(net)
        accuracy = {}
        for framing, pixels in zip(FRAMINGS, (split.pixels, split.live_pixels), strict=True):
            _, probs = predict_split(flipped, split, recipe, pixels=pixels)
            totals[framing] = totals[framing] + probs
            accuracy[framing] = float(np.mean(probs.argmax(1) == labels))
        rows.append(FramingFigures(path, **accuracy))
    if len(checkpoints) > 1:
        rows.append(FramingFigures("ensemble", **{
            framing: float(np.mean(np.argmax(total, 1) == labels))
            for framing, total in totals.items()}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="training checkpoints or shipped .pt files")
    parser.add_argument("--val", required=True, help="image folder of the validation split")
    parser.add_argument("--glob", default="*", help="file pattern inside --val")
    parser.add_argument("--crop-cache", help="where `edgefer train` cached the live crops")
    parser.add_argument("--weights", choices=("model", "ema"), default="model",
                        help="a last.pt's final weights (model) or weight average (ema)")
    parser.add_argument("--ferplus", metavar="CSV", help="score against the FER+ majority")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    for row in framing_figures(args.checkpoints, args.val, args.glob, args.crop_cache,
                               args.weights, args.ferplus):
        print(row.line())


if __name__ == "__main__":
    main()
