"""Offline scoring on a Ray cluster: ``edgefer score INPUT... --ray [ADDRESS] -o OUT/``.

The unit of work is one input file: tracking and smoothing need a file's frames in order, and
frames never travel through Ray's object store (a decoded 512x480 frame is 0.7 MB). Each worker
is a Ray actor holding one loaded ``Recognizer`` (model and detector loaded once per worker, not
per file) that runs ``apps.score.score_file`` on one input at a time, writes the input's rows to
a Parquet part under a temporary name, renames it when complete, and returns a small report.

The driver expands the inputs, skips inputs whose part is complete (a rerun resumes), hands
inputs to ready workers and replaces a worker that dies (killed, out of memory, node lost): the
input it held is tried again, at most ``max_attempts`` times. A part appears only when complete
and its name depends on the input alone, so a retried or resumed input never duplicates rows
and no partial file is ever read as data. Workers report frame counts to a small actor that
holds counters only. Nothing here asks for more CPUs than one node has, and no Ray task waits
on another, so a 2-CPU instance cannot deadlock.

Ray is imported only when a run starts (``pip install 'edgefer[ray]'``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from edgefer.apps.score import (
    FileReport,
    LazyTable,
    ScoreOptions,
    run_settings,
    score_file,
    warn_if_unanswered,
)
from edgefer.apps.summary import Summary, merge_summaries
from edgefer.backends import model_that_runs
from edgefer.errors import ConfigError, EdgeferError, InputError, OutputError, require
from edgefer.files import atomic_write, temp_prefix, write_json_atomic
from edgefer.llm.client import add_counts, counts_since
from edgefer.manifest import load_model_entry
from edgefer.pipeline import Recognizer, RecognizerOptions
from edgefer.sinks import check_output
from edgefer.sources import expand_inputs, is_camera, is_stream

log = logging.getLogger(__name__)

STAGING = "_temporary"  # parts being written; dataset readers skip names starting with _ or .
SETTINGS_FILE = "_edgefer.json"  # what the parts were scored with, checked on reruns
PART_PREFIX = "part-"  # every part's name: part-<digest>-<input stem>.parquet
# Ray replaces 127.0.0.1 and localhost with the interface address; another loopback address
# keeps a single-machine instance off the network (Linux routes all of 127/8 to lo).
LOOPBACK_NODE_IP = "127.0.0.2"
GPU_ENGINES = ("tensorrt", "onnxruntime-gpu")
PROGRESS_MESSAGES_PER_S = 200  # what the progress actor receives at most, all workers together


@dataclass(frozen=True)
class RayOptions:
    output: str  # the dataset folder: a path on a shared filesystem or a pyarrow filesystem URI
    address: str = "auto"  # "auto": join the local instance or start one; else HOST:PORT
    workers: int | None = None  # default: as many as the cluster's CPUs (GPUs) hold
    cpus_per_worker: float = 2.0  # a worker decodes, detects and classifies in three threads
    max_attempts: int = 3  # per input: a worker dying on it costs one attempt
    overwrite: bool = False  # delete the folder's parts first instead of resuming

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--ray-workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise InputError(f"--ray-cpus-per-worker must be > 0, got {self.cpus_per_worker}")
        if self.max_attempts < 1:
            raise InputError(f"--ray-attempts must be >= 1, got {self.max_attempts}")


@dataclass
class RayRun:
    """What a run did: reports of the inputs scored now, inputs skipped as already complete,
    and the costs the benchmark reports."""

    reports: list[FileReport] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    workers: int = 0
    worker_startup_s: list[float] = field(default_factory=list)
    file_overhead_s: list[float] = field(default_factory=list)  # round trip minus scoring time
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)  # with --summary only
    model: str = ""  # the manifest name of the model that scored (as the workers report it)
    llm: dict[str, Any] | None = None  # the second opinion's counters, all workers together


class ClusterObserver(Protocol):
    def run_started(self, files: int, skipped: int, workers: int) -> None: ...

    def progress(self, frames_done: int) -> None: ...

    def file_retried(self, name: str, attempt: int, reason: str) -> None: ...

    def file_done(self, report: FileReport) -> None: ...


class _NullObserver:
    def run_started(self, files: int, skipped: int, workers: int) -> None:
        pass

    def progress(self, frames_done: int) -> None:
        pass

    def file_retried(self, name: str, attempt: int, reason: str) -> None:
        pass

    def file_done(self, report: FileReport) -> None:
        pass


def score_on_ray(inputs: list[str], options: ScoreOptions, cluster: RayOptions,
                 observer: ClusterObserver | None = None) -> RayRun:
    """Score every input on a Ray cluster into the Parquet dataset ``cluster.output``.

    Of ``options``, the per-file settings are used (stride, max_fps, llm_wait_s, recognizer,
    summary); ``output``, ``annotate``, ``plot`` and ``resume`` are not (a rerun resumes).
    """
    observer = observer or _NullObserver()
    _check_supported(options)
    items = expand_uris(inputs, options.sequences)
    if not items:
        raise InputError(f"no images or videos found in {', '.join(inputs)}")
    dataset = Dataset(cluster.output)
    settings = run_settings(options)
    dataset.check(settings, cluster.overwrite)
    complete = set() if cluster.overwrite else dataset.completed(items)
    run = RayRun(skipped=[item for item in items if item in complete],
                 model=running_model(options.recognizer))
    todo = [item for item in items if item not in complete]
    ray = require("ray", "ray")
    if todo:
        connect(ray, cluster.address)
        try:
            _Scheduler(ray, options, cluster, dataset, observer, run).run(
                todo, create_output=lambda: dataset.create(settings, cluster.overwrite))
        finally:
            ray.shutdown()
    dataset.clean_staging()
    if run.llm is not None:
        warn_if_unanswered(run.llm)
    if options.summary:
        write_json_atomic(options.summary, _merged_summary(items, run, dataset))
    return run


def running_model(options: RecognizerOptions) -> str:
    """The model workers will run, until one reports it: GPU and PyTorch engines run an int8
    entry's float source (``auto`` is decided on each worker)."""
    return model_that_runs(load_model_entry(options.model, options.manifest), options.engine).name


def _check_supported(options: ScoreOptions) -> None:
    for flag, value in (("--annotate", options.annotate), ("--plot", options.plot)):
        if value is not None:
            raise InputError(f"{flag} is not available with --ray; score the files of interest "
                             "locally, or read the Parquet dataset")
    if options.summary is not None:  # rewritten by every run, like the dataset it describes
        check_output(options.summary, True, (".json",), "--summary")


# -- inputs ----------------------------------------------------------------------------------
def has_filesystem_scheme(spec: str) -> bool:
    """A pyarrow filesystem URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``...), as opposed
    to a local path or a stream URL."""
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", spec, re.IGNORECASE)) and not is_stream(spec)


def expand_uris(inputs: list[str], sequences: bool = False) -> list[str]:
    """Inputs as workers will open them: local paths absolute (workers run elsewhere), folders
    and list files expanded, folder URIs listed; cameras and live streams refused."""
    items: list[str] = []
    for item in expand_inputs(inputs, sequences):
        if is_camera(item) or is_stream(item):
            raise InputError(f"{item}: cameras and streams cannot be scored with --ray "
                             "(only files: a worker reads an input from start to end)")
        if has_filesystem_scheme(item):
            items += _list_uri(item)
        else:
            items.append(str(Path(item).absolute()))
    return items


def _list_uri(uri: str) -> list[str]:
    """The images and videos under a bucket folder, chosen as a local folder's are; archives
    there are left out (a worker reads an archive's members from a local file only)."""
    from edgefer.sources import is_archive, is_media

    fs_module = require("pyarrow.fs", "ray")
    filesystem, path = _from_uri(uri)
    if filesystem.get_file_info(path).type != fs_module.FileType.Directory:
        return [uri]
    scheme = uri.split("://", 1)[0]
    found = [Path(info.path) for info in
             filesystem.get_file_info(fs_module.FileSelector(path, recursive=True))
             if info.type == fs_module.FileType.File and is_media(Path(info.path))]
    archives = [p for p in found if is_archive(p)]
    if archives:
        log.warning("%d archive(s) under %s left out: --ray reads archives only from local "
                    "files (e.g. %s)", len(archives), uri, archives[0].name)
    return sorted(f"{scheme}://{p.as_posix()}" for p in found if not is_archive(p))


def _from_uri(uri: str) -> tuple[Any, str]:
    fs_module = require("pyarrow.fs", "ray")
    try:
        filesystem, path = fs_module.FileSystem.from_uri(uri)
    except (ValueError, OSError) as err:  # ArrowInvalid is a ValueError
        raise InputError(f"cannot open {uri}: {err}") from err
    return filesystem, path.rstrip("/")


@contextlib.contextmanager
def _local_copy(item: str) -> Iterator[str]:
    """``item`` itself when it is a local path, else a temporary local copy (OpenCV and
    MediaPipe read local files)."""
    if not has_filesystem_scheme(item):
        yield item
        return
    fs_module = require("pyarrow.fs", "ray")
    with tempfile.TemporaryDirectory(prefix=temp_prefix()) as folder:
        local = Path(folder) / Path(item).name
        filesystem, path = _from_uri(item)
        try:
            fs_module.copy_files(path, str(local), source_filesystem=filesystem,
                                 destination_filesystem=fs_module.LocalFileSystem())
        except OSError as err:
            raise InputError(f"cannot read {item}: {err}") from err
        yield str(local)


# -- the dataset -----------------------------------------------------------------------------
def part_name(item: str) -> str:
    """The part of ``item``: a digest of the input (unique, stable across runs) and its stem."""
    digest = hashlib.sha1(item.encode("utf-8")).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(item).stem)[:40]
    return f"{PART_PREFIX}{digest}-{stem}.parquet"


def _entry_name(info: Any) -> str:
    """A listed entry's name (pyarrow gives paths)."""
    return info.path.rsplit("/", 1)[-1]


class Dataset:
    """The output folder on a shared filesystem or any pyarrow filesystem: one
    ``part-*.parquet`` per input, ``_temporary/`` for parts being written, ``_edgefer.json``."""

    def __init__(self, uri: str) -> None:
        self.local = not has_filesystem_scheme(uri)
        self.uri = str(Path(uri).absolute()) if self.local else uri  # as every worker opens it
        fs_module = require("pyarrow.fs", "ray")
        if self.local:
            self.fs, self.root = fs_module.LocalFileSystem(), str(Path(uri).absolute())
        else:
            self.fs, self.root = _from_uri(uri)
        self._fs_module = fs_module

    def part(self, item: str) -> str:
        return f"{self.root}/{part_name(item)}"

    def check(self, settings: dict[str, Any], overwrite: bool) -> None:
        """Refuse before the cluster is joined: a file where the folder goes, a name that reads
        as a table file, or (unless ``overwrite``) parts scored with other settings."""
        suffix = PurePosixPath(self.root).suffix
        if suffix.lower() in (".csv", ".jsonl"):
            raise InputError(f"{self.uri}: with --ray, -o names a folder that becomes a Parquet "
                             f"dataset, not a {suffix} table (e.g. {self.uri[:-len(suffix)]}/)")
        try:
            if self.fs.get_file_info(self.root).type == self._fs_module.FileType.File:
                raise OutputError(f"{self.uri} is a file; with --ray, -o names a folder that "
                                  "becomes a Parquet dataset")
            previous = None if overwrite else self._settings()
        except OSError as err:
            raise OutputError(f"cannot read {self.uri}: {err}") from err
        if previous is None or not self._has_parts():  # no part yet: free
            return
        if previous.get("model") is None and "model" in settings:  # default unnamed: unchecked
            previous["model"] = settings["model"]
        changed = sorted(k for k in settings.keys() | previous.keys()
                         if settings.get(k) != previous.get(k))
        if changed:
            raise InputError(f"{self.uri} holds parts scored with other settings "
                             f"({', '.join(changed)}); use --overwrite or another folder")

    def create(self, settings: dict[str, Any], overwrite: bool) -> None:
        """Make the folder (deleting an overwritten run's parts) and record the settings, once
        the cluster is joined: a run the cluster refuses leaves nothing behind."""
        try:
            self.fs.create_dir(self.root, recursive=True)
            if overwrite:
                self._delete_parts()
            self._write(f"{self.root}/{SETTINGS_FILE}",
                        (json.dumps(settings, indent=2) + "\n").encode("utf-8"))
        except OSError as err:
            raise OutputError(f"cannot write {self.uri}: {err}") from err

    def _settings(self) -> dict[str, Any] | None:
        """The settings an earlier run recorded, None where there is no record."""
        path = f"{self.root}/{SETTINGS_FILE}"
        if self.fs.get_file_info(path).type != self._fs_module.FileType.File:
            return None
        with self.fs.open_input_stream(path) as handle:
            try:
                settings = json.loads(handle.read().decode("utf-8"))
            except ValueError:  # UnicodeDecodeError included
                settings = None
        if not isinstance(settings, dict):
            raise OutputError(f"{self.uri}: {SETTINGS_FILE} is unreadable; --overwrite starts "
                              "the dataset again")
        return settings

    def _listing(self) -> list[Any]:
        """The folder's entries (``FileInfo``), in one listing call."""
        return self.fs.get_file_info(self._fs_module.FileSelector(self.root, allow_not_found=True))

    def _has_parts(self) -> bool:
        return any(_entry_name(info).startswith(PART_PREFIX) for info in self._listing())

    def _write(self, path: str, data: bytes) -> None:
        if self.local:
            atomic_write(path, lambda handle: handle.write(data))
        else:  # an object store's PUT is atomic already
            with self.fs.open_output_stream(path) as handle:
                handle.write(data)

    def _delete_parts(self) -> None:
        for info in self._listing():
            name = _entry_name(info)
            if name.startswith(PART_PREFIX) or name in (SETTINGS_FILE, STAGING):
                (self.fs.delete_dir if info.type == self._fs_module.FileType.Directory
                 else self.fs.delete_file)(info.path)

    def completed(self, items: list[str]) -> set[str]:
        """The inputs whose part exists (one listing call, whatever the number of inputs)."""
        present = {_entry_name(info) for info in self._listing()}
        return {item for item in items if part_name(item) in present}

    def staging_file(self, item: str, scratch: str) -> Path:
        """Where a worker writes ``item``'s rows: beside the dataset when it is local (the
        rename is then atomic), else in ``scratch`` before the upload."""
        name = f"{part_name(item)[:-len('.parquet')]}.{uuid.uuid4().hex[:12]}.parquet"
        if not self.local:
            return Path(scratch) / name
        folder = Path(self.root) / STAGING
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def publish(self, written: Path, item: str) -> None:
        """Make ``item``'s part visible, complete, under its final name."""
        try:
            if self.local:
                with written.open("rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(written, self.part(item))
                return
            staged = f"{self.root}/{STAGING}/{written.name}"
            self._fs_module.copy_files(str(written), staged, destination_filesystem=self.fs,
                                       source_filesystem=self._fs_module.LocalFileSystem())
            self.fs.move(staged, self.part(item))
        except OSError as err:
            raise OutputError(f"cannot write {self.part(item)}: {err}") from err

    def clean_staging(self) -> None:
        """Remove what killed attempts left behind (no worker of this run is writing now)."""
        with contextlib.suppress(OSError):
            if self.fs.get_file_info(f"{self.root}/{STAGING}").type != \
                    self._fs_module.FileType.NotFound:
                self.fs.delete_dir(f"{self.root}/{STAGING}")

    def read_rows(self, item: str) -> list[dict[str, Any]]:
        parquet = require("pyarrow.parquet", "parquet")
        return parquet.read_table(self.part(item), filesystem=self.fs).to_pylist()


def _merged_summary(items: list[str], run: RayRun, dataset: Dataset) -> dict[str, Any]:
    """The ``--summary`` document: workers' per-file summaries, and for inputs completed by an
    earlier run, summaries rebuilt from their parts (one part in memory at a time)."""
    errors = {r.name: r.error for r in run.reports if r.error}
    parts = []
    for item in items:
        if item in run.summaries:
            parts.append(run.summaries[item])
            continue
        summary = Summary()
        if item in errors:
            summary.fail(item, errors[item] or "")
        else:
            summary.add_rows(dataset.read_rows(item))
        parts.append(summary.to_dict())
    document = {"model": run.model, **merge_summaries(parts)}
    return document if run.llm is None else {**document, "llm": run.llm}


# -- connecting ------------------------------------------------------------------------------
def connect(ray: Any, address: str) -> None:
    """Join the cluster at ``address``; with ``auto``, the cluster ``RAY_ADDRESS`` names or the
    one ``ray start`` registered on this machine, else a new instance for this run, on a
    loopback address. Token authentication is Ray's: ``RAY_AUTH_MODE=token`` and the token in
    ``~/.ray/auth_token`` (or ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``)."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or "auto"
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address != "auto":
            ray.init(address=address, **quiet, **_driver_on_loopback(address))
            return
        try:
            ray.init(address="auto", **quiet)
        except ConnectionError:  # none running: start one, on loopback
            local = {"_node_ip_address": LOOPBACK_NODE_IP} if sys.platform.startswith("linux") else {}
            ray.init(include_dashboard=False, **quiet, **local)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        where = "a local Ray instance" if address == "auto" else address
        raise ConfigError(f"cannot connect to {where}: {str(err).splitlines()[0]} (a cluster with "
                          "token authentication needs RAY_AUTH_MODE=token and its token in "
                          "~/.ray/auth_token, RAY_AUTH_TOKEN or the file RAY_AUTH_TOKEN_PATH names)") from err


def _driver_on_loopback(address: str) -> dict[str, str]:
    """A cluster on another loopback address (127.0.0.2) is joined from that address: Ray would
    otherwise give the driver the interface address, where no node of the cluster runs."""
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    if host.startswith("127.") and host != "127.0.0.1" and not address.startswith("ray://"):
        return {"_node_ip_address": host}
    return {}


def worker_resources(ray: Any, cluster: RayOptions, engine: str, files: int) -> tuple[int, float, int]:
    """(workers, CPUs per worker, GPUs per worker). A worker never asks for more CPUs than the
    largest node has (it would wait forever), and by default there are only as many workers as
    the cluster holds at once, so none waits for another to finish."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    node_cpus = [n.get("CPU", 0.0) for n in nodes]
    if not node_cpus or max(node_cpus) <= 0:
        raise ConfigError("the Ray cluster has no CPUs")
    cpus = min(cluster.cpus_per_worker, max(node_cpus))
    fit = sum(int(c // cpus) for c in node_cpus)
    gpus = 1 if engine in GPU_ENGINES else 0
    if gpus:
        fit = min(fit, sum(int(n.get("GPU", 0)) for n in nodes))
        if fit == 0:
            raise ConfigError(f"--engine {engine} needs GPUs, and the Ray cluster has none")
    return max(1, min(cluster.workers or fit, files)), cpus, gpus


# -- the workers -----------------------------------------------------------------------------
@dataclass
class FileResult:
    report: FileReport
    summary: dict[str, Any] | None = None  # the file's ``--summary`` entry, when asked for
    llm: dict[str, Any] | None = None  # the worker's LLM counters while it scored this input
    model: str = ""  # the model the worker ran (a GPU worker: an int8 entry's float source)


class _Progress:
    """An actor holding, per input being scored, (frames done, frames expected)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, int | None]] = {}

    def update(self, item: str, frames: int, total: int | None) -> None:
        self.files[item] = (frames, total)

    def forget(self, item: str) -> None:
        self.files.pop(item, None)

    def snapshot(self) -> dict[str, tuple[int, int | None]]:
        return self.files


class _Reporter:
    """A ``ScoreObserver`` in the worker that sends its frame count every ``interval_s``."""

    def __init__(self, progress: Any, interval_s: float) -> None:
        self.progress = progress
        self.interval_s = interval_s
        self.frames = 0
        self.total: int | None = None
        self.sent_at = 0.0

    def file_started(self, name: str, total_frames: int | None) -> None:
        self.total = total_frames
        self.progress.update.remote(name, 0, total_frames)
        self.sent_at = time.monotonic()

    def frame_done(self, name: str, result: Any) -> None:
        self.frames += 1
        if time.monotonic() - self.sent_at >= self.interval_s:
            self.progress.update.remote(name, self.frames, self.total)
            self.sent_at = time.monotonic()

    def file_done(self, report: FileReport) -> None:
        pass


class _Worker:
    """An actor: one loaded Recognizer scoring one input at a time into its Parquet part."""

    def __init__(self, options: ScoreOptions, dataset_uri: str, progress: Any,
                 report_every_s: float) -> None:
        start = time.perf_counter()
        self.options = options
        self.dataset = Dataset(dataset_uri)
        self.progress = progress
        self.report_every_s = report_every_s
        self.error: EdgeferError | None = None
        self.llm_counted: dict[str, Any] = {}  # the LLM counters already reported
        try:
            self.recognizer = Recognizer(options.recognizer)
        except EdgeferError as err:  # reported by ready(): every worker would fail the same
            self.error = err
        self.startup_s = time.perf_counter() - start

    def ready(self) -> tuple[float, EdgeferError | None]:
        return self.startup_s, self.error

    def score(self, item: str, want_summary: bool) -> FileResult:
        summary = Summary()
        try:
            with _local_copy(item) as path, tempfile.TemporaryDirectory() as scratch:
                report = self._score(item, path, summary, scratch)
        except InputError as err:
            report = FileReport(item, error=str(err), exception=err)
            summary.fail(item, str(err))
        report.dominant = summary.dominant(item)
        report.exception = None  # the message travels; the driver needs no traceback
        return FileResult(report, summary.to_dict() if want_summary else None, self._llm_share(),
                          self.recognizer.model.name)

    def _llm_share(self) -> dict[str, Any] | None:
        """What the second opinion counted since the last input (answers to an earlier input's
        faces that arrived late included): the driver adds the shares up."""
        status = self.recognizer.llm_status()
        if status is None:
            return None
        share = counts_since(status.stats, self.llm_counted)
        self.llm_counted = status.stats
        return share

    def _score(self, item: str, path: str, summary: Summary, scratch: str) -> FileReport:
        written = self.dataset.staging_file(item, scratch)
        try:
            with LazyTable(written) as table:
                report = score_file(item, self.recognizer, table, summary, self.options,
                                    _Reporter(self.progress, self.report_every_s), read_from=path)
            if report.error is None:
                self.dataset.publish(written, item)
        finally:
            written.unlink(missing_ok=True)
        return report


class _Scheduler:
    """Hands inputs to ready workers, one at a time each, and replaces workers that die."""

    def __init__(self, ray: Any, options: ScoreOptions, cluster: RayOptions, dataset: Dataset,
                 observer: ClusterObserver, run: RayRun) -> None:
        self.ray, self.options, self.cluster, self.observer = ray, options, cluster, observer
        self.dataset = dataset
        self.result = run
        self.attempts: dict[str, int] = {}
        self.startup_failures = 0
        self.starting: dict[Any, Any] = {}  # ready() ref -> actor
        self.running: dict[Any, tuple[Any, str, float]] = {}  # score() ref -> (actor, item, t0)
        self.idle: list[Any] = []
        self.frames_done = 0

    def run(self, items: list[str], create_output: Callable[[], None]) -> None:
        """Score ``items``; ``create_output`` runs once a worker has started, before the first
        input is handed out: a run the cluster cannot serve (no GPU, no node that imports
        edgefer) leaves the output as it was, an overwritten dataset included."""
        ray = self.ray
        workers, cpus, gpus = worker_resources(ray, self.cluster, self.options.recognizer.engine,
                                               len(items))
        self.progress = ray.remote(num_cpus=0)(_Progress).remote()
        self.worker_class = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0,
                                       max_task_retries=0)(_Worker)
        self.result.workers = workers
        self.observer.run_started(len(items) + len(self.result.skipped), len(self.result.skipped),
                                  workers)
        for _ in range(workers):
            self._start_worker()
        queue = deque(items)
        created = False
        try:
            while queue or self.running:
                while self.idle and queue:
                    if not created:
                        create_output()
                        created = True
                    self._dispatch(self.idle.pop(), queue.popleft())
                done, _ = ray.wait([*self.starting, *self.running], num_returns=1, timeout=0.25)
                for ref in done:
                    self._collect(ref, queue)
                self._show_progress()
        finally:
            for actor in [*self.idle, *self.starting.values(), *(a for a, _, _ in
                                                                  self.running.values())]:
                ray.kill(actor)

    def _start_worker(self) -> None:
        # twice a second each, fewer on large clusters: one actor receives every count
        every_s = max(0.5, self.result.workers / PROGRESS_MESSAGES_PER_S)
        actor = self.worker_class.remote(self.options, self.dataset.uri, self.progress, every_s)
        self.starting[actor.ready.remote()] = actor

    def _dispatch(self, actor: Any, item: str) -> None:
        ref = actor.score.remote(item, self.options.summary is not None)
        self.running[ref] = (actor, item, time.perf_counter())

    def _collect(self, ref: Any, queue: deque[str]) -> None:
        ray = self.ray
        if ref in self.starting:
            actor = self.starting.pop(ref)
            try:
                startup_s, error = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                self.startup_failures += 1
                if err.actor_init_failed or self.startup_failures > self.cluster.max_attempts:
                    raise ConfigError("a Ray worker failed to start (is the same edgefer "
                                      f"installed on every node?): {_first_line(err)}") from err
                self._start_worker()
                return
            if error is not None:
                raise error
            self.result.worker_startup_s.append(startup_s)
            self.idle.append(actor)
            return
        actor, item, started = self.running.pop(ref)
        try:
            result: FileResult = ray.get(ref)
        except ray.exceptions.RayActorError as err:  # the worker died: replace it, retry
            ray.kill(actor)
            self._start_worker()
            self._retry(item, queue, f"worker died ({_first_line(err)})")
            return
        except ray.exceptions.RayTaskError as err:
            cause = err.cause
            if isinstance(cause, EdgeferError) and not isinstance(cause, InputError):
                raise cause from None  # an output or model problem stops the run, as locally
            result = FileResult(FileReport(item, error=f"internal error: {_first_line(err)}"))
        self.idle.append(actor)
        self._finish(item, result, time.perf_counter() - started)

    def _retry(self, item: str, queue: deque[str], reason: str) -> None:
        attempt = self.attempts[item] = self.attempts.get(item, 1) + 1
        self.progress.forget.remote(item)
        if attempt > self.cluster.max_attempts:
            error = f"failed {self.cluster.max_attempts} times: {reason}"
            self._finish(item, FileResult(FileReport(item, error=error)), None)
            return
        self.observer.file_retried(item, attempt, reason)
        queue.appendleft(item)

    def _finish(self, item: str, result: FileResult, round_trip_s: float | None) -> None:
        report = result.report
        self.result.reports.append(report)
        if result.summary is not None:
            self.result.summaries[item] = result.summary
        if result.llm is not None:
            self.result.llm = add_counts(self.result.llm or {}, result.llm)
        self.result.model = result.model or self.result.model
        self.frames_done += report.frames
        self.progress.forget.remote(item)
        if round_trip_s is not None and report.error is None:
            self.result.file_overhead_s.append(max(0.0, round_trip_s - report.seconds))
        self.observer.file_done(report)

    def _show_progress(self) -> None:
        in_flight = {item for _, item, _ in self.running.values()}
        snapshot = self.ray.get(self.progress.snapshot.remote())
        self.observer.progress(self.frames_done + sum(frames for item, (frames, _) in
                                                      snapshot.items() if item in in_flight))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
