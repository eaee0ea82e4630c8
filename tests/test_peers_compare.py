"""tools/peers/compare.py: how peer prediction files are scored side by side with edgefer's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.peers.compare import Run, scores, table

REPO = Path(__file__).resolve().parents[1]


def write_run(path: Path, peer: str, images: dict[str, str | None], every: int = 1) -> Path:
    path.write_text(json.dumps({
        "peer": peer, "version": "1", "variant": "v", "backend": "b", "data_dir": str(path.parent),
        "glob": "*", "every": every, "seconds_per_image": 0.01,
        "images": [{"path": p, "pred": pred} for p, pred in images.items()]}))
    return path


@pytest.mark.parametrize(("predictions", "expected"), [
    # all right
    (("happy", "sad", "sad", "angry"),
     {"found": 4, "accuracy": 1.0, "accuracy_on_found": 1.0, "macro_f1": 1.0}),
    # a miss is wrong overall and in macro-F1 (happy's recall 0), absent from the found-face accuracy
    ((None, "sad", "sad", "angry"),
     {"found": 3, "accuracy": 0.75, "accuracy_on_found": 1.0, "macro_f1": 2 / 3}),
    # a wrong label is wrong in both
    (("neutral", "sad", None, "angry"), {"found": 3, "accuracy": 0.5, "accuracy_on_found": 2 / 3}),
])
def test_scores_count_misses_as_wrong(predictions, expected):
    paths = ("happy/a.png", "sad/b.png", "sad/c.png", "angry/d.png")
    result = scores(paths, predictions)
    assert {key: result[key] for key in expected} == pytest.approx(expected)
    assert result["n"] == 4


def test_subset_peer_gets_edgefer_row_on_the_same_images(tmp_path):
    edgefer = write_run(tmp_path / "edgefer_crops_x.json", "edgefer",
                        {"happy/a.png": "happy", "sad/b.png": "angry", "sad/c.png": "sad"})
    peer = write_run(tmp_path / "peer_x.json", "peer", {"happy/a.png": None, "sad/c.png": "sad"},
                     every=2)
    lines = table([Run.from_json(edgefer), Run.from_json(peer)]).splitlines()
    # header, rule, edgefer on all 3, the peer on 2, edgefer on those same 2
    assert len(lines) == 5
    assert "| 3 | 3 | 66.67% |" in lines[2]
    assert "(1 in 2, in path order)" in lines[3] and "| 1 | 50.00% | 100.00% |" in lines[3]
    assert "(the same pictures as above) | 2 | 100.00% |" in lines[4]


def test_mismatch_with_edgefer_eval_fails(tmp_path):
    write_run(tmp_path / "edgefer_crops_x.json", "edgefer", {"happy/a.png": "happy", "sad/b.png": "sad"})
    (tmp_path / "eval_crops_x.json").write_text(json.dumps({"n": 2, "accuracy": 0.5}))
    done = subprocess.run([sys.executable, "tools/peers/compare.py", *map(str, tmp_path.glob("*.json"))],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0
    assert "eval_crops_x.json says 0.5000" in done.stderr
