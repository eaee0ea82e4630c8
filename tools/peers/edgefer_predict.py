"""edgefer's per-image predictions, in the format of the peers' predictors, for compare.py.

``edgefer eval --json`` reports figures, not per-image labels; the peers on face-api's detector
path run on a subset (``--every``), so compare.py needs edgefer's label for each picture to score
it on exactly the same ones. This calls the same ``evaluate`` function as ``edgefer eval``;
compare.py checks that the full-set accuracy equals the one ``edgefer eval --json`` wrote.

    PYTHONPATH=$PWD python tools/peers/edgefer_predict.py ../shared/data/ckplus48 -o OUT.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import onnxruntime

import edgefer
from edgefer.manifest import load_model_entry
from edgefer.training.evaluate import EvalOptions, evaluate
from edgefer.types import EMOTIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="DIR/<class>/* images")
    parser.add_argument("-o", "--output", type=Path, required=True, help="predictions JSON")
    parser.add_argument("--glob", default="*")
    parser.add_argument("--mode", choices=("crops", "detect"), default="crops")
    parser.add_argument("--model", default=None, help="manifest name (default: its default)")
    args = parser.parse_args()

    entry = load_model_entry(args.model)
    start = time.perf_counter()
    result = evaluate(EvalOptions(args.data_dir, args.glob, mode=args.mode, model=args.model))
    seconds = time.perf_counter() - start
    predictions = [EMOTIONS[c] if found else None
                   for c, found in zip(result.y_pred, result.face_found, strict=True)]
    output = {
        "peer": "edgefer", "version": edgefer.__version__,
        "variant": f"{entry.name}, --mode {args.mode}",
        "backend": f"onnxruntime {onnxruntime.__version__} (CPU, 2 threads)",
        "data_dir": str(args.data_dir), "glob": args.glob, "every": 1,
        "seconds_per_image": seconds / len(result.paths),
        "images": [{"path": p.relative_to(args.data_dir).as_posix(), "pred": pred}
                   for p, pred in zip(result.paths, predictions, strict=True)],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=1))


if __name__ == "__main__":
    main()
