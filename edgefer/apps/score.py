"""Offline scoring: files, folders and streams in; per-face rows, summaries and videos out.

``score`` drives a ``Recognizer`` over each input, writes rows as they are produced, and reports
progress to an observer. A bad input is reported and skipped; the other inputs complete.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgefer.annotate import draw_faces
from edgefer.apps.resume import (
    RESUMABLE,
    ResumeState,
    prepare_resume,
    progress_path,
    record_completed,
)
from edgefer.apps.summary import Summary
from edgefer.errors import EdgeferError, InputError
from edgefer.files import atomic_write, write_json_atomic
from edgefer.images import encode_jpeg
from edgefer.llm.client import why_unanswered
from edgefer.llm.worker import MAX_IN_FLIGHT
from edgefer.manifest import load_model_entry
from edgefer.pipeline import Recognizer, RecognizerOptions
from edgefer.sinks import (
    ROW_COLUMNS,
    TABLE_SUFFIXES,
    WRITABLE_VIDEO_SUFFIXES,
    TableSink,
    VideoSink,
    check_output,
    face_rows,
)
from edgefer.sources import (
    SEQUENCE_FPS,
    Source,
    expand_inputs,
    is_image,
    is_stream,
    open_source,
    redact,
)
from edgefer.types import FrameResult

log = logging.getLogger(__name__)

ANNOTATED_JPEG_QUALITY = 95  # OpenCV's default, as annotated photos were always saved
ANNOTATED_PHOTO_WINDOW = 8  # photos held while their answers come, when their pixels are kept too


@dataclass(frozen=True)
class ScoreOptions:
    output: Path
    overwrite: bool = False
    annotate: Path | None = None
    summary: Path | None = None
    plot: Path | None = None
    stride: int = 1
    max_fps: float | None = None
    llm_wait_s: float = 30.0  # at the end of each input, wait this long for outstanding answers
    resume: bool = False  # continue an interrupted run into the same table
    sequences: bool = False  # a folder is one video of its images, not a set of photos
    sequence_fps: float = SEQUENCE_FPS  # that video's frame rate
    # With the LLM, how many photos wait for their answers at once (None: enough to fill the
    # LLM's concurrent batches, fewer when annotating; 1: one photo per round trip)
    photo_window: int | None = None
    recognizer: RecognizerOptions = field(default_factory=RecognizerOptions)

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise InputError(f"--stride must be >= 1, got {self.stride}")
        for flag, rate in (("--max-fps", self.max_fps), ("--sequence-fps", self.sequence_fps)):
            if rate is not None and not 0 < rate < math.inf:  # nan and inf too
                raise InputError(f"{flag} must be > 0 and finite, got {rate}")
        if not self.llm_wait_s >= 0:
            raise InputError(f"--llm-wait must be >= 0, got {self.llm_wait_s}")
        if self.photo_window is not None and self.photo_window < 1:
            raise InputError(f"photo_window must be >= 1, got {self.photo_window}")
        if self.resume and self.annotate is not None:  # its frames before the stop are not kept
            raise InputError("--resume cannot continue an annotated copy (--annotate): resume "
                             "without --annotate to complete the table, or rerun with --overwrite "
                             "instead of --resume to score and annotate every input again")


def run_settings(options: ScoreOptions) -> dict[str, Any]:
    """What decides the rows; rows scored with other settings must not be mixed in (a resumed
    table, a ``score --ray`` dataset). The model is named as the manifest resolves it, so that
    leaving ``--model`` out and naming the default model are the same run."""
    recognizer = options.recognizer
    model = load_model_entry(recognizer.model, recognizer.manifest).name
    settings = {"columns": list(ROW_COLUMNS), "stride": options.stride, "max_fps": options.max_fps,
                "model": model, "engine": recognizer.engine,
                "precision": recognizer.precision, "detector": asdict(recognizer.detector),
                "tracker": asdict(recognizer.tracker), "smoothing": asdict(recognizer.smoothing),
                "llm": recognizer.llm is not None}
    if options.sequences:  # a sequence's frame rate sets its rows' times
        settings["sequence_fps"] = options.sequence_fps
    return json.loads(json.dumps(settings, default=str))


@dataclass
class FileReport:
    name: str
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    error: str | None = None
    warning: str | None = None  # scored, but damaged: truncated, frames that could not be read
    exception: EdgeferError | None = None
    dominant: str | None = None  # the most frequent final label over all faces
    annotated: Path | None = None  # the annotated copy written (--annotate)


class ScoreObserver(Protocol):
    def file_started(self, name: str, total_frames: int | None) -> None: ...

    def frame_done(self, name: str, result: FrameResult) -> None: ...

    def file_done(self, report: FileReport) -> None: ...


class _NullObserver:
    def file_started(self, name: str, total_frames: int | None) -> None:
        pass

    def frame_done(self, name: str, result: FrameResult) -> None:
        pass

    def file_done(self, report: FileReport) -> None:
        pass


def check_outputs(options: ScoreOptions) -> None:
    """Fail before any work if an output path is unusable (resumed runs reuse theirs)."""
    overwrite = options.overwrite or options.resume
    if not options.resume:
        check_output(options.output, overwrite, TABLE_SUFFIXES, "--output")
    for flag, path, suffixes in (("--annotate", options.annotate, WRITABLE_VIDEO_SUFFIXES),
                                 ("--summary", options.summary, (".json",)),
                                 ("--plot", options.plot, (".png", ".svg", ".pdf"))):
        if path is not None:
            check_output(path, overwrite, suffixes, flag)


def annotate_paths(base: Path, items: list[str]) -> dict[str, Path]:
    """One annotated output per input: ``base`` itself for a lone video, else
    ``base_<name>``, where ``<name>`` is the input's stem, or as much of its path as tells it
    apart from the other inputs' (``day1_clip``, ``day2_clip``; numbered where even the
    whole paths read alike), so that no input's copy replaces another's."""
    items = list(dict.fromkeys(items))  # an input given twice has one copy
    if len(items) == 1 and not is_image(items[0]):
        return {items[0]: base}
    depth = dict.fromkeys(items, 1)
    while True:
        names = {item: _path_tail(item, depth[item]) + (".jpg" if is_image(item) else base.suffix)
                 for item in items}
        taken = Counter(name.lower() for name in names.values())
        longer = [item for item in items if taken[names[item].lower()] > 1
                  and depth[item] < len(_path_parts(item))]
        if not longer:
            break
        for item in longer:
            depth[item] += 1
    used: set[str] = set()
    paths = {}
    for item in items:
        name, count, unique = Path(names[item]), 1, names[item]
        while unique.lower() in used:  # even whole paths read alike: number them
            count += 1
            unique = f"{name.stem}-{count}{name.suffix}"
        used.add(unique.lower())
        paths[item] = base.with_name(f"{base.stem}_{unique}")
    return paths


def _path_parts(item: str) -> list[str]:
    path = Path(item)
    return [part for part in path.with_name(path.stem).parts if part != path.anchor]


def _path_tail(item: str, depth: int) -> str:
    return "_".join(_path_parts(item)[-depth:])


def score(inputs: list[str], options: ScoreOptions,
          observer: ScoreObserver | None = None) -> list[FileReport]:
    """Score every input; returns one report per input (failed ones carry ``error``).

    With a single input, a failure raises instead, and no output file is created.
    """
    check_outputs(options)
    items = expand_inputs(inputs, options.sequences)
    if not items:
        raise InputError(f"no images or videos found in {', '.join(inputs)}")
    run = _ScoreRun(items, options, observer or _NullObserver())
    with Recognizer(options.recognizer) as recognizer, run.table:
        run.score_all(recognizer)
        llm = recognizer.llm_status()
        run.summary.model = recognizer.model.name
    run.write_summary(llm.stats if llm is not None else None)
    return run.reports


class _ScoreRun:
    """One ``score`` call's state: the table and its record of completed inputs (for
    ``--resume``), the summary, and the reports, in the order inputs finish."""

    def __init__(self, items: list[str], options: ScoreOptions, observer: ScoreObserver) -> None:
        self.items = items
        self.options = options
        self.observer = observer
        # what rows, the record and reports call each input: a stream's credentials stay out
        self.names = {item: redact(item) for item in items}
        self.resumable = options.output.suffix.lower() in RESUMABLE
        self.settings = run_settings(options) if self.resumable else {}
        self.resume = prepare_resume(options.output, self.settings, list(self.names.values())) \
            if options.resume else ResumeState()
        self.summary = Summary(keep_timeline=options.plot is not None,
                               smoothing=options.recognizer.smoothing)
        self.summary.add_rows(self.resume.rows)
        self.reports: list[FileReport] = []
        self.completed = sorted(self.resume.completed)  # every input in the table, this run's or not
        self.partial = dict(self.resume.start_frame)  # inputs with rows up to a frame, continued
        # recorded as soon as the table exists, so that a run stopped in its first input also
        # leaves the settings a resume is checked against
        self.table = LazyTable(options.output, options.overwrite, append=options.resume,
                               on_open=self.record)
        self.annotated = annotate_paths(options.annotate, items) \
            if options.annotate is not None else {}

    def record(self) -> None:
        """The progress record beside the table: what a ``--resume`` skips and continues."""
        if self.resumable:
            record_completed(self.options.output, self.completed,
                             self.settings if self.resume.settings_known else None, self.partial)

    def score_all(self, recognizer: Recognizer) -> None:
        """Every input not yet in the table, photos in batches, videos and streams one by one."""
        photos = _PhotoWindow(recognizer, self.table, self.summary, self.options, self.observer,
                              self.annotated)
        # the input a run stopped in goes first, so that its rows continue the table's tail
        stopped_in = self.resume.start_frame
        for item in sorted(self.items, key=lambda item: self.names[item] not in stopped_in):
            name = self.names[item]
            if name in self.resume.completed:
                continue
            recognizer.reserve_track_ids(self.resume.next_track_id.get(name, 1))
            start_frame = self.resume.start_frame.get(name, 0)
            if photos.takes(item, start_frame):
                self.finish(photos.add(item))
                continue
            self.finish(photos.flush())
            self.finish([score_file(name, recognizer, self.table, self.summary, self.options,
                                    self.observer, self.annotated.get(item), start_frame,
                                    read_from=item)])
        self.finish(photos.flush())

    def finish(self, done: list[FileReport]) -> None:
        """Report finished inputs. A lone input's failure is the command's error, leaving no
        table; otherwise a failed input stays out of the record, so a resume tries it again."""
        for report in done:
            if report.exception is not None and len(self.items) == 1:
                self.table.discard()
                raise report.exception  # said once, as the command's error
            report.dominant = self.summary.dominant(report.name)
            self.reports.append(report)
            self.observer.file_done(report)
            if report.error is None:  # a failed input is tried again by a resume
                self.completed.append(report.name)
                self.partial.pop(report.name, None)
            if self.table.sink is not None:  # no table, no record beside it
                self.record()

    def write_summary(self, llm_stats: dict[str, Any] | None) -> None:
        """The ``--summary`` and ``--plot`` files, and a warning if the LLM answered nothing."""
        if llm_stats is not None:
            self.summary.llm_stats = llm_stats
            warn_if_unanswered(llm_stats)
        if self.options.summary:
            write_json_atomic(self.options.summary, self.summary.to_dict())
        if self.options.plot and not self.summary.plot(self.options.plot):
            log.warning("no chart written to %s: --plot draws emotions over a video's time, "
                        "and no video with a face was scored", self.options.plot)


class LazyTable:
    """Opens the table sink when the first input has opened, so a lone bad input leaves no file."""

    def __init__(self, path: Path, overwrite: bool = False, append: bool = False,
                 on_open: Callable[[], None] | None = None) -> None:
        self.path = path
        self.overwrite = overwrite
        self.append = append
        self.on_open = on_open  # called once, when the file has been opened
        self.sink: TableSink | None = None

    def open(self) -> TableSink:
        if self.sink is None:
            self.sink = TableSink(self.path, self.overwrite, append=self.append)
            if self.on_open is not None:
                self.on_open()
        return self.sink

    def __enter__(self) -> LazyTable:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sink is not None:
            self.sink.close()

    def discard(self) -> None:
        """Remove the table this run created, and its record (a lone input that opened but
        failed: the command fails as if it had never begun); a continued table stays."""
        if self.sink is not None and not self.append:
            self.sink.close()
            self.sink = None
            self.path.unlink(missing_ok=True)
            progress_path(self.path).unlink(missing_ok=True)


def score_file(item: str, recognizer: Recognizer, table: LazyTable, summary: Summary,
               options: ScoreOptions, observer: ScoreObserver, annotated: Path | None = None,
               start_frame: int = 0, read_from: str | None = None) -> FileReport:
    """Score one input into ``table`` and ``summary``; an InputError is reported, not raised.

    Rows name the input ``item``; ``read_from`` is where to read it when that differs (a local
    copy of a remote file, in ``score --ray``).
    """
    report = FileReport(item)
    start = time.perf_counter()
    try:
        with open_source(read_from or item, options.stride, options.max_fps, start_frame,
                         options.sequence_fps) as source:
            sink = table.open()
            observer.file_started(item, _expected_frames(source, options.stride))
            video = _annotation_sink(item, source.fps, options, annotated)
            report.annotated = video.path if video is not None else None
            try:
                _process(item, source, recognizer, sink, summary, video,
                         lambda r: _count(report, observer, item, r), options.llm_wait_s)
                summary.add_events(item, recognizer.wait_for_second_opinions(options.llm_wait_s))
                if source.damage:
                    report.warning = source.damage
                    summary.warn(item, source.damage)
            finally:
                if video is not None:
                    video.close()
    except InputError as err:
        _fail(report, summary, err)
    finally:
        recognizer.reset()
    report.seconds = time.perf_counter() - start
    return report


def _fail(report: FileReport, summary: Summary, err: InputError) -> None:
    report.error = str(err)
    report.exception = err
    summary.fail(report.name, str(err))
    log.info("skipping %s: %s", report.name, err)  # the observer reports it to the user


@dataclass
class _ParkedPhoto:
    report: FileReport
    results: list[FrameResult]
    ticket: int  # the recognizer's parked stream holding its second opinions
    started: float  # perf_counter when it was read
    deadline: float  # monotonic time after which its row stops waiting for answers
    error: InputError | None = None  # reported when its turn comes, in input order


class _PhotoWindow:
    """Photos scored with the LLM's second opinion, several at a time.

    Each photo is read, classified and asked about at once, and its rows are written, in input
    order, when its answers are in or its ``--llm-wait`` has passed. Meanwhile the next photos'
    faces join the LLM's queue, so they are asked in batches and concurrently: one photo per
    round trip would make a folder of photos as slow as the LLM's latency times their number.
    """

    def __init__(self, recognizer: Recognizer, table: LazyTable, summary: Summary,
                 options: ScoreOptions, observer: ScoreObserver, annotated: dict[str, Path]
                 ) -> None:
        self._recognizer, self._table, self._summary = recognizer, table, summary
        self._options, self._observer, self._annotated = options, observer, annotated
        llm = options.recognizer.llm
        if llm is None:  # nothing to wait for: photos go through score_file
            self.size = 0
        elif options.photo_window is not None:
            self.size = options.photo_window
        else:  # two requests' worth; an annotated copy needs the photo's pixels, kept meanwhile
            self.size = MAX_IN_FLIGHT * llm.batch_size
            if options.annotate is not None:
                self.size = min(self.size, ANNOTATED_PHOTO_WINDOW)
        self._parked: deque[_ParkedPhoto] = deque()

    def takes(self, item: str, start_frame: int) -> bool:
        return self.size > 0 and start_frame == 0 and is_image(item) and not is_stream(item)

    def add(self, item: str) -> list[FileReport]:
        """Read ``item``; returns the reports of the photos written to make room for it."""
        self._parked.append(self._read(item))
        done = []
        while len(self._parked) >= self.size:
            done.append(self._write(self._parked.popleft()))
        return done

    def flush(self) -> list[FileReport]:
        """Write every photo held, waiting for their answers as each one's deadline allows."""
        done = [self._write(parked) for parked in self._parked]
        self._parked.clear()
        return done

    def _read(self, item: str) -> _ParkedPhoto:
        started, options = time.perf_counter(), self._options
        results: list[FrameResult] = []
        error = None
        try:
            with open_source(item, options.stride, options.max_fps, 0,
                             options.sequence_fps) as source:
                results = list(self._recognizer.run(source))
        except InputError as err:
            error = err
        if options.annotate is None:  # rows need the faces, not the pixels
            results = [replace(r, frame=replace(r.frame, image=_NO_PIXELS)) for r in results]
        return _ParkedPhoto(FileReport(item), results, self._recognizer.park(), started,
                            time.monotonic() + options.llm_wait_s, error)

    def _write(self, parked: _ParkedPhoto) -> FileReport:
        report, recognizer = parked.report, self._recognizer
        try:
            if parked.error is not None:
                raise parked.error
            table = self._table.open()
            self._observer.file_started(report.name, len(parked.results))
            image = _annotation_sink(report.name, None, self._options,
                                     self._annotated.get(report.name))
            report.annotated = image.path if image is not None else None
            for result in parked.results:
                wait_s = max(0.0, parked.deadline - time.monotonic())
                result = recognizer.settle(result, wait_s, parked.ticket)
                _write_result(report.name, result, table, self._summary, image,
                              recognizer.take_events(parked.ticket))
                _count(report, self._observer, report.name, result)
        except InputError as err:
            _fail(report, self._summary, err)
        finally:
            recognizer.release(parked.ticket)
        report.seconds = time.perf_counter() - parked.started
        return report


_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


def warn_if_unanswered(stats: dict[str, Any]) -> None:
    """An LLM that answered none of the faces asked is said in one line: in the table, an
    endpoint that is down looks like one that was never asked."""
    if stats["faces_asked"] and not stats["faces_answered"]:
        log.warning("the LLM answered none of the %d faces asked (%s); check --llm-base-url, "
                    "$OPENAI_API_KEY and the server (--debug logs each failure), or raise "
                    "--llm-wait for a slow one", stats["faces_asked"], why_unanswered(stats))


def _count(report: FileReport, observer: ScoreObserver, item: str, result: FrameResult) -> None:
    report.frames += 1
    report.faces += len(result.faces)
    observer.frame_done(item, result)


def _expected_frames(source: Source, stride: int) -> int | None:
    return -(-source.frame_count // stride) if source.frame_count else None


def _annotation_sink(item: str, source_fps: float | None, options: ScoreOptions,
                     path: Path | None) -> VideoSink | _ImageWriter | None:
    if path is None:
        return None
    if is_image(item):
        return _ImageWriter(path, options.overwrite)
    fps = (source_fps or 30.0) / options.stride
    if options.max_fps:
        fps = min(fps, options.max_fps)
    return VideoSink(path, fps, options.overwrite)


class _ImageWriter:
    """Annotated still images share the VideoSink interface."""

    def __init__(self, path: Path, overwrite: bool) -> None:
        self.path = check_output(path, overwrite, (".jpg",))

    def write(self, image: np.ndarray) -> None:
        jpeg = encode_jpeg(image, ANNOTATED_JPEG_QUALITY)
        atomic_write(self.path, lambda handle: handle.write(jpeg))

    def close(self) -> None:
        pass


def _process(item: str, source: Source, recognizer: Recognizer, table: TableSink,
             summary: Summary, video: VideoSink | _ImageWriter | None,
             on_frame: Callable[[FrameResult], None], llm_wait_s: float) -> None:
    for result in recognizer.run(source):
        if result.frame.still:  # a photo's row waits for its second opinion
            result = recognizer.settle(result, llm_wait_s)
        _write_result(item, result, table, summary, video, recognizer.take_events())
        on_frame(result)


def _write_result(item: str, result: FrameResult, table: TableSink, summary: Summary,
                  video: VideoSink | _ImageWriter | None, events: list[dict]) -> None:
    start = time.perf_counter()
    rows = face_rows(item, result)
    table.write(rows)
    summary.add(item, result, rows)
    if video is not None:
        video.write(draw_faces(result.frame.image.copy(), result.faces))
    summary.add_events(item, events)
    result.latency_ms["write"] = (time.perf_counter() - start) * 1000
