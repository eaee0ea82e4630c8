"""A bad-input corpus, generated here, through the real command line: one clear line on stderr,
the documented exit code, no traceback, and in multi-file runs the other files complete."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

EXIT_INPUT, EXIT_SOME_FAILED, EXIT_MODEL, EXIT_OUTPUT, EXIT_MISSING = 2, 1, 3, 4, 5


def write_video(path, frames=20, fourcc="mp4v", size=(64, 48)):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), i * 10 % 255, np.uint8))
    writer.release()
    return path


def damaged_start(path):
    """An MJPEG AVI whose first three frames cannot be decoded."""
    write_video(path, fourcc="MJPG")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8][:3]
    for start in starts:
        data[start + 2:start + 200] = bytes(198)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, demo_clip, portrait):
    import cv2
    from PIL import Image

    root = tmp_path_factory.mktemp("corpus")
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("definitely not a video")
    full = (root / "full.mp4")
    shutil.copy(demo_clip, full)
    (root / "half.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    damaged_start(root / "damaged.avi")
    cv2.imwrite(str(root / "gray.png"), cv2.cvtColor(portrait, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(root / "alpha.png"), cv2.cvtColor(portrait, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(root / "deep16.png"), portrait.astype(np.uint16) * 257)
    Image.fromarray(portrait[..., ::-1]).convert("CMYK").save(root / "cmyk.jpg")
    cv2.imwrite(str(root / "huge.jpg"), cv2.resize(portrait, (8000, 8000)))
    (root / "spaced dir ü").mkdir()
    shutil.copy(demo_clip, root / "spaced dir ü" / "clip ünïcode.mp4")
    return root


@pytest.mark.parametrize("name", ["gray.png", "alpha.png", "deep16.png", "cmyk.jpg", "huge.jpg",
                                  "spaced dir ü/clip ünïcode.mp4", "damaged.avi"])
def test_odd_but_valid_inputs_are_scored(corpus, tmp_path, name):
    out = tmp_path / "out.csv"
    result = run_cli("score", str(corpus / name), "-o", str(out))
    assert result.returncode == 0, result.stderr
    rows = out.read_text().splitlines()
    if name != "damaged.avi":  # the damaged clip has no face, only frames to survive
        assert len(rows) >= 2


@pytest.mark.parametrize(("name", "needle"), [
    ("missing.mp4", "no such file"), ("zero.mp4", "cannot open video"),
    ("text.mp4", "cannot open video"),
])
def test_unreadable_inputs(corpus, tmp_path, name, needle):
    result = run_cli("score", str(corpus / name), "-o", str(tmp_path / "o.csv"))
    assert_one_line_error(result, EXIT_INPUT, needle)
    assert not (tmp_path / "o.csv").exists()


def test_truncated_mp4_fails_cleanly(corpus, tmp_path):
    """OpenCV writes the MP4 index at the end: the first half of the clip has none."""
    result = run_cli("score", str(corpus / "half.mp4"), "-o", str(tmp_path / "o.csv"))
    assert_one_line_error(result, EXIT_INPUT, "cannot open video", "half.mp4")
    assert not (tmp_path / "o.csv").exists()


def test_mixed_folder_completes_the_good_files(corpus, tmp_path):
    result = run_cli("score", str(corpus), "-o", str(tmp_path / "o.jsonl"))
    assert result.returncode == EXIT_SOME_FAILED and "Traceback" not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert sorted(line.split(": ")[0].rsplit("/", 1)[-1] for line in skipped) == \
        ["half.mp4", "text.mp4", "zero.mp4"]  # one line per bad file, with its reason
    assert all("cannot open video" in line for line in skipped)
    text = (tmp_path / "o.jsonl").read_text()
    assert "full.mp4" in text and "cmyk.jpg" in text and "clip ünïcode.mp4" in text


def test_only_bad_inputs_write_nothing_and_say_so(corpus, tmp_path):
    result = run_cli("score", str(corpus / "zero.mp4"), str(corpus / "text.mp4"), "-o",
                     str(tmp_path / "o.csv"))
    assert result.returncode == EXIT_SOME_FAILED, result.stderr
    assert "wrote nothing" in result.stderr and not (tmp_path / "o.csv").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder(corpus, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run_cli("score", str(corpus / "gray.png"), "-o", str(locked / "o.csv"))
    assert_one_line_error(result, EXIT_OUTPUT, "not writable")


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["score", "{corpus}/gray.png", "-o", "{tmp}/o.csv", "--min-face-score", "1.5"], EXIT_INPUT,
     "--min-face-score: must be within [0, 1]"),
    (["score", "{corpus}/gray.png", "-o", "{tmp}/o.csv", "--stride", "0"], EXIT_INPUT, "stride"),
    (["score", "{corpus}/gray.png", "-o", "{tmp}/o.csv", "--stride", "abc"], EXIT_INPUT,
     "--stride: invalid int value: 'abc' (see: edgefer score --help)"),
    (["score", "{corpus}/gray.png", "-o", "{tmp}/o.csv", "--llm", "--llm-threshold", "3"],
     EXIT_INPUT, "--llm-threshold"),
    (["score", "{corpus}/gray.png", "-o", "{tmp}/o.csv", "--llm", "--llm-batch", "0"],
     EXIT_INPUT, "--llm-batch: must be >= 1"),
    (["score", "{corpus}/gray.png", "-o", "{tmp}/o.csv", "--llm-model", "m", "--llm-prompt",
      "open"], EXIT_INPUT, "--llm-model, --llm-prompt need --llm"),
    (["score", "{corpus}/gray.png", "-o", "{tmp}/o.csv", "--llm-wait", "5"], EXIT_INPUT,
     "--llm-wait needs --llm"),
    (["eval", "{corpus}", "--markdown", "{tmp}/t.md"], EXIT_INPUT,
     "--markdown writes the LLM tables: add --llm"),
    (["eval", "{corpus}", "--llm", "--mode", "detect"], EXIT_INPUT, "--mode crops"),
    (["eval", "{corpus}", "--detector", "full"], EXIT_INPUT, "--detector needs --mode detect"),
    (["score", "{corpus}", "-o", "{tmp}/o.csv", "--sequence-fps", "12"], EXIT_INPUT,
     "--sequence-fps needs --sequences"),
    (["score", "{corpus}", "-o", "{tmp}/o.csv", "--ray-workers", "2", "--ray-attempts", "1"],
     EXIT_INPUT, "--ray-workers, --ray-attempts need --ray"),
    (["score", "--ray", "{corpus}/gray.png", "-o", "{tmp}/d"], EXIT_INPUT,
     "is not a cluster address: put --ray after the inputs"),
    (["score", "{corpus}", "-o", "{tmp}/o.csv", "--sequences", "--sequence-fps", "0"],
     EXIT_INPUT, "--sequence-fps must be > 0"),
    (["eval", "{corpus}", "--precision", "int8"], EXIT_INPUT,
     "--precision needs --engine tensorrt or auto"),
    (["score", "{corpus}/gray.png", "-o", "{tmp}/o.csv", "--precision", "fp32"], EXIT_INPUT,
     "--precision needs --engine tensorrt or auto"),
    (["live", "--source", "{corpus}/gray.png", "--headless", "--preview", "--http-host",
      "127.0.0.3"], EXIT_INPUT, "--preview, --http-host need --http-port"),
    (["llm", "calibrate", "{corpus}", "--limit", "20"], EXIT_INPUT, "--limit 20"),
    (["llm", "calibrate", "{corpus}", "--max-share", "0"], EXIT_INPUT,
     "--max-share: must be in (0, 1], got 0"),
    (["llm", "calibrate", "{corpus}", "--llm-policy", "fuse"], EXIT_INPUT,
     "unrecognized arguments: --llm-policy fuse"),  # it asks about every face: no policy
    (["llm", "calibrate", "{corpus}", "--llm"], EXIT_INPUT,
     "unrecognized arguments: --llm (see: edgefer llm calibrate --help)"),  # not a prefix
    (["score", "{corpus}/gray.png", "-o", "{tmp}/o.csv", "--over"], EXIT_INPUT,
     "unrecognized arguments: --over"),  # no abbreviations: a new flag would change them
    (["score", "{corpus}/gray.png", "-o", "{tmp}/o.csv", "--frobnicate"], EXIT_INPUT,
     "unrecognized arguments: --frobnicate"),
    (["score", "{corpus}/gray.png", "-o", "{tmp}/nowhere/o.csv"], EXIT_OUTPUT, "does not exist"),
    (["score", "{corpus}/gray.png", "-o", "{tmp}/o.csv", "--summary", "{tmp}/o.csv"], EXIT_INPUT,
     "--summary: unsupported output type '.csv'"),  # which of the command's outputs is wrong
    (["eval", "{corpus}", "--confusion-png", "{tmp}/m.svg"], EXIT_INPUT,
     "--confusion-png: unsupported output type '.svg'"),
    (["eval", "{tmp}/nothing"], EXIT_INPUT, "not found"),
    (["eval", "{corpus}", "--glob", "*.zzz"], EXIT_INPUT, "no images"),
    (["eval", "{corpus}", "--exclude-list", "{tmp}/none.csv"], EXIT_INPUT, "exclude list not found"),
    (["train", "{tmp}/nothing", "--val", "{tmp}/nothing", "--out", "{tmp}/run"], EXIT_INPUT,
     "not found"),
    (["train", "{corpus}", "--val", "{corpus}", "--out", "{tmp}/run", "--recipe", "{tmp}/r.toml"],
     EXIT_INPUT, "config file not found"),
    (["export", "{tmp}/a.pt", "{tmp}/b.pt", "--name", "pair", "--val", "{corpus}", "--recipe",
      "{tmp}/r.toml"], EXIT_INPUT, "2 checkpoints need 2 recipe files"),
    (["export", "{tmp}/a.pt", "--name", "vgg_s4", "--val", "{corpus}", "--recipe", "{tmp}/r.toml"],
     EXIT_OUTPUT, "model 'vgg_s4' exists in"),
    (["quantize", "--name", "vgg_s4_int8", "--val", "{corpus}"], EXIT_OUTPUT,
     "pass --overwrite to replace it"),
    (["quantize", "--model", "vgg_s4", "--name", "vgg_s4", "--val", "{corpus}", "--overwrite"],
     EXIT_INPUT, "is the model being quantized"),
    (["export", "{tmp}/a.pt", "--name", "../evil", "--val", "{corpus}", "--recipe", "{tmp}/r.toml"],
     EXIT_INPUT, "--name '../evil': use letters"),
    (["live", "--source", "{corpus}/full.mp4", "--headless", "--duration", "0"], EXIT_INPUT,
     "--duration: must be > 0 seconds"),
    (["live", "--source", "{corpus}/full.mp4", "--headless", "--fullscreen"], EXIT_INPUT,
     "--fullscreen needs a window (drop --headless)"),
    (["live", "--source", "{tmp}/missing.mp4", "--headless"], EXIT_INPUT, "no such file"),
    (["live", "--source", "{tmp}", "--headless"], EXIT_INPUT, "no images in"),
    (["live", "--source", "{corpus}/full.mp4", "--headless", "--events",
      "{corpus}/gray.png/events.jsonl"], EXIT_OUTPUT, "cannot write the events log"),
    (["kiosk", "--config", "{tmp}/missing.toml"], EXIT_INPUT, "config file not found"),
])
def test_bad_arguments(corpus, tmp_path, args, code, needle):
    result = run_cli(*[a.format(corpus=corpus, tmp=tmp_path) for a in args])
    assert_one_line_error(result, code, needle)
    assert result.stderr.strip().count("\n") == 0, result.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="other platforms always have a display")
def test_live_without_display_suggests_headless(corpus, tmp_path):
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY",
                                                           "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "-m", "edgefer", "live", "--source",
                             str(corpus / "full.mp4")], capture_output=True, text=True, env=env,
                            timeout=120)
    assert_one_line_error(result, EXIT_INPUT, "--headless")


def test_absent_camera_is_one_line(tmp_path):
    """No camera at index 99: edgefer's line only, without OpenCV's probe noise or a warning."""
    result = run_cli("live", "--camera", "99", "--headless", cwd=tmp_path)
    assert_one_line_error(result, EXIT_INPUT, "cannot open camera 99")
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_exporting_into_a_manifest_that_does_not_exist_is_refused(corpus, tmp_path):
    """``cp -r engines /tmp/mine`` makes /tmp/mine/manifest.json: a path one folder deeper
    would have become a manifest of one model and no detectors."""
    import subprocess

    env = {**os.environ, "EDGEFER_MANIFEST": str(tmp_path / "mine" / "engines" / "manifest.json")}
    result = subprocess.run([sys.executable, "-m", "edgefer", "export", str(tmp_path / "a.pt"),
                             "--name", "mine", "--val", str(corpus), "--recipe",
                             str(tmp_path / "r.toml")], capture_output=True, text=True, env=env,
                            timeout=120)
    assert_one_line_error(result, EXIT_MODEL, "no manifest at", "cp -r engines DIR")
    assert not (tmp_path / "mine").exists()


def test_missing_models_say_how_to_find_them(corpus, tmp_path):
    """What a plain ``pip install .`` meets: the package without the repository's engines/."""
    import subprocess

    env = {**os.environ, "EDGEFER_MANIFEST": str(tmp_path / "engines" / "manifest.json")}
    result = subprocess.run([sys.executable, "-m", "edgefer", "score", str(corpus / "gray.png"),
                             "-o", str(tmp_path / "o.csv")], capture_output=True, text=True,
                            env=env, timeout=120)
    assert_one_line_error(result, EXIT_MODEL, "model manifest not found", "pip install -e",
                          "EDGEFER_MANIFEST")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="checks the message shown when tensorrt is missing")
def test_build_without_tensorrt_says_what_would_help(tmp_path):
    from edgefer.backends.cuda import DRIVER_SIGNS

    result = run_cli("build")
    if any(Path(sign).exists() for sign in DRIVER_SIGNS):  # an NVIDIA driver: install TensorRT
        assert_one_line_error(result, EXIT_MISSING, "pip install 'edgefer[tensorrt]'")
    else:
        assert_one_line_error(result, EXIT_MODEL, "no NVIDIA GPU driver", "edgefer build and",
                              "ONNX Runtime runs the models on the CPU")


@pytest.mark.parametrize("given", ["recipe", "onnx"])
def test_exporting_a_file_that_is_no_checkpoint_is_one_line(corpus, tmp_path, given):
    pytest.importorskip("torch")
    from edgefer.manifest import load_model_entry

    (tmp_path / "recipe.toml").write_text('arch = "vgg_s"\n')
    path = tmp_path / "recipe.toml" if given == "recipe" else load_model_entry().file
    result = run_cli("export", str(path), "--name", "x", "--val", str(corpus),
                     "--recipe", str(tmp_path / "recipe.toml"))
    assert_one_line_error(result, EXIT_MODEL, "is not an edgefer checkpoint")
    assert "weights_only" not in result.stderr
