"""``SecondOpinionStage``'s rules (when to ask, how long an answer holds) with a fake worker.

The worker's network side is tested against a real HTTP server in test_llm_client.py and
test_cascade.py; here a fake that answers on demand makes the stage's timing rules exact.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from edgefer.align import Aligner
from edgefer.llm.client import LlmStats
from edgefer.llm.config import LlmConfig
from edgefer.llm.parse import Answer
from edgefer.llm.prompt import FaceQuery
from edgefer.llm.stage import SecondOpinionStage
from edgefer.llm.worker import Result
from edgefer.manifest import load_model_entry
from edgefer.types import EMOTIONS, Faces, Frame

HAPPY, SAD = EMOTIONS.index("happy"), EMOTIONS.index("sad")
UNSURE = [0, 0, 0, 0.4, 0.35, 0.25, 0]  # happy 0.4 < threshold 0.5
SURE = [0, 0, 0, 0.9, 0.1, 0, 0]


class FakeWorker:
    """Records questions; answers them only when the test says so."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []
        self.ready: list[Result] = []
        self.stats = LlmStats()

    def submit(self, query: FaceQuery, priority: float, meta: dict[str, Any]) -> bool:
        self.asked.append(meta)
        return True

    def answer(self, label: str, confidence: float = 0.8) -> None:
        """The latest question gets its answer."""
        self.ready.append(Result(self.asked[-1], Answer(label, confidence), 1.0))

    def poll(self) -> list[Result]:
        ready, self.ready = self.ready, []
        return ready

    def queued(self) -> int:
        return 0

    def drain(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def aligner() -> Aligner:
    return Aligner(load_model_entry().input)


def make_stage(aligner: Aligner, **config: Any) -> tuple[SecondOpinionStage, FakeWorker]:
    worker = FakeWorker()
    settings = {"model": "fake", "base_url": "http://127.0.0.1:9", "threshold": 0.5,
                "cooldown_s": 5.0, "answer_ttl_s": 10.0, "top2": False, **config}
    return SecondOpinionStage(LlmConfig(**settings), aligner, worker), worker


def one_face(label: int, probs: list[float] = UNSURE) -> Faces:
    """One face of track 1 whose smoothed label is ``label``."""
    keypoints = np.array([[[80, 90], [120, 90], [100, 110], [100, 130], [60, 95], [140, 95]]])
    return Faces(np.array([[50, 50, 150, 160]]), np.ones(1), keypoints, probs=np.array([probs]),
                 track_ids=np.array([1]), smoothed_probs=np.array([probs]),
                 smoothed_labels=np.array([label]))


def step(stage: SecondOpinionStage, time_s: float, label: int, probs: list[float] = UNSURE) -> Faces:
    """One frame with ``one_face``."""
    image = np.full((200, 200, 3), 128, np.uint8)
    return stage.update(Frame(round(time_s * 30), time_s, image), one_face(label, probs))


def test_a_confident_face_is_not_asked(aligner):
    stage, worker = make_stage(aligner)
    step(stage, 0.0, HAPPY, SURE)
    assert worker.asked == []


def test_cooldown_holds_an_unchanged_label(aligner):
    stage, worker = make_stage(aligner, cooldown_s=5.0)
    for time_s in (0.0, 1.0, 4.9):
        step(stage, time_s, HAPPY)
    assert [m["time_s"] for m in worker.asked] == [0.0]
    step(stage, 5.0, HAPPY)  # cooled down: asked again
    assert [m["time_s"] for m in worker.asked] == [0.0, 5.0]
    assert {m["cnn_label"] for m in worker.asked} == {"happy"}


def test_a_changed_label_is_asked_at_once(aligner):
    stage, worker = make_stage(aligner, cooldown_s=5.0)
    step(stage, 0.0, HAPPY)
    step(stage, 0.5, SAD)
    step(stage, 0.6, SAD)  # the new label is now within its own cooldown
    assert [(m["time_s"], m["cnn_label"]) for m in worker.asked] == [(0.0, "happy"), (0.5, "sad")]


def test_an_answer_holds_for_its_lifetime_only(aligner):
    stage, worker = make_stage(aligner, answer_ttl_s=10.0, cooldown_s=100.0)
    step(stage, 0.0, HAPPY)
    worker.answer("surprise")
    applied = step(stage, 1.0, HAPPY)  # collected at 1.0 s
    assert EMOTIONS[applied.llm_labels[0]] == "surprise"
    assert np.isclose(applied.llm_probs[0].sum(), 1.0)
    assert step(stage, 11.0, HAPPY).llm_labels[0] == EMOTIONS.index("surprise")  # 10 s old
    expired = step(stage, 11.1, HAPPY)
    assert expired.llm_labels[0] == -1 and np.isnan(expired.llm_probs[0]).all()


def test_an_answer_stops_applying_when_the_label_changes(aligner):
    stage, worker = make_stage(aligner, cooldown_s=100.0)
    step(stage, 0.0, HAPPY)
    worker.answer("surprise")
    assert step(stage, 0.1, HAPPY).llm_labels[0] >= 0
    assert step(stage, 0.2, SAD).llm_labels[0] == -1  # asked about "happy", not about "sad"
    assert worker.asked[-1]["cnn_label"] == "sad"  # and the new label is asked about


def test_answers_for_a_previous_stream_are_ignored(aligner):
    stage, worker = make_stage(aligner)
    step(stage, 0.0, HAPPY)
    worker.answer("surprise")
    stage.new_stream()
    assert step(stage, 0.1, HAPPY).llm_labels[0] == -1
    assert stage.take_events() == []


def test_a_parked_stream_keeps_its_answers_and_events(aligner):
    """A photo's stream, parked while the next photo is asked about, still gets its answer
    (the next photo's track 1 does not), and ``settle`` merges it later."""
    stage, worker = make_stage(aligner)
    step(stage, 0.0, HAPPY)
    parked = stage.new_stream(park=True)
    worker.answer("surprise")
    assert step(stage, 0.0, HAPPY).llm_labels[0] == -1  # the next photo's own question waits
    faces = one_face(HAPPY)
    stage.settle(faces, 0.0, timeout_s=5.0, stream=parked)
    assert faces.llm_labels[0] == EMOTIONS.index("surprise")
    assert [e["llm_label"] for e in stage.take_events(parked)] == ["surprise"]
    assert stage.take_events() == []  # the current stream's events are its own
    stage.release(parked)
    worker.answer("sad")  # the current stream's question
    faces = one_face(HAPPY)
    stage.settle(faces, 0.0, timeout_s=5.0)
    assert faces.llm_labels[0] == SAD


def test_settle_waits_no_longer_than_told(aligner):
    stage, _ = make_stage(aligner)
    step(stage, 0.0, HAPPY)
    faces = one_face(HAPPY)
    start = time.monotonic()
    stage.settle(faces, 0.0, timeout_s=0.2)
    assert 0.2 <= time.monotonic() - start < 2.0 and faces.llm_labels[0] == -1


def test_each_applied_answer_is_one_event(aligner):
    stage, worker = make_stage(aligner)
    step(stage, 0.0, HAPPY)
    worker.answer("surprise", 0.7)
    step(stage, 0.5, HAPPY)
    events = stage.take_events()
    assert [(e["event"], e["track_id"], e["llm_label"], e["cnn_label"]) for e in events] == \
        [("llm_answer", 1, "surprise", "happy")]
    assert stage.take_events() == []


def test_a_learned_policy_that_asks_about_nothing_runs_no_model_per_face(aligner, tmp_path,
                                                                         monkeypatch):
    from edgefer.llm.fusion import FusionModel

    classes = len(EMOTIONS)
    identity = np.vstack([np.zeros(classes), np.eye(classes)])
    never = FusionModel(identity, np.vstack([identity, np.zeros((classes, classes))]),
                        np.full((classes, classes + 1), 1 / (classes + 1)), np.eye(classes),
                        float("inf"))
    never.save(tmp_path / "fusion.json")

    def refuse(*_: Any) -> np.ndarray:
        raise AssertionError("expected_benefit ran for a policy that never asks")

    monkeypatch.setattr(FusionModel, "expected_benefit", refuse)
    stage, worker = make_stage(aligner, policy="learned", fusion_path=str(tmp_path / "fusion.json"))
    assert stage.policy == "learned" and not stage.fusion.asks
    for time_s in (0.0, 1.0, 10.0):
        step(stage, time_s, HAPPY)
    assert worker.asked == []
