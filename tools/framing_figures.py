"""Validation accuracy of training checkpoints in both framings, alone and as an ensemble.

The "own / live / mean" figures of engines/MODEL_CARD.md ("What was tried"): each checkpoint,
mirror-averaged as exported models are, scored on FER2013's own crops and on the same images
framed by BlazeFace and the aligner as they will frame them for the exported model (its head
roll tolerance included; from `edgefer train`'s crop cache); with several checkpoints, also
their ensemble: their logits averaged, as `edgefer export A.pt B.pt` writes it (`--no-mirror`
scores each network without its mirror view).

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
                    weights: str = "model", ferplus_csv: str | None = None,
                    mirror: bool = True) -> list[FramingFigures]:
    """One row per checkpoint, then one for their ensemble when there are several."""
    import torch

    from edgefer.training import datasets
    from edgefer.training.export import input_spec
    from edgefer.training.recipe import Recipe
    from edgefer.training.train import checkpoint_logits, load_split

    # The first checkpoint's face size and framing frame the images, as `edgefer export A B`
    # frames an ensemble; checkpoint_logits refuses other sizes.
    recipe = torch.load(checkpoints[0], map_location="cpu", weights_only=True)["recipe"]
    size = recipe["input_size"]
    framing = Recipe(input_size=size, live_framing=1.0,
                     live_roll_tolerance=input_spec(recipe).crop.roll_tolerance)
    majority = datasets.ferplus_majority(ferplus_csv) if ferplus_csv else None
    split = load_split(val_dir, glob, framing, {}, majority, crop_cache)
    both = torch.cat([split.pixels, split.live_pixels])  # own framing, then live: one pass
    labels = split.labels.numpy()
    logits = [checkpoint_logits(path, both, size, weights=weights, mirror=mirror).numpy()
              for path in checkpoints]
    names = list(checkpoints)
    if len(checkpoints) > 1:
        logits.append(np.mean(logits, axis=0))
        names.append("ensemble")
    return [FramingFigures(name, *(float(np.mean(half.argmax(1) == labels))
                                   for half in np.split(p, len(FRAMINGS))))
            for name, p in zip(names, logits, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="training checkpoints or shipped .pt files")
    parser.add_argument("--val", required=True, help="image folder of the validation split")
    parser.add_argument("--glob", default="*", help="file pattern inside --val")
    parser.add_argument("--crop-cache", help="where `edgefer train` cached the live crops")
    parser.add_argument("--weights", choices=("model", "ema"), default="model",
                        help="a last.pt's final weights (model) or weight average (ema)")
    parser.add_argument("--ferplus", metavar="CSV", help="score against the FER+ majority")
    parser.add_argument("--no-mirror", dest="mirror", action="store_false",
                        help="score each checkpoint without averaging it with the mirror image "
                             "(half the compute: two models unmirrored cost one mirrored)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    for row in framing_figures(args.checkpoints, args.val, args.glob, args.crop_cache,
                               args.weights, args.ferplus, args.mirror):
        print(row.line())


if __name__ == "__main__":
    main()
