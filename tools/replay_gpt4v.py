"""Replay GPT-4V's recorded zero-shot answers (Lian et al. 2023) as an OpenAI-compatible server.

Each received face image is matched to a dataset image by nearest neighbour on a 16x16
zero-mean, unit-norm grey thumbnail; the server answers with GPT-4V's recorded top-5 ranking
for that image (``{"id": ..., "ranking": [...]}``, mapped to edgefer's names; "contempt" stays
"contempt", which edgefer skips when it turns the ranking into a distribution). Top-2 prompts
("choose A or B") get the offered labels in the order GPT-4V ranked them (an offered label
GPT-4V did not rank comes last). Images it cannot match get an explicit "unknown".

    python tools/replay_gpt4v.py --data ../shared/data --port 8090
    edgefer eval ../shared/data/fer2013/test --glob 'PrivateTest_*' --cascade \\
        --llm-base-url http://127.0.0.1:8090/v1 --llm-model gpt4v-replay
"""

from __future__ import annotations

import argparse
import csv
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from edgefer.types import canonical_label
from tools.openai_stub import FaceRequest, StubServer, StubState

THUMB = 16
MATCH_MAX_DISTANCE = 0.1  # unit-vector distance: dataset images re-encoded match below 0.03, others above 0.5


def thumbnail(gray: np.ndarray) -> np.ndarray:
    import cv2

    small = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    return small / (np.linalg.norm(small) + 1e-6)


@dataclass
class ReplayIndex:
    vectors: np.ndarray
    rankings: list[list[str]]

    def match(self, jpeg: bytes) -> list[str] | None:
        import cv2

        gray = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            return None
        distances = np.linalg.norm(self.vectors - thumbnail(gray), axis=1)
        best = int(distances.argmin())
        return self.rankings[best] if distances[best] <= MATCH_MAX_DISTANCE else None


def _label(name: str) -> str:
    return canonical_label(name) or name.strip().lower()


def load_index(data: Path) -> ReplayIndex:
    """GPT-4V rankings for the FERPlus (FER2013 PrivateTest) and CK+ images found under ``data``."""
    import cv2

    answers = data / "gpt4v_emotion_lian2023"
    paths: list[Path] = []
    rankings: list[list[str]] = []
    names_to_paths = {}
    with (data / "ferplus" / "ferplus_labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            names_to_paths[row["ferplus_image_name"]] = data / "fer2013" / row["path"]
    ck_files = {p.name: p for p in (data / "ckplus48").rglob("*.png")}
    for file, lookup in (("ferplus_label-gpt4v.csv", names_to_paths),
                         ("ckplus_label-gpt4v.csv", ck_files)):
        with (answers / file).open(newline="") as handle:
            for row in csv.DictReader(handle):
                path = lookup.get(row["name"])
                if path is not None and path.is_file():
                    paths.append(path)
                    rankings.append([_label(x) for x in row["gpt4v"].split(",")])
    vectors = np.stack([thumbnail(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)) for p in paths])
    return ReplayIndex(vectors, rankings)


def replay_answer(index: ReplayIndex):
    def answer(face: FaceRequest) -> str | list[str]:
        ranking = index.match(face.jpeg)
        if ranking is None:
            return "unknown"
        if face.options:
            ranked = [label for label in ranking if label in face.options]
            return ranked + [x for x in face.options if x not in ranked] if ranked else "unknown"
        return ranking

    return answer


def replay_server(data: Path, port: int = 0) -> StubServer:
    return StubServer(StubState(answer=replay_answer(load_index(data))), port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    with replay_server(args.data, args.port) as server:
        print(f"GPT-4V replay on {server.base_url}; Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
