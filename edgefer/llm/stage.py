"""The second-opinion pipeline stage: decide which faces to ask about, merge answers back.

A face is uncertain when its calibrated confidence is below ``threshold`` (or its top-2 margin
below ``margin``). Each track is asked at most once per ``cooldown_s``, and again as soon as its
smoothed label changes. An answer applies to its track until the label changes or
``answer_ttl_s`` passes: the stage fills ``Faces.llm_labels`` and ``Faces.llm_probs`` for those
faces (the answer's distribution), and ``edgefer.decide.decide_labels`` merges them with the
CNN's label. Policies: ``override`` (the LLM label replaces the CNN's), ``fuse`` (a weighted mix
of the CNN's probabilities and the LLM's answer distribution) and ``learned`` (the fusion model
fitted by ``edgefer llm calibrate`` for this LLM model and prompt: faces are asked about where it
expects the answer to improve the decision, and ``decide_labels`` fuses answers by it and
recalibrates the CNN's label of faces without one). Without a fitted model, ``learned`` falls
back to ``override`` and says so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgefer.align import Aligner
from edgefer.images import encode_jpeg, shrink_to
from edgefer.llm.cache import cache_key
from edgefer.llm.client import LlmStats
from edgefer.llm.config import LlmConfig
from edgefer.llm.constants import CONTEXT_SIZE, CROP_SIZE, JPEG_QUALITY
from edgefer.llm.fusion import FusionModel, load_for
from edgefer.llm.parse import Answer
from edgefer.llm.prompt import FaceQuery
from edgefer.llm.worker import Result, SecondOpinion
from edgefer.types import EMOTIONS, Faces, Frame, label_name

log = logging.getLogger(__name__)


@dataclass
class _TrackState:
    asked_at_s: float = -np.inf
    asked_label: str = ""
    answer: Answer | None = None
    answer_label: str = ""  # the CNN label the answer was given for
    answered_at_s: float = -np.inf


@dataclass
class _Stream:
    """One file's or stream's second opinions: per-track state, questions not yet answered,
    and the answers applied, as events."""

    tracks: dict[int, _TrackState] = field(default_factory=dict)
    unanswered: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


def resolve_policy(config: LlmConfig, cnn_model: str | None = None
                   ) -> tuple[str, FusionModel | None, str]:
    """(policy in use, fusion model, one line saying which and why). A learned policy fitted
    on another CNN model is not used: its recalibration and fusion read that model's
    probabilities."""
    if config.policy != "learned":
        return config.policy, None, f"LLM policy: {config.policy}"
    fusion, path = load_for(config.model, config.prompt, config.fusion_path)
    if fusion is None:
        return "override", None, (f"LLM policy: override (no learned policy for {config.model}, "
                                  f"{config.prompt} prompt at {path}; run `edgefer llm calibrate`)")
    fitted_on = fusion.provenance.get("cnn_model")
    if cnn_model and fitted_on and fitted_on != cnn_model:
        return "override", None, (f"LLM policy: override (the learned policy {path} was fitted "
                                  f"with the CNN model {fitted_on}, this run uses {cnn_model}; "
                                  f"run `edgefer llm calibrate --model {cnn_model}`)")
    note = f"LLM policy: learned ({path}, fitted {fusion.provenance.get('date', '?')})"
    if not fusion.asks:
        note += ("; it asks about no faces: asking did not beat the CNN out of fold on the "
                 "calibration data")
    return "learned", fusion, note


def is_uncertain(probs: np.ndarray, threshold: float, margin: float) -> bool:
    top2 = np.sort(probs)[-2:]
    return bool(top2[1] < threshold or (margin > 0 and top2[1] - top2[0] < margin))


class Worker(Protocol):
    """What the stage needs from ``SecondOpinion`` (unit tests pass a fake)."""

    stats: LlmStats

    def submit(self, query: FaceQuery, priority: float, meta: dict[str, Any]) -> bool: ...
    def poll(self) -> list[Result]: ...
    def queued(self) -> int: ...
    def drain(self, timeout_s: float) -> bool: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class LlmStatus:
    """The second opinion's gauges for dashboards: requests waiting, and the worker's counters."""

    queued: int
    stats: dict[str, Any]


class SecondOpinionStage:
    """``update(frame, faces)`` after smoothing; fills ``llm_labels`` and ``llm_probs``.

    ``policy`` and ``fusion`` are the policy in use and its fitted model (``learned`` only), for
    ``decide_labels``."""

    def __init__(self, config: LlmConfig, aligner: Aligner, worker: Worker | None = None,
                 cnn_model: str | None = None) -> None:
        self.config = config
        self.aligner = aligner
        self.policy, self.fusion, self.policy_note = resolve_policy(config, cnn_model)
        if config.policy == "learned":  # say which policy is in use: the fitted one, or not
            log.warning(self.policy_note)
        self._worker: Worker = worker or SecondOpinion(config)
        self.stream = 0  # the current stream's number; answers for an ended one are ignored...
        self._streams: dict[int, _Stream] = {0: _Stream()}  # ...unless it was kept (``park``)

    @property
    def tracks(self) -> dict[int, _TrackState]:
        """The current stream's per-track state."""
        return self._streams[self.stream].tracks

    def update(self, frame: Frame, faces: Faces) -> Faces:
        self.collect(frame.timestamp_s)
        for row in range(len(faces)):
            self._maybe_ask(frame, faces, row)
        self.merge_into(faces, frame.timestamp_s)
        return faces

    def collect(self, now_s: float) -> None:
        """Apply every answer that arrived; each one becomes an event of its stream."""
        for result in self._worker.poll():
            meta = result.meta
            stream = self._streams.get(meta["stream"])
            if stream is None:
                continue
            stream.unanswered -= 1
            if result.answer is None:
                continue
            state = stream.tracks.setdefault(meta["track_id"], _TrackState())
            state.answer = result.answer
            state.answer_label = meta["cnn_label"]
            state.answered_at_s = now_s
            stream.events.append({"event": "llm_answer", "track_id": meta["track_id"],
                                  "time_s": round(now_s, 3), "asked_at_s": meta["time_s"],
                                  "cnn_label": meta["cnn_label"], "llm_label": result.answer.label,
                                  "llm_confidence": result.answer.confidence,
                                  "latency_s": round(result.latency_s, 3)})

    def take_events(self, stream: int | None = None) -> list[dict[str, Any]]:
        """The ``llm_answer`` events of ``stream`` (the current one by default) since the last
        call."""
        record = self._streams[self.stream if stream is None else stream]
        events, record.events = record.events, []
        return events

    def drain(self, timeout_s: float, now_s: float) -> None:
        """Wait (bounded) for every outstanding answer, then apply them as of ``now_s``."""
        self._worker.drain(timeout_s)
        self.collect(now_s)

    def settle(self, faces: Faces, now_s: float, timeout_s: float,
               stream: int | None = None) -> None:
        """Wait (bounded) for the answers to the questions asked in ``stream`` (the current one
        by default), then merge them into ``faces`` as of ``now_s``. Other streams' questions
        are not waited for."""
        record = self._streams[self.stream if stream is None else stream]
        deadline = time.monotonic() + timeout_s
        self.collect(now_s)
        while record.unanswered > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
            self.collect(now_s)
        self._merge(record, faces, now_s)

    def status(self) -> LlmStatus:
        return LlmStatus(self._worker.queued(), self._worker.stats.to_dict())

    def _maybe_ask(self, frame: Frame, faces: Faces, row: int) -> None:
        track_id = int(faces.track_ids[row])
        cnn_label = int(faces.cnn_labels[row])
        if cnn_label < 0:
            return
        label = label_name(cnn_label)
        state = self.tracks.get(track_id)
        cooling = state is not None and state.asked_label == label \
            and frame.timestamp_s - state.asked_at_s < self.config.cooldown_s
        if cooling:  # checked first: most faces on most frames stop here, before any model runs
            return
        priority = self._priority(faces.probs[row])
        if priority is None:
            return
        state = self.tracks.setdefault(track_id, _TrackState())
        state.asked_at_s, state.asked_label = frame.timestamp_s, label
        if self._worker.submit(self._query(frame, faces, row), priority,
                               {"track_id": track_id, "cnn_label": label, "stream": self.stream,
                                "time_s": round(frame.timestamp_s, 3), "frame": frame.index}):
            self._streams[self.stream].unanswered += 1

    def _priority(self, probs: np.ndarray) -> float | None:
        """Queue priority (lower is asked first), or None when this face is not worth asking:
        the learned policy ranks by expected benefit, the others by confidence."""
        if self.fusion is not None:
            if not self.fusion.asks:  # no face is ever worth asking: no model runs per face
                return None
            benefit = float(self.fusion.expected_benefit(probs)[0])
            return -benefit if benefit > self.fusion.benefit_threshold else None
        if not is_uncertain(probs, self.config.threshold, self.config.margin):
            return None
        return float(probs.max())

    def _query(self, frame: Frame, faces: Faces, row: int) -> FaceQuery:
        crop = self.aligner.crops(frame.image, faces[row], size=CROP_SIZE, color="bgr")[0]
        jpeg = encode_jpeg(crop, JPEG_QUALITY)
        options = None
        if self.config.top2:
            best = np.argsort(faces.probs[row])[::-1][:2]
            options = (EMOTIONS[best[0]], EMOTIONS[best[1]])
        context = encode_jpeg(shrink_to(frame.image, CONTEXT_SIZE), JPEG_QUALITY) \
            if self.config.context_frame else None
        face_id = f"s{self.stream}_f{frame.index}_t{int(faces.track_ids[row])}"  # unique in a run
        return FaceQuery(face_id, jpeg,
                         cache_key(jpeg, self.config, options, context), options, context)

    def merge_into(self, faces: Faces, now_s: float) -> None:
        """Attach each track's answer while it is fresh and the CNN label it was given for holds."""
        self._merge(self._streams[self.stream], faces, now_s)

    def _merge(self, stream: _Stream, faces: Faces, now_s: float) -> None:
        cnn_labels = faces.cnn_labels
        for row in range(len(faces)):
            state = stream.tracks.get(int(faces.track_ids[row]))
            if state is None or state.answer is None or cnn_labels[row] < 0:
                continue
            fresh = now_s - state.answered_at_s <= self.config.answer_ttl_s
            if fresh and state.answer_label == label_name(int(cnn_labels[row])):
                faces.llm_labels[row] = EMOTIONS.index(state.answer.label)
                faces.llm_probs[row] = state.answer.distribution()

    def new_stream(self, park: bool = False) -> int:
        """Start the next stream (track ids restart with the next file) and return the number
        of the one that ended. Its state is forgotten, unless ``park``: then its answers keep
        being collected until ``release``, so that a photo's row can wait for them while the
        next photos are read and asked about."""
        ended = self.stream
        if not park:
            del self._streams[ended]
        self.stream += 1
        self._streams[self.stream] = _Stream()
        return ended

    def release(self, stream: int) -> None:
        """Forget a parked stream."""
        self._streams.pop(stream, None)

    def forget(self, track_ids: list[int]) -> None:
        for track_id in track_ids:
            self.tracks.pop(track_id, None)

    def close(self) -> None:
        self._worker.close()
