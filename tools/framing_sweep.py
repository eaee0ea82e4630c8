"""Live-path accuracy of a model under other framings (``CropSpec``) of the same detected faces.

The shipped framing is the median of BlazeFace's keypoints on FER2013 crops
(``tools/measure_crop.py``); the aligner scales by the larger of two ratios, so a median is not
necessarily the framing a model reads best. This detects each image's largest face once, then
re-cuts the crop for every candidate framing (``--zoom`` multiplies the eye distance and the
eye-to-mouth distance a crop holds, ``--eye-y`` moves the eyes' height, ``--roll-tolerance`` sets
how much head roll is left unlevelled) and scores the model on them, as
``edgefer eval --mode detect`` would (an image without a usable face counts as wrong).
``--pad`` repeats it all for other paddings of the small pictures the detector reads.
Run it on the validation split: the framing is part of the model and is chosen like one.

    python tools/framing_sweep.py vgg_s2_int8 --val ../shared/data/fer2013/test \
        --glob 'PublicTest_*' --zoom 0.9 1.0 1.1 --eye-y 0.38 0.40 0.42 --roll-tolerance 0 20
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgefer.align import convert_color, similarity_transforms, valid_rows, warp_crops
from edgefer.manifest import CropSpec, ModelEntry, load_model_entry
from edgefer.stills import DETECT_PAD
from edgefer.types import Keypoint


@dataclasses.dataclass(frozen=True)
class DetectedFaces:
    """Each image as the detector saw it (model colour) and its largest face's keypoints."""

    images: list[np.ndarray]
    keypoints: np.ndarray  # (N, 6, 2), NaN where no face was found
    labels: np.ndarray

    @property
    def found(self) -> int:
        return int(np.isfinite(self.keypoints).all(axis=(1, 2)).sum())


def detect_once(entry: ModelEntry, val: str, glob: str, detector: str, pad: float,
                ferplus_csv: str | None) -> DetectedFaces:
    from edgefer.stills import StillCropper, largest
    from edgefer.training.evaluate import EvalOptions, load_dataset

    labels = Path(ferplus_csv) if ferplus_csv else None
    folder = load_dataset(EvalOptions(Path(val), glob, ferplus_labels=labels)).folder
    images, keypoints = [], np.full((len(folder), len(Keypoint), 2), np.nan)
    with StillCropper(entry.input, detector, pad) as cropper:
        for row, path in enumerate(folder.paths):
            image, faces = cropper.faces(str(path))
            images.append(convert_color(image, entry.input.color))
            if len(faces):
                keypoints[row] = faces.keypoints[largest(faces)]
    return DetectedFaces(images, keypoints, folder.labels)


def live_accuracy(faces: DetectedFaces, entry: ModelEntry, crop: CropSpec,
                  run: Callable[[np.ndarray], np.ndarray]) -> float:
    size = entry.input.width
    matrices = similarity_transforms(faces.keypoints, crop, size)
    crops = np.concatenate([warp_crops(image, matrix[None], size)
                            for image, matrix in zip(faces.images, matrices, strict=True)])
    predictions = np.concatenate([run(entry.input.normalize(crops[start:start + 256])).argmax(1)
                                  for start in range(0, len(crops), 256)])
    return float(np.mean(valid_rows(matrices) & (predictions == faces.labels)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model name from engines/manifest.json")
    parser.add_argument("--val", required=True, help="image folder of the validation split")
    parser.add_argument("--glob", default="*", help="file pattern inside --val")
    parser.add_argument("--zoom", type=float, nargs="+", default=[1.0])
    parser.add_argument("--eye-y", type=float, nargs="+", help="default: the model's own")
    parser.add_argument("--roll-tolerance", type=float, nargs="+", metavar="DEGREES",
                        help="default: the model's own")
    parser.add_argument("--ferplus", metavar="CSV", help="score against the FER+ majority")
    parser.add_argument("--detector", default="short")
    parser.add_argument("--pad", type=float, nargs="+", default=[DETECT_PAD],
                        help="padding of small pictures, as a share of their side")
    args = parser.parse_args()

    from edgefer.backends import open_engine

    entry = load_model_entry(args.model)
    own = entry.input.crop
    with open_engine(entry, threads=2) as engine:
        for pad in args.pad:
            faces = detect_once(entry, args.val, args.glob, args.detector, pad, args.ferplus)
            print(f"{args.model}, pad {pad}: {len(faces.labels)} images, a face in {faces.found}")
            for zoom, eye_y, roll in itertools.product(
                    args.zoom, args.eye_y or [own.eye_center_y],
                    args.roll_tolerance or [own.roll_tolerance]):
                crop = CropSpec(own.eye_distance * zoom, eye_y, own.eye_to_mouth * zoom, roll)
                print(f"zoom {zoom:.3f}  eye_y {eye_y:.3f}  roll_tolerance {roll:4.1f}  "
                      f"(eye_distance {crop.eye_distance:.3f}, "
                      f"eye_to_mouth {crop.eye_to_mouth:.3f}): "
                      f"{live_accuracy(faces, entry, crop, engine.run):.2%}", flush=True)


if __name__ == "__main__":
    main()
