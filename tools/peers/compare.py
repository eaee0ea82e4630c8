"""Side-by-side table of edgefer and peer libraries from their per-image prediction files.

Every predictor (fer_predict.py, js_predict.js, edgefer_predict.py) writes the same JSON: the
data folder, the glob, one FER2013 class name per image (null where no face was found), and the
mean seconds per image. This scores them all with edgefer's own metrics: a missed face counts as
wrong in ``accuracy`` and in macro-F1 (as an eighth "no face" answer); ``accuracy on found``
covers the images where a face was found. A peer run on a subset of the pictures (``subset``:
1 in K, or a random sample) gets a row of each edgefer run on exactly the same pictures under it.

A prediction file ``edgefer_X.json`` is checked against ``eval_X.json`` (``edgefer eval --json``
on the same data) beside it when there is one: the accuracies must agree.

    python tools/peers/compare.py runs/peers/*.json --markdown runs/peers/table.md
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefer.training import metrics
from edgefer.types import EMOTIONS

NO_FACE = len(EMOTIONS)  # the eighth answer: no face found
SAME_PICTURES = "the same pictures as above"


@dataclass(frozen=True)
class Run:
    source: Path
    peer: str
    version: str
    variant: str
    backend: str
    dataset: tuple[str, str]  # (resolved data folder, glob)
    subset: str | None  # how the pictures were chosen, None for all of them
    seconds_per_image: float
    paths: tuple[str, ...]
    predictions: tuple[str | None, ...]

    @classmethod
    def from_json(cls, path: Path) -> Run:
        data = json.loads(path.read_text())
        images = data["images"]
        every = int(data.get("every", 1))
        subset = data.get("subset") or (f"1 in {every}, in path order" if every > 1 else None)
        return cls(path, data["peer"], str(data["version"]), data["variant"], data["backend"],
                   (str(Path(data["data_dir"]).resolve()), data["glob"]), subset,
                   float(data["seconds_per_image"]), tuple(i["path"] for i in images),
                   tuple(i["pred"] for i in images))


def scores(paths: tuple[str, ...], predictions: tuple[str | None, ...]) -> dict[str, float]:
    """Accuracy (misses wrong), accuracy on found faces, macro-F1 (misses wrong), faces found."""
    y_true = np.array([EMOTIONS.index(p.split("/")[0]) for p in paths])
    y_pred = np.array([NO_FACE if p is None else EMOTIONS.index(p) for p in predictions])
    found = y_pred != NO_FACE
    f1 = metrics.precision_recall_f1(y_true, y_pred, NO_FACE + 1)["macro_f1"]
    return {"n": len(paths), "found": int(found.sum()), "accuracy": metrics.accuracy(y_true, y_pred),
            "accuracy_on_found": metrics.accuracy(y_true[found], y_pred[found]), "macro_f1": f1}


def restrict(run: Run, paths: tuple[str, ...]) -> Run:
    """``run``'s predictions on ``paths`` only (an edgefer run, on a peer's subset)."""
    lookup = dict(zip(run.paths, run.predictions, strict=True))
    missing = [p for p in paths if p not in lookup]
    if missing:
        raise SystemExit(f"{run.source} has no prediction for {missing[0]} (and {len(missing) - 1} more)")
    return Run(run.source, run.peer, run.version, run.variant, run.backend, run.dataset,
               SAME_PICTURES, run.seconds_per_image, paths, tuple(lookup[p] for p in paths))


def check_against_eval(run: Run) -> str | None:
    """A mismatch with ``edgefer eval --json`` on the same data, or None."""
    eval_json = run.source.with_name(run.source.name.replace("edgefer_", "eval_", 1))
    if run.peer != "edgefer" or not eval_json.is_file():
        return None
    expected = json.loads(eval_json.read_text())
    measured = scores(run.paths, run.predictions)
    if expected["n"] != measured["n"] or abs(expected["accuracy"] - measured["accuracy"]) > 1e-9:
        return (f"{run.source.name}: accuracy {measured['accuracy']:.4f} on {measured['n']} images, "
                f"but {eval_json.name} says {expected['accuracy']:.4f} on {expected['n']}")
    return None


def dataset_label(dataset: tuple[str, str]) -> str:
    folder = Path(dataset[0])
    if dataset[1] == "*":
        return folder.name
    return f"{folder.parent.name}/{folder.name} {dataset[1]}"


def row(run: Run, label: str) -> str:
    s = scores(run.paths, run.predictions)
    images = f"{s['n']:,}" if run.subset is None else f"{s['n']:,} ({run.subset})"
    ms = "-" if run.subset == SAME_PICTURES else f"{1000 * run.seconds_per_image:.1f}"
    return (f"| {label} | {run.peer} {run.version} | {run.variant} | {images} | {s['found']:,} | "
            f"{100 * s['accuracy']:.2f}% | {100 * s['accuracy_on_found']:.2f}% | "
            f"{100 * s['macro_f1']:.2f}% | {ms} |")


def table(runs: list[Run]) -> str:
    lines = ["| data | library | how it was run | images | faces found | accuracy (misses wrong) "
             "| accuracy on found faces | macro-F1 | ms per image |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    order = {"edgefer": 0}
    for dataset in sorted({r.dataset for r in runs}):
        here = sorted((r for r in runs if r.dataset == dataset),
                      key=lambda r: (r.subset is not None, order.get(r.peer, 1), r.peer, r.variant))
        label = dataset_label(dataset)
        full = [r for r in here if r.peer == "edgefer" and r.subset is None]
        for run in here:
            lines.append(row(run, label))
            if run.subset is not None:
                lines.extend(row(restrict(e, run.paths), label) for e in full)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", nargs="+", type=Path, help="predictor JSON files")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    runs = [Run.from_json(p) for p in args.predictions if not p.name.startswith("eval_")]
    problems = [m for m in map(check_against_eval, runs) if m]
    text = table(runs)
    sys.stdout.write(text)
    if args.markdown:
        args.markdown.write_text(text)
    if problems:
        sys.exit("\n".join(problems))


if __name__ == "__main__":
    main()
