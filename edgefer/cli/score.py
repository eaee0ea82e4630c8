"""``edgefer score`` and ``edgefer demo``: argument parsing and rich progress for ``edgefer.apps.score``."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.markup import escape

from edgefer.apps.score import FileReport, ScoreOptions
from edgefer.cli.common import (
    add_llm_arguments,
    add_recognizer_arguments,
    make_console,
    recognizer_options,
    refuse_without,
)
from edgefer.errors import OutputError
from edgefer.types import FrameResult


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "score", help="score videos, images, folders, archives or streams into a per-face table",
        description="Detect, classify and track every face; write one row per face per processed "
                    "frame. Folders are searched recursively for images, videos and archives; "
                    "the images and videos in a zip or tar archive are read in place.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="file, folder, archive, URL or camera index")
    parser.add_argument("-o", "--output", required=True,
                        help="table to write: .csv, .jsonl or .parquet; with --ray, a folder "
                             "(local path or pyarrow filesystem URI) that becomes a Parquet "
                             "dataset")
    parser.add_argument("--annotate", type=Path, metavar="OUT.mp4",
                        help="write an annotated video (one per input when there are several)")
    parser.add_argument("--summary", type=Path, metavar="OUT.json",
                        help="per-file and per-track summary (dominant emotion, share of time)")
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="emotion-over-time chart")
    parser.add_argument("--stride", type=int, default=1, help="process every Nth frame")
    parser.add_argument("--max-fps", type=float, help="process at most F frames per second of video")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run into the same .csv/.jsonl table: "
                             "finished inputs are skipped, the unfinished one restarts at its "
                             "last frame; refused if the settings (model, --stride, --max-fps, "
                             "...) differ from the interrupted run's, or with --annotate")
    parser.add_argument("--sequences", action="store_true",
                        help="a folder is one video: its images, in natural name order "
                             "(frame_2 before frame_10), are its frames, tracked and smoothed "
                             "(extracted frames); without it, separate photos")
    parser.add_argument("--sequence-fps", type=float, metavar="FPS",
                        help="with --sequences: the frames' rate (default 30), which timestamps, "
                             "tracking and smoothing count by")
    parser.add_argument("--llm-wait", type=float, metavar="S",
                        help="with --llm: at the end of each input, and for a photo before its "
                             f"row is written, wait up to S seconds for LLM answers (default "
                             f"{ScoreOptions.llm_wait_s:g})")
    add_ray_arguments(parser)
    add_recognizer_arguments(parser)
    add_llm_arguments(parser)
    parser.set_defaults(run=run_score)

    demo = commands.add_parser(
        "demo", help="score a clip generated from a public-domain portrait (no camera or data needed)",
        description="Builds a short clip from matplotlib's public-domain grace_hopper.jpg (moving, "
                    "zooming, mirrored, partly leaving the frame) and scores it like 'edgefer score'.")
    demo.add_argument("--out", type=Path, default=Path("edgefer-demo"),
                      help="output folder, whose demo files are replaced on every run "
                           "(default: ./edgefer-demo)")
    demo.set_defaults(run=run_demo)


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster (pip install 'edgefer[ray]')")
    group.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS", type=ray_address,
                       help="score on a Ray cluster: HOST:PORT of its head, or no value (auto) to "
                            "join the local instance or start one on loopback; -o names a "
                            "Parquet dataset folder; rerunning resumes")
    group.add_argument("--ray-workers", type=int, metavar="N",
                       help="workers (default: as many as the cluster's CPUs hold)")
    group.add_argument("--ray-cpus-per-worker", type=float, metavar="C",
                       help="CPUs each worker reserves (default 2: decode, detection and "
                            "classification overlap in threads)")
    group.add_argument("--ray-attempts", type=int, metavar="N",
                       help="tries per input when workers die (default 3)")


def ray_address(text: str) -> str:
    """An argparse type for --ray's optional value: ``auto``, ``HOST:PORT`` or
    ``ray://HOST:PORT``. Anything else is refused by name, chiefly an input given right after
    the bare flag, which would otherwise be taken for the address (and INPUT said missing)."""
    if text == "auto" or re.fullmatch(r"(ray://)?[^\s/]+:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a cluster address: put --ray after the "
                                     "inputs, or give it one (HOST:PORT, ray://HOST:PORT, auto)")


def run_score(args: argparse.Namespace) -> int:
    from edgefer.apps.score import score

    if not args.llm:
        refuse_without("--llm", "--llm-wait" if args.llm_wait is not None else None)
    if not args.sequences:
        refuse_without("--sequences", "--sequence-fps" if args.sequence_fps is not None else None)
    if args.ray is None:
        refuse_without("--ray", *(flag for flag, value in (
            ("--ray-workers", args.ray_workers), ("--ray-cpus-per-worker", args.ray_cpus_per_worker),
            ("--ray-attempts", args.ray_attempts)) if value is not None))
    wait = ScoreOptions.llm_wait_s if args.llm_wait is None else args.llm_wait
    options = ScoreOptions(output=Path(args.output), overwrite=args.overwrite,
                           annotate=args.annotate, summary=args.summary, plot=args.plot,
                           stride=args.stride, max_fps=args.max_fps, llm_wait_s=wait,
                           resume=args.resume, sequences=args.sequences,
                           sequence_fps=ScoreOptions.sequence_fps if args.sequence_fps is None
                           else args.sequence_fps,
                           recognizer=recognizer_options(args))
    if args.ray is not None:
        return run_score_on_ray(args, options)
    started = time.time()
    try:
        with RichScoreObserver() as observer:
            reports = score(args.inputs, options, observer)
    except KeyboardInterrupt:
        say_how_to_continue(options, started)
        raise
    observer.print_summary(reports, options)
    return 0 if all(r.error is None for r in reports) else 1


def say_how_to_continue(options: ScoreOptions, started: float) -> None:
    """After Ctrl-C: where the rows went, and the flag that carries on from there; said only
    of a table this run wrote to (not of an older one left as it was, stopped before rows)."""
    from edgefer.apps.resume import RESUMABLE

    if options.output.suffix.lower() not in RESUMABLE or not options.output.exists() \
            or options.output.stat().st_mtime < started - 1:  # a coarse file-system clock
        return
    drop = " without --annotate (an annotated video cannot be continued)" \
        if options.annotate else ""
    make_console(stderr=True).print(
        f"{escape(str(options.output))} keeps the rows scored so far: the same command with "
        f"--resume{drop} continues it", highlight=False, soft_wrap=True)


def run_demo(args: argparse.Namespace) -> int:
    from edgefer.apps.demo import write_demo_clip
    from edgefer.apps.score import score

    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {args.out}: {err.strerror}") from err
    clip = args.out / "demo_input.mp4"
    write_demo_clip(clip)
    options = ScoreOptions(output=args.out / "faces.csv", overwrite=True,
                           annotate=args.out / "annotated.mp4", summary=args.out / "summary.json")
    with RichScoreObserver() as observer:
        reports = score([str(clip)], options, observer)
    observer.print_summary(reports, options)
    return 0 if all(r.error is None for r in reports) else 1


def run_score_on_ray(args: argparse.Namespace, options: ScoreOptions) -> int:
    from edgefer.apps.distributed import RayOptions, score_on_ray

    given = {"workers": args.ray_workers, "cpus_per_worker": args.ray_cpus_per_worker,
             "max_attempts": args.ray_attempts}
    cluster = RayOptions(output=args.output, address=args.ray, overwrite=args.overwrite,
                         **{key: value for key, value in given.items() if value is not None})
    with RichClusterObserver() as observer:
        run = score_on_ray(args.inputs, options, cluster, observer)
    if run.skipped:
        observer.console.print(f"skipped {len(run.skipped)} input(s) already complete in "
                               f"{escape(args.output)}", highlight=False)
    if run.reports:
        print_reports(observer.console, run.reports)
    outputs = [args.output, args.summary]
    observer.console.print("wrote " + ", ".join(str(p) for p in outputs if p is not None),
                           highlight=False, soft_wrap=True)  # paths unbroken, to copy
    return 0 if all(r.error is None for r in run.reports) else 1


class RichClusterObserver:
    """One display over the cluster: inputs done (failed, retried) and frames scored per second,
    with a line for each failure and retry."""

    def __enter__(self) -> RichClusterObserver:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = make_console(stderr=True)
        self.display = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[note]}"), TimeElapsedColumn(),
                                 console=self.console, transient=True,
                                 disable=not self.console.is_terminal)
        self.display.__enter__()
        self.files = self.display.add_task("[bold]inputs", total=None, note="connecting to Ray")
        self.frames = self.display.add_task("frames", total=None, note="")
        self.failed = self.retried = 0
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.display.__exit__(*exc)

    def run_started(self, files: int, skipped: int, workers: int) -> None:
        self.workers = workers
        self.started = time.perf_counter()
        self.display.update(self.files, total=files, completed=skipped, note=self._note())

    def progress(self, frames_done: int) -> None:
        elapsed = time.perf_counter() - self.started
        self.display.update(self.frames, completed=frames_done,
                             note=f"{frames_done / elapsed:6.1f} frames/s" if elapsed > 0 else "")

    def file_retried(self, name: str, attempt: int, reason: str) -> None:
        self.retried += 1
        self.display.console.print(f"[yellow]retry[/] {escape(name)} (attempt {attempt}): "
                                    f"{escape(reason)}", highlight=False, soft_wrap=True)
        self.display.update(self.files, note=self._note())

    def file_done(self, report: FileReport) -> None:
        if report.error:
            self.failed += 1
            self.display.console.print(f"[red]failed[/] {escape(report.name)}: "
                                        f"{escape(report.error)}", highlight=False, soft_wrap=True)
        self.display.update(self.files, advance=1, note=self._note())

    def _note(self) -> str:
        return (f"{self.workers} workers, [red]{self.failed} failed[/], "
                f"[yellow]{self.retried} retried[/]")


TABLE_ROWS = 30  # beyond this many inputs, the table lists only failures, then the totals


def print_reports(console: Any, reports: list[FileReport]) -> None:
    """The per-input table printed at the end of a run; for a folder of thousands of photos,
    the failed and damaged inputs (at most ``TABLE_ROWS``) and one line of totals."""
    failed = [r for r in reports if r.error]
    damaged = [r for r in reports if r.warning and not r.error]
    flagged = failed + damaged
    listed = reports if len(reports) <= TABLE_ROWS else flagged[:TABLE_ROWS]
    if listed:
        print_table(console, listed)
    if len(reports) > TABLE_ROWS:
        more = f" (the first {TABLE_ROWS} listed)" if len(flagged) > TABLE_ROWS else ""
        console.print(f"{len(reports)} inputs: {len(reports) - len(failed)} scored "
                      f"({len(damaged)} damaged), {len(failed)} failed{more}; "
                      f"{sum(r.frames for r in reports)} frames, "
                      f"{sum(r.faces for r in reports)} faces", highlight=False)


def print_table(console: Any, reports: list[FileReport]) -> None:
    from rich.table import Table

    # the input column gets what the figures (46 cells with borders) and the status (a
    # quarter of the width at most: longer messages wrap) leave it
    status_width = max(len("status"), *(min(len(r.error or r.warning or ""), console.width // 4)
                                        for r in reports))
    width = max(12, console.width - 46 - status_width)
    names = shown_names([r.name for r in reports], width)
    table = Table(title="edgefer score")
    table.add_column("input", overflow="fold")  # a name too long for its cut is wrapped whole
    for column in ("frames", "faces", "frames/s"):
        table.add_column(column, justify="right")
    table.add_column("dominant")
    table.add_column("status")
    for r, name in zip(reports, names, strict=True):
        fps = f"{r.frames / r.seconds:.1f}" if r.seconds > 0 and r.frames else "-"
        status = f"[red]{escape(r.error)}[/]" if r.error else \
            f"[yellow]{escape(r.warning)}[/]" if r.warning else "[green]ok[/]"
        table.add_row(escape(name), str(r.frames), str(r.faces), fps, r.dominant or "-", status)
    console.print(table)


def shown_names(names: list[str], width: int) -> list[str]:
    """The table's names: without the folders all share, each cut from the left to at most
    ``width`` cells, keeping the file name; whole (wrapped in their column) where cutting
    would make two inputs read alike, as two cameras' ``.../Channels/101`` would."""
    names = distinct_names(names)
    shortened = [left_shortened(name, width) for name in names]
    return shortened if len(set(shortened)) == len(set(names)) else names


def left_shortened(name: str, width: int) -> str:
    """``name`` in at most ``width`` cells (at least 2), keeping its end (the file name), cut
    at a folder where one falls within: ``…/videos/clip.mp4`` rather than ``/srv/camera-archive/da…``."""
    if cell_len(name) <= width:
        return name
    tail = name
    while cell_len(tail) > max(width, 2) - 1:
        tail = tail[1:]
    folder = tail.find("/")
    return "…" + (tail[folder:] if 0 <= folder < len(tail) - 1 else tail)


def distinct_names(names: list[str]) -> list[str]:
    """Inputs named without the folders all of them share, so that ``a.zip/clip.mp4`` and
    ``b.zip/clip.mp4`` stay apart while ``/data/day1/x.jpg`` reads ``x.jpg``."""
    if len(names) < 2:
        return [Path(name).name for name in names]
    parts = [Path(name).parts for name in names]
    shared = 0
    while all(len(p) > shared + 1 and p[shared] == parts[0][shared] for p in parts):
        shared += 1
    if shared == 1 and parts[0][0] == Path(names[0]).anchor:  # only the root: keep it shown
        shared = 0
    return [str(Path(*p[shared:])) if shared else name for p, name in zip(parts, names, strict=True)]


class RichScoreObserver:
    """An overall bar over inputs and a bar for the current file, with frames/s and ETA."""

    def __enter__(self) -> RichScoreObserver:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = make_console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.console,
            transient=True, disable=not self.console.is_terminal)
        self.progress.__enter__()
        self.overall = self.progress.add_task("[bold]all inputs", total=None, rate="")
        self.file_task: Any = None
        self.started = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def file_started(self, name: str, total_frames: int | None) -> None:
        if self.file_task is not None:
            self.progress.remove_task(self.file_task)
        self.started = time.perf_counter()
        self.frames_in_file = 0
        self.file_task = self.progress.add_task(escape(Path(name).name[:40]), total=total_frames,
                                                rate="")

    def frame_done(self, name: str, result: FrameResult) -> None:
        self.frames_in_file += 1
        elapsed = time.perf_counter() - self.started
        rate = f"{self.frames_in_file / elapsed:6.1f} frames/s" if elapsed > 0 else ""
        self.progress.update(self.file_task, advance=1, rate=rate)

    def file_done(self, report: FileReport) -> None:
        self.progress.update(self.overall, advance=1)
        if report.error:
            self.progress.console.print(f"[red]skipped[/] {escape(report.name)}: "
                                        f"{escape(report.error)}", highlight=False, soft_wrap=True)

    def print_summary(self, reports: list[FileReport], options: ScoreOptions) -> None:
        if not reports:  # a resume of a table that holds every input
            self.console.print(f"nothing to score: every input is already in {options.output}",
                               highlight=False, soft_wrap=True)
            return
        print_reports(self.console, reports)
        scored = any(report.error is None for report in reports)
        if not scored and options.output.exists():  # an older table, not this run's
            self.console.print(f"no input was scored: {options.output} is left as it was",
                               highlight=False, soft_wrap=True)
        outputs = [str(p) for p in (options.output if scored else None, options.summary,
                                    options.plot) if p is not None and Path(p).exists()]
        annotated = [str(r.annotated) for r in reports if r.annotated and r.annotated.exists()]
        if len(annotated) > 3:
            annotated = [f"{len(annotated)} annotated files ({annotated[0]}, ...)"]
        self.console.print("wrote " + (", ".join(outputs + annotated) or "nothing"),
                           highlight=False, soft_wrap=True)  # paths unbroken, to copy
