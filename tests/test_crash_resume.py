"""SIGKILL during ``edgefer score`` loses nothing already produced; ``--resume`` completes the
table without duplicate or missing rows."""

from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from edgefer.apps.resume import prepare_resume, progress_path


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


def test_sigkill_then_resume(clips, tmp_path):
    out = tmp_path / "faces.csv"
    command = [sys.executable, "-m", "edgefer", "score", str(clips), "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and len(out.read_bytes()) > 20_000):
        time.sleep(0.05)
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


def test_resume_repairs_a_torn_last_line(tmp_path):
    out = tmp_path / "faces.csv"
    out.write_text("file,frame,time_s,track_id,final_label\n"
                   "a.mp4,0,0.0,1,happy\na.mp4,1,0.03,1,happy\na.mp4,1,0.03,2,sad\n"
                   "a.mp4,2,0.07,1,ha")
    state = prepare_resume(out)
    assert state.start_frame == {"a.mp4": 1}  # frame 1 may be incomplete: redo it
    assert state.next_track_id == {"a.mp4": 2}
    assert out.read_text().splitlines()[-1] == "a.mp4,0,0.0,1,happy"


def test_resume_skips_completed_inputs(tmp_path):
    out = tmp_path / "faces.jsonl"
    out.write_text('{"file": "a.mp4", "frame": 0, "track_id": 1}\n')
    progress_path(out).write_text('{"completed": ["a.mp4"]}')
    state = prepare_resume(out)
    assert state.completed == {"a.mp4"} and state.start_frame == {}


def test_inputs_before_the_last_one_in_the_table_are_complete(tmp_path):
    out = tmp_path / "faces.csv"
    out.write_text("file,frame,time_s,track_id,final_label\n"
                   "a.mp4,0,0.0,1,happy\nb.mp4,0,0.0,1,sad\nb.mp4,1,0.03,1,sad\n")
    state = prepare_resume(out)  # no progress file: the run finished or it was removed
    assert state.completed == {"a.mp4"} and state.start_frame == {"b.mp4": 1}
