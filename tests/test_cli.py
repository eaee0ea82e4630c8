"""The real ``edgefer`` entry point in a subprocess: outputs, bad input, exit codes."""

from __future__ import annotations

import csv
import json
import shutil
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

from edgefer.sinks import ROW_COLUMNS


@pytest.fixture(scope="module")
def scored(demo_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored")
    result = run_cli("score", str(demo_clip), "-o", str(out / "faces.csv"),
                     "--summary", str(out / "summary.json"), "--annotate", str(out / "a.mp4"),
                     "--plot", str(out / "plot.png"))
    return out, result


def test_score_writes_every_output(scored):
    import cv2

    out, result = scored
    assert result.returncode == 0, result.stderr
    with (out / "faces.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(ROW_COLUMNS)
    assert 200 <= len(rows) <= 240  # 150 frames: one face, then two
    assert len({r["file"] for r in rows}) == 1
    summary = json.loads((out / "summary.json").read_text())
    (file_summary,) = summary["files"].values()
    assert file_summary["frames"] == 150
    assert abs(sum(file_summary["share"].values()) - 1) < 1e-3
    assert all(t["dominant"] for t in file_summary["per_track"].values())
    capture = cv2.VideoCapture(str(out / "a.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 150
    assert (out / "plot.png").stat().st_size > 10_000


def test_summary_counts_label_changes_as_the_rows_show_them(scored):
    """Per track, the summary's label changes are those of the written rows, in frame order; a
    resumed run (the same rows read back) counts the same; smoothing removes flicker."""
    from edgefer.apps.summary import Summary

    out, _ = scored
    with (out / "faces.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    (file_summary,) = json.loads((out / "summary.json").read_text())["files"].values()
    for track_id, track in file_summary["per_track"].items():
        track_rows = [r for r in rows if r["track_id"] == track_id]
        for column, key in (("final_label", "label_changes"), ("label", "raw_label_changes")):
            labels = [r[column] for r in track_rows]
            assert track[key] == sum(a != b for a, b in pairwise(labels))
    assert file_summary["label_changes"] == sum(
        t["label_changes"] for t in file_summary["per_track"].values())
    assert file_summary["raw_label_changes"] > file_summary["label_changes"]
    reread = Summary()
    reread.add_rows(rows)
    (resumed,) = reread.to_dict()["files"].values()
    assert resumed["per_track"] == file_summary["per_track"]


def test_a_resumed_summary_plots_the_same_smoothed_timeline(demo_clip):
    """The plot shows smoothed probabilities; rows read back on ``--resume`` hold the per-frame
    ones, which the summary smooths again exactly as the pipeline did."""
    from edgefer.apps.summary import Summary
    from edgefer.pipeline import Recognizer, RecognizerOptions
    from edgefer.sinks import face_rows
    from edgefer.smooth import SmoothingOptions
    from edgefer.sources import open_source
    from edgefer.types import EMOTIONS

    live, written = Summary(keep_timeline=True), []
    with Recognizer(RecognizerOptions()) as recognizer, open_source(str(demo_clip)) as source:
        for result in recognizer.run(source):
            rows = face_rows("clip", result)
            live.add("clip", result, rows)
            written += [{k: str(v) for k, v in row.items()} for row in rows]  # as a CSV reads
    reread = Summary(keep_timeline=True)
    reread.add_rows(written)
    before, after = live.files["clip"].timeline, reread.files["clip"].timeline
    assert [(t, i) for t, i, _ in after] == [(round(t, 4), i) for t, i, _ in before]
    np.testing.assert_allclose([p for *_, p in after], [p for *_, p in before], atol=2e-3)
    unsmoothed = Summary(keep_timeline=True, smoothing=SmoothingOptions(half_life_s=0))
    unsmoothed.add_rows(written)  # the run's smoothing is the one applied
    raw = [[float(row[f"p_{e}"]) for e in EMOTIONS] for row in written]
    np.testing.assert_allclose([p for *_, p in unsmoothed.files["clip"].timeline], raw, atol=1e-6)


def test_score_refuses_to_overwrite(scored, demo_clip):
    out, _ = scored
    before = (out / "faces.csv").read_bytes()
    result = run_cli("score", str(demo_clip), "-o", str(out / "faces.csv"))
    assert result.returncode == 4
    assert "--overwrite" in result.stderr and "Traceback" not in result.stderr
    assert (out / "faces.csv").read_bytes() == before


@pytest.mark.parametrize(("make_input", "output", "code", "message"), [
    (lambda d: d / "missing.mp4", "o.csv", 2, "no such file"),
    (lambda d: (d / "notes.mp4").write_text("text") and d / "notes.mp4", "o.csv", 2, "cannot open video"),
    (lambda d: (d / "zero.mp4").write_bytes(b"") or d / "zero.mp4", "o.csv", 2, "cannot open video"),
    (lambda d: d, "o.xlsx", 2, "unsupported output type"),
])
def test_bad_input_is_one_line(tmp_path, make_input, output, code, message):
    source = make_input(tmp_path)
    result = run_cli("score", str(source), "-o", str(tmp_path / output))
    assert_one_line_error(result, code, message)
    assert result.stderr.strip().count("\n") == 0, result.stderr  # said once, nothing else
    assert not (tmp_path / output).exists()


def test_multi_file_run_skips_the_bad_file(tmp_path, demo_clip):
    shutil.copy(demo_clip, tmp_path / "good.mp4")
    (tmp_path / "bad.mp4").write_text("not a video")
    result = run_cli("score", str(tmp_path), "-o", str(tmp_path / "out.jsonl"))
    assert result.returncode == 1
    assert "bad.mp4" in result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {r["file"].split("/")[-1] for r in rows} == {"good.mp4"}


@pytest.mark.parametrize("where", ["before the command", "after it"])
def test_debug_shows_the_traceback_with_the_same_exit_code(tmp_path, where):
    score = ["score", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o.csv")]
    args = ["--debug", *score] if where == "before the command" else [*score, "--debug"]
    result = run_cli(*args)
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_demo_runs_without_camera_or_data(tmp_path):
    result = run_cli("demo", "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo" / "annotated.mp4").stat().st_size > 0
    assert len((tmp_path / "demo" / "faces.csv").read_text().splitlines()) > 150


@pytest.mark.parametrize(("names", "shown"), [
    (["a.zip/clip.mp4", "b.tgz/clip.mp4"], ["a.zip/clip.mp4", "b.tgz/clip.mp4"]),
    (["/data/x/1.jpg", "/data/x/2.jpg"], ["1.jpg", "2.jpg"]),
    (["/d/a/x.jpg", "/d/b/x.jpg"], ["a/x.jpg", "b/x.jpg"]),
    (["/data/x/1.jpg"], ["1.jpg"]),
    (["rtsp://cam/live", "/a/b.jpg"], ["rtsp://cam/live", "/a/b.jpg"]),
    (["/tmp/a.mp4", "/work/b.mp4"], ["/tmp/a.mp4", "/work/b.mp4"]),  # only the root shared
])
def test_the_report_table_keeps_inputs_apart(names, shown):
    from edgefer.cli.score import distinct_names

    assert distinct_names(names) == shown


def test_long_input_names_keep_their_file_names_in_the_table():
    """Names from several folders share no prefix to drop; a long one is shortened from the
    left, so the table still shows which file each row is, unless that would make two rows
    read alike: then the names stay whole."""
    import io

    from rich.console import Console

    from edgefer.apps.score import FileReport
    from edgefer.cli.score import left_shortened, print_table, shown_names

    long = "/srv/camera-archive/videos/face_recognition_short_hamilton_clip.mp4"
    reports = [FileReport(long, frames=275, faces=277, seconds=1.5),
               FileReport("/srv/camera-archive/videos/faceapijs_bbt4.jpg", frames=1, faces=3),
               FileReport("garbage.jpg", error="cannot read image: garbage.jpg")]
    screen = Console(file=io.StringIO(), width=120)
    print_table(screen, reports)
    shown = screen.file.getvalue()
    assert "hamilton_clip.mp4" in shown and "faceapijs_bbt4.jpg" in shown
    assert left_shortened(long, 50) == "…/videos/face_recognition_short_hamilton_clip.mp4"
    assert left_shortened(long, 30) == "…ition_short_hamilton_clip.mp4"  # no folder within
    assert left_shortened("/a/b.jpg", 50) == "/a/b.jpg"
    cameras = ["rtsp://entrance-north.local/Streaming/Channels/101",
               "rtsp://entrance-south.local/Streaming/Channels/101"]
    assert len(set(shown_names(cameras, 24))) == 2


def test_a_large_folder_ends_with_totals_and_its_failures(tmp_path):
    """Beyond 30 inputs the table lists the failed ones only, then one line of totals."""
    from edgefer.apps.demo import portrait_path

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(31):
        shutil.copy(portrait_path(), folder / f"face{i:02d}.jpg")
    (folder / "broken.jpg").write_text("not an image")
    result = run_cli("score", str(folder), "-o", str(tmp_path / "o.csv"))
    assert result.returncode == 1, result.stderr
    assert "32 inputs: 31 scored (0 damaged), 1 failed; 31 frames, 31 faces" in result.stderr
    assert "│ broken.jpg" in result.stderr and "│ face00.jpg" not in result.stderr


def test_the_last_line_names_the_files_written(tmp_path):
    """An image annotated as ``x.mp4`` is written as ``x_<image>.jpg``: the line says so."""
    from edgefer.apps.demo import portrait_path

    shutil.copy(portrait_path(), tmp_path / "face.jpg")
    result = run_cli("score", str(tmp_path / "face.jpg"), "-o", str(tmp_path / "o.csv"),
                     "--annotate", str(tmp_path / "x.mp4"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x_face.jpg").stat().st_size > 0 and not (tmp_path / "x.mp4").exists()
    assert f"wrote {tmp_path / 'o.csv'}, {tmp_path / 'x_face.jpg'}" in result.stderr


def test_sequences_score_a_folder_of_frames_like_the_video(demo_clip, tmp_path):
    """``--sequences``: the clip's first 45 frames as PNGs give the clip's first 45 frames of
    rows (tracking and smoothing are causal, PNG is lossless, 30 frames/s is the clip's rate)."""
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    capture = cv2.VideoCapture(str(demo_clip))
    for i in range(45):
        cv2.imwrite(str(frames / f"frame_{i}.png"), capture.read()[1])
    video = run_cli("score", str(demo_clip), "-o", str(tmp_path / "video.csv"))
    folder = run_cli("score", str(frames), "--sequences", "-o", str(tmp_path / "folder.csv"))
    assert video.returncode == 0 and folder.returncode == 0, video.stderr + folder.stderr

    def rows(name: str) -> list[list[str]]:
        with (tmp_path / name).open() as handle:
            return [row[1:] for row in csv.reader(handle) if row[1].isdigit() and int(row[1]) < 45]

    assert rows("folder.csv") == rows("video.csv") and len(rows("folder.csv")) >= 45


def test_a_photos_row_carries_its_second_opinion(tmp_path):
    """A photo has no next frame to carry a late answer: its row waits for it (at most
    --llm-wait), so the table says what the LLM answered, not only the summary."""
    pytest.importorskip("openai")
    from edgefer.apps.demo import portrait_path
    from tools.openai_stub import StubServer, StubState

    shutil.copy(portrait_path(), tmp_path / "face.jpg")
    with StubServer(StubState(mode="slow", delay_s=0.5, answer=lambda face: "surprise")) as server:
        result = run_cli("score", str(tmp_path / "face.jpg"), "-o", str(tmp_path / "o.csv"),
                         "--llm", "--llm-base-url", server.base_url, "--llm-model", "stub",
                         "--llm-threshold", "1.0")
    assert result.returncode == 0, result.stderr
    with (tmp_path / "o.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["llm_label"], row["final_label"], row["final_source"]) == ("surprise",) * 2 + ("llm",)
    assert "answered none" not in result.stderr


def test_an_llm_that_answers_nothing_is_said(tmp_path):
    """An endpoint that is down leaves the rows as the CNN wrote them, exits 0 (the table is
    good), and says so in one warning line and in the summary's counters."""
    pytest.importorskip("openai")
    import socket

    from edgefer.apps.demo import portrait_path

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    shutil.copy(portrait_path(), tmp_path / "face.jpg")
    result = run_cli("score", str(tmp_path / "face.jpg"), "-o", str(tmp_path / "o.csv"),
                     "--summary", str(tmp_path / "s.json"), "--llm", "--llm-base-url",
                     f"http://127.0.0.1:{port}/v1", "--llm-model", "stub", "--llm-threshold", "1.0")
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "answered none" in line]
    assert "the LLM answered none of the 1 faces asked (1 requests failed after" in warning
    with (tmp_path / "o.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["llm_label"], row["final_source"]) == ("", "cnn")
    llm = json.loads((tmp_path / "s.json").read_text())["llm"]
    assert (llm["faces_asked"], llm["faces_answered"], llm["failed_requests"]) == (1, 0, 1)


def test_live_on_an_unpaced_file_says_why_frames_were_dropped(demo_clip, tmp_path):
    result = run_cli("live", "--source", str(demo_clip), "--headless", "-o", str(tmp_path / "o.csv"))
    assert result.returncode == 0, result.stderr
    assert "frames dropped" in result.stderr and "set --realtime" in result.stderr


def test_a_plot_of_photos_alone_is_not_drawn(tmp_path):
    from edgefer.apps.demo import portrait_path

    shutil.copy(portrait_path(), tmp_path / "face.jpg")
    result = run_cli("score", str(tmp_path / "face.jpg"), "-o", str(tmp_path / "o.csv"),
                     "--plot", str(tmp_path / "p.png"))
    assert result.returncode == 0, result.stderr
    assert "no chart written" in result.stderr and not (tmp_path / "p.png").exists()


def test_photos_share_the_llms_round_trips(portrait, tmp_path):
    """A folder of photos does not wait out each photo's answer before reading the next: their
    faces reach the LLM together, and every row still carries its own answer, in input order
    (an undecodable photo among them too)."""
    pytest.importorskip("openai")
    import cv2

    from tools.openai_stub import StubServer, StubState

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):  # a little brighter each: distinct crops, no answer comes from the cache
        cv2.imwrite(str(photos / f"p{i}.png"), cv2.convertScaleAbs(portrait, beta=3 * i))
    (photos / "p2b.jpg").write_bytes(b"not a JPEG")
    state = StubState(mode="slow", delay_s=1.0, answer=lambda face: "surprise")
    with StubServer(state) as server:
        result = run_cli("score", str(photos), "-o", str(tmp_path / "o.csv"), "--llm",
                         "--llm-base-url", server.base_url, "--llm-model", "stub",
                         "--llm-threshold", "1.0", "--summary", str(tmp_path / "s.json"))
    assert result.returncode == 1 and "cannot decode image" in result.stderr, result.stderr
    with (tmp_path / "o.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(row["file"]).name for row in rows] == [f"p{i}.png" for i in range(6)]
    assert all((row["llm_label"], row["final_source"]) == ("surprise", "llm") for row in rows)
    files = json.loads((tmp_path / "s.json").read_text())["files"]
    assert [Path(name).name for name in files] == ["p0.png", "p1.png", "p2.png", "p2b.jpg",
                                                   "p3.png", "p4.png", "p5.png"]
    assert [f.get("llm_answers") for f in files.values()] == [1, 1, 1, None, 1, 1, 1]
    assert json.loads((tmp_path / "s.json").read_text())["llm"]["faces_answered"] == 6
    assert sum(request["faces"] for request in state.requests) == 6
    assert len(state.requests) < 6  # one request per photo is what this replaced


def test_annotated_copies_of_same_named_inputs_are_told_apart(demo_clip, tmp_path):
    """Archives and session folders repeat names (day1/clip.mp4, day2/clip.mp4): each input
    gets its own copy, never another's."""
    from edgefer.apps.score import annotate_paths

    base = tmp_path / "o.mp4"
    paths = annotate_paths(base, ["day1/clip.mp4", "day2/clip.mp4", "x.zip/s/clip.mp4",
                                  "face.jpg", "face.mp4", "a/b.mp4", "c/b.mp4", "a_b.mp4"])
    assert [p.name for p in paths.values()] == ["o_day1_clip.mp4", "o_day2_clip.mp4",
                                                "o_s_clip.mp4", "o_face.jpg", "o_face.mp4",
                                                "o_a_b.mp4", "o_c_b.mp4", "o_a_b-2.mp4"]
    assert annotate_paths(base, ["day1/clip.mp4"]) == {"day1/clip.mp4": base}
    alike = ["a/b.mp4", "c/b.mp4", "a_b.mp4", "a_b-2.mp4"]  # a number may read as a name
    assert len(set(annotate_paths(base, alike).values())) == len(alike)
    for day in ("day1", "day2"):
        (tmp_path / day).mkdir()
        shutil.copy(demo_clip, tmp_path / day / "clip.mp4")
    result = run_cli("score", str(tmp_path / "day1"), str(tmp_path / "day2"), "-o",
                     str(tmp_path / "t.csv"), "--annotate", str(base), "--stride", "25")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("o_*.mp4")) == ["o_day1_clip.mp4", "o_day2_clip.mp4"]


def test_a_warning_logged_under_a_progress_bar_is_printed_above_it():
    """Progress displays redirect sys.stderr while they draw; edgefer's log handler writes to
    the redirected stream, so a warning mid-run (a damaged frame) is not drawn over."""
    import io
    import logging

    from rich.console import Console
    from rich.progress import Progress

    from edgefer.cli.main import CurrentStderrHandler

    screen = Console(file=io.StringIO(), force_terminal=True, width=100)
    log = logging.getLogger("edgefer.test_progress")
    handler = CurrentStderrHandler()
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False  # whatever the root logger holds under pytest
    try:
        with Progress(console=screen, transient=True) as progress:
            progress.add_task("frames", total=2)
            log.warning("frame 7 of clip.mp4 is damaged")
    finally:
        log.removeHandler(handler)
    assert "frame 7 of clip.mp4 is damaged\n" in screen.file.getvalue()
