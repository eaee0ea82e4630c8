"""The frame pipeline: detect -> align -> classify -> track -> smooth -> second opinion -> decide.

``Recognizer.process`` runs one frame synchronously. ``Recognizer.run`` overlaps the stages over
a stream with two worker threads (decode; detect + align) and bounded queues, while the caller's
thread classifies, tracks and smooths. OpenCV, MediaPipe and ONNX Runtime release the GIL in
their native code, so on two cores the classifier hides behind the detector. This module wires
stages only: it parses no arguments and prints nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from edgefer.align import Aligner
from edgefer.backends import ENGINES, PRECISIONS, open_engine
from edgefer.classify import Classifier
from edgefer.decide import decide_labels
from edgefer.detect import DetectorOptions, FaceDetector
from edgefer.errors import ConfigError
from edgefer.llm.config import LlmConfig
from edgefer.manifest import MANIFEST_PATH, ModelEntry, load_model_entry
from edgefer.smooth import Smoother, SmoothingOptions
from edgefer.track import IouTracker, Track, TrackerOptions
from edgefer.types import Faces, Frame, FrameResult

if TYPE_CHECKING:
    from edgefer.llm.stage import LlmStatus, SecondOpinionStage

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RecognizerOptions:
    model: str | None = None  # manifest entry name; None = the manifest's default
    engine: str = "onnxruntime"
    precision: str = "fp16"  # TensorRT plans only
    engine_threads: int = 1
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    tracker: TrackerOptions = field(default_factory=TrackerOptions)
    smoothing: SmoothingOptions = field(default_factory=SmoothingOptions)
    manifest: Path = MANIFEST_PATH
    queue_depth: int = 4
    llm: LlmConfig | None = None  # None: no second opinion, nothing leaves the device

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifest", Path(self.manifest))  # a str from a caller works too
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, "
                              f"got {self.precision!r}")
        for name in ("engine_threads", "queue_depth"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class _Detected:
    frame: Frame
    faces: Faces
    batch: np.ndarray
    valid: np.ndarray
    latency_ms: dict[str, float] = field(default_factory=dict)


class Recognizer:
    """Facial-emotion recognition over frames; a context manager owning detector and engine.

    >>> with Recognizer() as recognizer:                      # doctest: +SKIP
    ...     for result in recognizer.run(open_source("clip.mp4")):
    ...         print(result.frame.index, result.faces.final_labels)
    """

    def __init__(self, options: RecognizerOptions = RecognizerOptions()) -> None:
        self.options = options
        requested = load_model_entry(options.model, options.manifest)
        self.detector = FaceDetector(options.detector)
        self._second_opinion: SecondOpinionStage | None = None
        engine = None
        try:
            engine = open_engine(requested, options.engine, options.engine_threads,
                                 options.precision)
            self.model: ModelEntry = engine.entry or requested  # an int8 entry's float source on GPUs
            self.aligner = Aligner(self.model.input)
            self.classifier = Classifier(engine, self.model.temperature, len(self.model.classes))
            self._tracker = IouTracker(options.tracker)
            self._smoother = Smoother(options.smoothing)
            if options.llm is not None:
                from edgefer.llm.stage import SecondOpinionStage

                self._second_opinion = SecondOpinionStage(options.llm, self.aligner,
                                                           cnn_model=self.model.name)
        except BaseException:  # nothing opened so far stays open
            if engine is not None:
                engine.close()
            self.detector.close()
            raise
        self._last_time_s = 0.0

    # -- one frame -------------------------------------------------------------------------
    def process(self, frame: Frame) -> FrameResult:
        """All stages on one frame, in the caller's thread."""
        return self._finish(self._detect_and_align(frame))

    # -- a stream --------------------------------------------------------------------------
    def run(self, frames: Iterable[Frame]) -> Iterator[FrameResult]:
        """Results for a stream of frames, in order, with decode and detection overlapped."""
        decoded = run_in_thread(_timed_iter(frames), self.options.queue_depth, "edgefer-decode")
        detected = run_in_thread(map(self._detect_timed, decoded), self.options.queue_depth,
                                 "edgefer-detect")
        try:
            for item in detected:
                yield self._finish(item)
        finally:
            detected.close()
            decoded.close()

    def reset(self) -> list[Track]:
        """Start a new stream (next file): end every track and return them."""
        return self._end_stream(park=False)[0]

    def park(self) -> int:
        """End the stream as ``reset`` does, but keep collecting the second opinions asked
        about it; returns the ticket that ``settle``, ``take_events`` and ``release`` take.
        Photos use it: the next photos are read and asked about while earlier answers are on
        their way, so the LLM gets their faces in batches and answers them concurrently."""
        return self._end_stream(park=True)[1]

    def release(self, ticket: int) -> None:
        """Forget a parked stream's second opinions."""
        if self._second_opinion is not None:
            self._second_opinion.release(ticket)

    def _end_stream(self, park: bool) -> tuple[list[Track], int]:
        self._tracker.end_all()
        # the stage moves on first: forgetting the ended tracks then leaves a parked stream's
        # answers alone
        ticket = -1 if self._second_opinion is None else self._second_opinion.new_stream(park)
        return self.pop_ended_tracks(), ticket

    def reserve_track_ids(self, next_id: int) -> None:
        """Number new tracks from ``next_id`` on (a resumed run continues its ids)."""
        self._tracker.reserve_ids(next_id)

    def pop_ended_tracks(self) -> list[Track]:
        ended = self._tracker.pop_ended()
        ids = [t.track_id for t in ended]
        self._smoother.forget(ids)
        if self._second_opinion is not None:
            self._second_opinion.forget(ids)
        return ended

    def wait_for_second_opinions(self, timeout_s: float) -> list[dict]:
        """For offline runs: wait (bounded) for outstanding LLM answers and return the events
        of every answer applied since the last call."""
        if self._second_opinion is None:
            return []
        self._second_opinion.drain(timeout_s, self._last_time_s)
        return self.take_events()

    def settle(self, result: FrameResult, timeout_s: float,
               ticket: int | None = None) -> FrameResult:
        """``result`` with the second opinions asked about its faces merged in, waiting at most
        ``timeout_s`` for them: for a photo, which has no next frame to carry them as a video's
        next frames do. ``ticket`` names a parked stream (``park``); the current one by
        default. Without the LLM, ``result`` as it is."""
        stage = self._second_opinion
        if stage is None:
            return result
        stage.settle(result.faces, result.frame.timestamp_s, timeout_s, ticket)
        decide_labels(result.faces, stage.policy, stage.config.fuse_weight, stage.fusion)
        return result

    def take_events(self, ticket: int | None = None) -> list[dict]:
        """The second opinion's ``llm_answer`` events since the last call, of the current
        stream or a parked one (none without LLM)."""
        return [] if self._second_opinion is None else self._second_opinion.take_events(ticket)

    def llm_status(self) -> LlmStatus | None:
        """Queue length and counters of the second opinion; None when it is off."""
        return None if self._second_opinion is None else self._second_opinion.status()

    def _detect_timed(self, timed: tuple[Frame, float]) -> _Detected:
        frame, decode_ms = timed
        item = self._detect_and_align(frame)
        item.latency_ms["decode"] = decode_ms
        return item

    def _detect_and_align(self, frame: Frame) -> _Detected:
        start = time.perf_counter()
        faces = self.detector.detect(frame)
        detected = time.perf_counter()
        batch, valid = self.aligner.align(frame.image, faces)
        aligned = time.perf_counter()
        return _Detected(frame, faces, batch, valid, {
            "detect": (detected - start) * 1000, "align": (aligned - detected) * 1000})

    def _finish(self, item: _Detected) -> FrameResult:
        start = time.perf_counter()
        faces = item.faces
        keep = item.valid
        if not keep.all():
            log.debug("frame %d: %d faces without usable keypoints dropped", item.frame.index,
                      int((~keep).sum()))
            faces = faces[keep]
        faces.probs[:] = self.classifier.classify(item.batch[keep])
        classified = time.perf_counter()
        self._tracker.update(faces, item.frame.timestamp_s)
        self._smoother.update(faces, item.frame.timestamp_s)
        tracked = time.perf_counter()
        stage = self._second_opinion
        if stage is None:
            decide_labels(faces)
        else:
            stage.update(item.frame, faces)
            decide_labels(faces, stage.policy, stage.config.fuse_weight, stage.fusion)
        done = time.perf_counter()
        self._last_time_s = item.frame.timestamp_s
        latency = {**item.latency_ms, "classify": (classified - start) * 1000,
                   "track": (tracked - classified) * 1000, "second_opinion": (done - tracked) * 1000}
        return FrameResult(item.frame, faces, latency)

    def close(self) -> None:
        if self._second_opinion is not None:
            self._second_opinion.close()
        self.classifier.close()
        self.detector.close()

    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _timed_iter(frames: Iterable[Frame]) -> Iterator[tuple[Frame, float]]:
    """Each frame with the milliseconds spent producing it (decode time for video sources)."""
    iterator = iter(frames)
    while True:
        start = time.perf_counter()
        try:
            frame = next(iterator)
        except StopIteration:
            return
        yield frame, (time.perf_counter() - start) * 1000


_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class run_in_thread(Iterator[T]):
    """Iterate ``items`` in a daemon thread, handing results over a bounded queue.

    Errors raised by the producer re-raise in the consumer; ``close()`` stops the producer at its
    next item, so an abandoned consumer never leaves a thread behind.
    """

    def __init__(self, items: Iterable[T], depth: int, name: str) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _produce(self, items: Iterable[T]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put(_Failure(error))

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self) -> T:
        item = self._queue.get()
        if item is _DONE:
            self._stop.set()
            raise StopIteration
        if isinstance(item, _Failure):
            self._stop.set()
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

