"""SIGKILL during ``edgefer score`` loses nothing already produced; ``--resume`` completes the
table without duplicate or missing rows."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import assert_one_line_error, run_cli

from edgefer.apps.resume import prepare_resume, progress_path
from edgefer.apps.score import ScoreOptions, run_settings
from edgefer.errors import InputError
from edgefer.manifest import MANIFEST_PATH, read_manifest
from edgefer.pipeline import RecognizerOptions

SETTINGS = {"stride": 1, "model": "vgg_s4_int8"}  # what a unit test's "run" was scored with


def read_rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def frame_counts(rows):
    return Counter((r["file"], int(r["frame"])) for r in rows)


@pytest.fixture
def clips(tmp_path, demo_clip):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        shutil.copy(demo_clip, folder / f"clip{i}.mp4")
    return folder


def start_scoring(command, out):
    """``command`` started, returned once it has written rows to ``out``."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and len(out.read_bytes()) > 20_000):
        time.sleep(0.05)
    return process


def interrupted(*args, out):
    """``edgefer score ARGS -o OUT`` stopped in its first input by SIGTERM, which edgefer treats
    as Ctrl-C (exit 130); SIGINT itself is ignored under a CI runner's background shell.
    Returns what the command said on stderr."""
    process = start_scoring([sys.executable, "-m", "edgefer", "score", *args, "-o", str(out)], out)
    assert process.poll() is None, "scoring finished before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130, process.stderr.read()
    return process.stderr.read().decode()


def test_sigkill_then_resume(clips, tmp_path):
    out = tmp_path / "faces.csv"
    command = [sys.executable, "-m", "edgefer", "score", str(clips), "-o", str(out)]
    process = start_scoring(command, out)
    before = out.read_bytes()
    time.sleep(1.2)
    assert process.poll() is None, "scoring finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    after_kill = out.read_bytes()
    assert after_kill.startswith(before[: before.rfind(b"\n") + 1])  # nothing written is lost

    result = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    resumed = read_rows(out)
    reference_out = tmp_path / "reference.csv"
    subprocess.run([*command[:-1], str(reference_out)], check=True, capture_output=True, timeout=300)
    reference = read_rows(reference_out)
    assert frame_counts(resumed) == frame_counts(reference)  # no duplicate, no missing frame
    assert len(resumed) == len(reference)


def recorded(out, completed=(), settings=SETTINGS):
    """``out``'s progress record, as ``score`` writes it."""
    progress_path(out).write_text(json.dumps({"completed": list(completed), "settings": settings}))
    return out


def test_resume_repairs_a_torn_last_line(tmp_path):
    out = recorded(tmp_path / "faces.csv")
    out.write_text("file,frame,time_s,track_id,final_label\n"
                   "a.mp4,0,0.0,1,happy\na.mp4,1,0.03,1,happy\na.mp4,1,0.03,2,sad\n"
                   "a.mp4,2,0.07,1,ha")
    state = prepare_resume(out, SETTINGS, ["a.mp4"])
    assert state.start_frame == {"a.mp4": 1}  # frame 1 may be incomplete: redo it
    assert state.next_track_id == {"a.mp4": 2}
    assert out.read_text().splitlines()[-1] == "a.mp4,0,0.0,1,happy"


def test_resume_skips_completed_inputs(tmp_path):
    out = tmp_path / "faces.jsonl"
    out.write_text('{"file": "a.mp4", "frame": 0, "track_id": 1}\n')
    progress_path(out).write_text('{"completed": ["a.mp4"]}')
    state = prepare_resume(out, SETTINGS, ["a.mp4"])  # a record without settings (older)
    assert state.completed == {"a.mp4"} and state.start_frame == {}
    assert not state.settings_known  # so this run's settings are not recorded as the table's


def test_inputs_before_the_last_one_in_the_table_are_complete(tmp_path):
    out = recorded(tmp_path / "faces.csv")  # stopped before b.mp4 was recorded as complete
    out.write_text("file,frame,time_s,track_id,final_label\n"
                   "a.mp4,0,0.0,1,happy\nb.mp4,0,0.0,1,sad\nb.mp4,1,0.03,1,sad\n")
    state = prepare_resume(out, SETTINGS, ["a.mp4", "b.mp4"])
    assert state.completed == {"a.mp4"} and state.start_frame == {"b.mp4": 1}


def test_a_table_without_a_record_is_not_resumed(tmp_path):
    """Nothing says which inputs it holds or how they were scored (a table of another tool, or
    of a version that deleted the record): its rows are left alone."""
    out = tmp_path / "faces.csv"
    table = "file,frame,time_s,track_id,final_label\na.mp4,0,0.0,1,happy\n"
    out.write_text(table)
    with pytest.raises(InputError, match="no record of its inputs"):
        prepare_resume(out, SETTINGS, ["a.mp4"])
    assert out.read_text() == table


def test_a_resume_must_include_the_input_it_stopped_in(tmp_path):
    out = recorded(tmp_path / "faces.csv", completed=["a.mp4"])
    table = "file,frame,time_s,track_id,final_label\na.mp4,0,0.0,1,happy\nb.mp4,0,0.0,1,sad\n"
    out.write_text(table)
    with pytest.raises(InputError, match=r"b\.mp4 was being scored"):
        prepare_resume(out, SETTINGS, ["a.mp4"])
    assert out.read_text() == table


def test_a_finished_table_is_resumed_by_its_new_inputs_only(demo_clip, tmp_path):
    """The record stays when a run completes: a resume of the same inputs scores nothing, and
    one with more inputs appends theirs; other settings are still refused."""
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    shutil.copy(demo_clip, first)
    shutil.copy(demo_clip, second)
    out = tmp_path / "faces.csv"
    assert run_cli("score", str(first), "-o", str(out), "--stride", "10").returncode == 0
    done = out.read_bytes()
    assert run_cli("score", str(first), "-o", str(out), "--stride", "10", "--resume").returncode == 0
    assert out.read_bytes() == done
    assert_one_line_error(run_cli("score", str(first), "-o", str(out), "--stride", "7",
                                  "--resume"), 2, "stride 10", "stride 7")
    result = run_cli("score", str(first), str(second), "-o", str(out), "--stride", "10", "--resume")
    assert result.returncode == 0, result.stderr
    rows = read_rows(out)
    assert out.read_bytes().startswith(done)
    assert frame_counts([r for r in rows if r["file"] == str(second)]) == \
        frame_counts([{**r, "file": str(second)} for r in rows if r["file"] == str(first)])


def test_resume_with_other_settings_is_refused(clips, tmp_path):
    """A table continued at another stride or with another model would mix rows that cannot be
    compared, and nothing in it would say so."""
    out = tmp_path / "faces.csv"
    said = interrupted(str(clips), out=out)
    assert "the same command with --resume continues it" in " ".join(said.split())
    before = out.read_bytes()
    manifest = read_manifest(MANIFEST_PATH)
    other = next(name for name in manifest["models"] if name != manifest["default"])
    result = run_cli("score", str(clips), "-o", str(out), "--resume", "--stride", "5",
                     "--model", other)
    assert_one_line_error(result, 2, "--resume", f"model {manifest['default']}", "stride 1",
                          f"model {other}", "stride 5", "--overwrite")
    result = run_cli("score", str(clips), "-o", str(out), "--resume", "--max-fps", "10")
    assert_one_line_error(result, 2, "max_fps none", "max_fps 10.0")
    assert out.read_bytes() == before  # refused before the table was repaired


def test_resume_of_an_annotated_run_is_refused(clips, tmp_path):
    """An annotated video cannot be continued: a resumed run would replace it with the frames
    after the stop only."""
    out, annotated = tmp_path / "faces.csv", tmp_path / "annotated.mp4"
    said = interrupted(str(clips), "--annotate", str(annotated), out=out)
    assert "--resume without --annotate" in " ".join(said.split())
    before = out.read_bytes()
    copies = {path: path.read_bytes() for path in tmp_path.glob("annotated_*.mp4")}
    for extra in ((), ("--overwrite",)):
        result = run_cli("score", str(clips), "-o", str(out), "--annotate", str(annotated),
                         "--resume", *extra)
        assert_one_line_error(result, 2, "--resume", "--annotate", "--overwrite")
    assert out.read_bytes() == before
    assert {path: path.read_bytes() for path in tmp_path.glob("annotated_*.mp4")} == copies


def test_resume_checks_the_recorded_settings_before_repairing(tmp_path):
    out = tmp_path / "faces.csv"
    table = "file,frame,time_s,track_id,final_label\na.mp4,0,0.0,1,happy\na.mp4,1,0.03,1,ha"
    out.write_text(table)
    progress_path(out).write_text(json.dumps({"completed": [], "settings": SETTINGS}))
    with pytest.raises(InputError, match="stride 1, model vgg_s4_int8; this run asks for stride 2"):
        prepare_resume(out, {**SETTINGS, "stride": 2, "model": "vgg_s"}, ["a.mp4"])
    assert out.read_text() == table
    assert prepare_resume(out, SETTINGS, ["a.mp4"]).start_frame == {"a.mp4": 0}


def test_leaving_model_out_and_naming_the_default_are_the_same_settings(tmp_path):
    default = read_manifest(MANIFEST_PATH)["default"]
    named = ScoreOptions(tmp_path / "a.csv", recognizer=RecognizerOptions(model=default))
    assert run_settings(ScoreOptions(tmp_path / "a.csv")) == run_settings(named)
    assert run_settings(named)["model"] == default


def test_a_failed_input_is_tried_again_by_a_resume(portrait, tmp_path):
    """Only what was scored is recorded: a fixed input is scored by the resume; a run that
    wrote no table leaves no record either."""
    import cv2

    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    cv2.imwrite(str(good), portrait)
    bad.write_text("not a photo")
    assert run_cli("score", str(bad), str(tmp_path / "nothing.jpg"), "-o",
                   str(tmp_path / "none.csv")).returncode == 1
    assert not progress_path(tmp_path / "none.csv").exists()
    out = tmp_path / "faces.csv"
    assert run_cli("score", str(good), str(bad), "-o", str(out)).returncode == 1
    cv2.imwrite(str(bad), portrait)  # fixed
    result = run_cli("score", str(good), str(bad), "-o", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    assert {r["file"] for r in read_rows(out)} == {str(good), str(bad)}


class StopIn:
    """A ``ScoreObserver`` that interrupts the run after ``frames`` frames of ``name``."""

    def __init__(self, name, frames):
        self.name, self.frames, self.seen = name, frames, 0

    def file_started(self, name, total_frames):
        pass

    def frame_done(self, name, result):
        if name == self.name:
            self.seen += 1
            if self.seen == self.frames:
                raise KeyboardInterrupt

    def file_done(self, report):
        pass


@pytest.mark.parametrize("case", ["the clip is away at the first resume",
                                  "a bad input is fixed meanwhile"])
def test_an_interrupted_input_is_completed_whatever_else_the_resumes_meet(demo_clip, portrait,
                                                                          tmp_path, case):
    """The input a run stopped in is continued first; if it cannot be read then, the record
    keeps it as partial, so rows other inputs add after its own do not make it look done."""
    import cv2

    from edgefer.apps.score import score

    clip = tmp_path / "clip.mp4"
    other = tmp_path / ("good.jpg" if "away" in case else "bad.mp4")
    shutil.copy(demo_clip, clip)
    if other.suffix == ".jpg":
        cv2.imwrite(str(other), portrait)
    else:
        other.write_text("not a video yet")
    inputs = [str(other), str(clip)] if other.suffix == ".mp4" else [str(clip), str(other)]
    out = tmp_path / "faces.csv"
    with pytest.raises(KeyboardInterrupt):
        score(inputs, ScoreOptions(out), StopIn(str(clip), 40))
    if other.suffix == ".jpg":  # the clip is away when the first resume comes
        clip.rename(tmp_path / "away.mp4")
        score(inputs, ScoreOptions(out, resume=True))
        (tmp_path / "away.mp4").rename(clip)
        score(inputs, ScoreOptions(out, resume=True))
    else:  # the bad input was fixed: the clip still comes first
        shutil.copy(demo_clip, other)
        with pytest.raises(KeyboardInterrupt):
            score(inputs, ScoreOptions(out, resume=True), StopIn(str(other), 30))
        score(inputs, ScoreOptions(out, resume=True))
    reference = tmp_path / "reference.csv"
    score(inputs, ScoreOptions(reference))
    assert frame_counts(read_rows(out)) == frame_counts(read_rows(reference))


def test_a_streams_credentials_stay_out_of_rows_and_the_record(demo_clip, tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import cv2

    from edgefer.apps.score import score
    from edgefer.sources import open_source

    # an AVI reads front to back: the test server, like http.server, serves no byte ranges
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30,
                             (640, 480))
    with open_source(str(demo_clip)) as source:
        for frame in source:
            writer.write(frame.image)
    writer.release()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        out = tmp_path / "faces.csv"
        score([f"http://user:hunter2@127.0.0.1:{port}/clip.avi?token=k1"],
              ScoreOptions(out, stride=25))
    finally:
        server.shutdown()
    assert {r["file"] for r in read_rows(out)} == {f"http://127.0.0.1:{port}/clip.avi"}
    for path in (out, progress_path(out)):
        assert "hunter2" not in path.read_text() and "k1" not in path.read_text()


def test_a_lone_input_that_opens_but_fails_leaves_no_table(monkeypatch, tmp_path):
    """As when it cannot be opened: the command fails, and no table or record is left."""
    from edgefer.apps import score as scoring
    from edgefer.sources import Source

    class Undecodable(Source):
        def __iter__(self):
            raise InputError("no decodable frames in clip.mp4")
            yield

    monkeypatch.setattr(scoring, "open_source", lambda *args, **kwargs: Undecodable())
    out = tmp_path / "faces.csv"
    with pytest.raises(InputError, match="no decodable frames"):
        scoring.score(["clip.mp4"], ScoreOptions(out))
    assert not out.exists() and not progress_path(out).exists()
