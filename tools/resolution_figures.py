"""Accuracy and confidence of shipped models on faces with fewer pixels ("Known failure modes").

Each 48x48 crop is shrunk to S x S pixels (area averaging, as a camera's sensor would) and
enlarged back (bilinear, as the aligner's warp enlarges a small face), then classified as the
shipped model classifies (its temperature, its mirror view). The crop's side S is converted
to the width of BlazeFace's box around such a face by the ratio measured here: the aligner's
crop side over the box width, for the largest face BlazeFace finds in each image.

    python tools/resolution_figures.py --val ../shared/data/fer2013/test --glob 'PublicTest_*' \
        --model vgg_s4_int8 vgg_s_ferplus4_int8 --ferplus ../shared/data/ferplus/ferplus_labels.csv

A model whose name holds "ferplus" is scored against the FER+ majority (``--ferplus``), the
others against the folder's FER2013 labels.
"""

from __future__ import annotations

import argparse

import numpy as np

SIDES = (48, 40, 32, 28, 24, 20, 16, 12)
RATIO_SAMPLE = 400  # images the box-to-crop ratio is measured on


def degrade(pixels: np.ndarray, side: int) -> np.ndarray:
    """Each crop as it would look had the face been ``side`` pixels across."""
    import cv2

    if side >= pixels.shape[1]:
        return pixels
    size = pixels.shape[1:3][::-1]
    return np.stack([cv2.resize(cv2.resize(p, (side, side), interpolation=cv2.INTER_AREA), size,
                                interpolation=cv2.INTER_LINEAR) for p in pixels])


def crop_to_box_ratio(folder, entry) -> float:  # type: ignore[no-untyped-def]
    """Median of the aligner's crop side (source pixels) over BlazeFace's box width."""
    from edgefer.align import similarity_transforms
    from edgefer.stills import StillCropper, largest

    size = entry.input.height
    ratios = []
    with StillCropper(entry.input) as cropper:
        for path in folder.paths[:RATIO_SAMPLE]:
            _, faces = cropper.faces(str(path))
            if not len(faces):
                continue
            row = largest(faces)
            matrix = similarity_transforms(faces.keypoints[row:row + 1], entry.input.crop, size)[0]
            side = size / np.hypot(matrix[0, 0], matrix[0, 1])  # the crop's side in the source
            ratios.append(side / (faces.xyxy[row, 2] - faces.xyxy[row, 0]))
    return float(np.nanmedian(ratios))


def figures(name: str, folder, labels: np.ndarray, ratio: float) -> list[str]:  # type: ignore[no-untyped-def]
    from edgefer.backends import open_engine
    from edgefer.classify import softmax
    from edgefer.manifest import load_model_entry
    from edgefer.training import datasets

    entry = load_model_entry(name)
    pixels = datasets.load_pixels(folder, (entry.input.height, entry.input.width))
    rows = []
    with open_engine(entry, "onnxruntime", 1, "fp16") as engine:
        for side in SIDES:
            batch = degrade(pixels, side)
            logits = np.concatenate([engine.run(entry.input.normalize(batch[i:i + 256]))
                                     for i in range(0, len(batch), 256)])
            probs = softmax(logits, entry.temperature)
            accuracy = float((probs.argmax(axis=1) == labels).mean())
            rows.append(f"| `{name}` | {side} | {side / ratio:.0f} | {accuracy:.2%} | "
                        f"{probs.max(axis=1).mean():.3f} |")
    return rows


def main() -> None:
    from edgefer.manifest import load_model_entry
    from edgefer.training import datasets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", required=True, help="DIR/<class>/* 48x48 face crops")
    parser.add_argument("--glob", default="*")
    parser.add_argument("--model", nargs="+", default=[None], help="manifest names (default: "
                        "the default model)")
    parser.add_argument("--ferplus", help="FER+ labels CSV, for consensus models")
    args = parser.parse_args()
    folder = datasets.scan_image_folder(args.val, args.glob)
    ratio = crop_to_box_ratio(folder, load_model_entry(args.model[0]))
    print(f"crop side / box width: median {ratio:.3f} over the first {RATIO_SAMPLE} images\n")
    print("| model | face crop side, px | box width, px (about) | accuracy | mean confidence |")
    print("|---|---:|---:|---:|---:|")
    for name in args.model:
        chosen, labels = folder, folder.labels
        if name and "ferplus" in name:
            if not args.ferplus:
                parser.error(f"{name} is scored against the FER+ majority: give --ferplus")
            chosen, _ = datasets.relabel_ferplus(folder, datasets.ferplus_majority(args.ferplus))
            labels = chosen.labels
        print("\n".join(figures(name or load_model_entry(None).name, chosen, labels, ratio)))


if __name__ == "__main__":
    main()
