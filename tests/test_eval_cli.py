"""``edgefer eval`` end to end on a generated image folder (no research data needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def folder(tmp_path_factory, portrait):
    """Crops of the public-domain portrait, shifted and scaled, under two class folders."""
    import cv2

    root = tmp_path_factory.mktemp("evalset")
    rng = np.random.default_rng(0)
    for label, count in (("happy", 12), ("neutral", 8)):
        (root / label).mkdir()
        for i in range(count):
            dx, dy, size = rng.integers(-15, 15), rng.integers(-15, 15), rng.integers(200, 260)
            x0, y0 = 160 + dx, 130 + dy
            crop = portrait[y0:y0 + size, x0:x0 + size]
            cv2.imwrite(str(root / label / f"{label}_{i}.png"), crop)
    return root


def strict(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def test_eval_json_is_consistent(folder, tmp_path):
    out = tmp_path / "figures.json"
    result = run_cli("eval", str(folder), "--json", str(out), "--confusion-png",
                     str(tmp_path / "cm.png"))
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text(), parse_constant=strict)  # no NaN: browsers' JSON
    assert figures["n"] == 20
    matrix = np.array(figures["confusion_matrix"])
    assert matrix.sum() == 20
    assert figures["accuracy"] == pytest.approx(np.trace(matrix) / 20)
    assert figures["selective"][0]["coverage"] == 1.0
    assert set(figures["baselines"]) == {"random", "majority"}
    assert figures["baselines"]["majority"]["accuracy"] == pytest.approx(12 / 20)
    assert "restricted_to_present_classes" in figures  # only two classes present
    assert (tmp_path / "cm.png").stat().st_size > 5_000
    assert "selective prediction" in result.stdout


def test_a_reader_that_goes_away_costs_no_figures(folder, tmp_path):
    """`edgefer eval ... | head`: the report's reader closes the pipe before the report is
    printed; the figures are still written and the command still succeeds."""
    import os
    import subprocess
    import sys

    out = tmp_path / "figures.json"
    reader, writer = os.pipe()
    os.close(reader)  # the reader has gone before a line is printed
    try:
        result = subprocess.run([sys.executable, "-m", "edgefer", "eval", str(folder), "--json",
                                 str(out)], stdout=writer, stderr=subprocess.PIPE, text=True,
                                timeout=300)
    finally:
        os.close(writer)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(out.read_text())["n"] == 20


def test_eval_through_the_detector(folder, tmp_path):
    out = tmp_path / "figures.json"
    result = run_cli("eval", str(folder), "--mode", "detect", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["faces_found"] == 20
    assert "no face found" not in result.stdout


def test_eval_says_which_figures_count_the_missed_faces(folder, tmp_path):
    import shutil

    import cv2

    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    cv2.imwrite(str(mixed / "neutral" / "blank.png"), np.full((200, 200), 120, np.uint8))
    result = run_cli("eval", str(mixed), "--mode", "detect", "--json", str(tmp_path / "f.json"))
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "f.json").read_text())
    assert figures["faces_found"] == 20 and figures["n"] == 21
    caption = " ".join(result.stdout.split())
    assert ("no face found in 1 images: the model row's accuracy (and the label-set line) "
            "counts them as wrong") in caption
    assert f"{figures['accuracy_on_found_faces']:.4f}" in caption


def test_eval_cascade_against_a_stub_llm(folder, tmp_path):
    pytest.importorskip("openai")
    from tools.openai_stub import StubServer, StubState

    out = tmp_path / "cascade.json"
    with StubServer(StubState(answer=lambda face: "happy")) as server:
        result = run_cli("eval", str(folder), "--cascade", "--llm-base-url", server.base_url,
                         "--llm-model", "stub", "--json", str(out), "--markdown",
                         str(tmp_path / "c.md"))
        requests = len(server.state.requests)
    assert result.returncode == 0, result.stderr
    llm = json.loads(out.read_text())["llm"]
    assert llm["rows"]["llm"]["accuracy"] == pytest.approx(12 / 20)  # "happy" for every face
    assert llm["llm_stats"]["requests"] == requests == 1  # 20 faces: one batch
    assert len(llm["curve"]) == 21 and llm["curve"][-1]["accuracy"] == pytest.approx(12 / 20)
    assert "share sent to LLM" in (tmp_path / "c.md").read_text()
    held = llm["held_out"]
    for key in ("second_half_cnn", "second_half_cnn_recalibrated", "second_half_cascade"):
        assert 0 <= held[key]["accuracy"] <= 1
    assert held["chosen_share_on_first_half"] in [row["share_sent"] for row in llm["curve"]]
    assert held["chosen_policy_on_first_half"] in ("replace", "learned")
    low, high = held["repeated_splits"]["llm_contribution_range"]
    assert low <= held["llm_contribution"] <= high
    markdown = (tmp_path / "c.md").read_text()
    assert f"Over {held['repeated_splits']['splits']} different halves" in markdown
    assert "Every face asked and fused, out of fold" in markdown
    assert 0 <= held["all_faces_out_of_fold"]["fused_accuracy"] <= 1
    assert held["all_faces_out_of_fold"]["gain_standard_error"] >= 0
    assert "points (± one standard error over the faces)" in markdown


def test_eval_reads_a_zipped_or_tarred_dataset_in_place(folder, tmp_path):
    """An archive of the dataset (its folders under one top folder, as datasets are shipped),
    or a folder inside a tar.gz, gives the figures the folder gives."""
    import tarfile
    import zipfile

    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zipped, tarfile.open(tmp_path / "set.tgz", "w:gz") as tar:
        for path in sorted(folder.rglob("*.png")):
            zipped.write(path, f"dataset/{path.relative_to(folder)}")
            tar.add(path, f"both/test/{path.relative_to(folder)}")
        tar.add(next(folder.rglob("*.png")), "both/train/happy/other.png")

    def figures(dataset: str) -> dict:
        out = tmp_path / "figures.json"
        result = run_cli("eval", dataset, "--json", str(out))
        assert result.returncode == 0, result.stderr
        return json.loads(out.read_text())

    expected = figures(str(folder))
    for dataset in (archive, tmp_path / "set.tgz" / "both" / "test"):
        found = figures(str(dataset))
        assert (found["n"], found["accuracy"], found["confusion_matrix"]) == \
            (expected["n"], expected["accuracy"], expected["confusion_matrix"])


def test_a_file_that_is_no_dataset_is_one_line(tmp_path):
    (tmp_path / "labels.csv").write_text("a,b\n")
    assert_one_line_error(run_cli("eval", str(tmp_path / "labels.csv")), 2, "not a dataset",
                          "archive")


def test_an_llm_that_answers_nothing_leaves_the_cnn_figures(folder, tmp_path):
    """Nothing to compare: the CNN's figures are printed and written, then one line, exit 2."""
    pytest.importorskip("openai")
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "figures.json"
    result = run_cli("eval", str(folder), "--llm", "--llm-base-url", f"http://127.0.0.1:{port}/v1",
                     "--llm-model", "stub", "--json", str(out))
    assert_one_line_error(result, 2, "the LLM answered none of the 20 faces asked",
                          "requests failed")
    assert json.loads(out.read_text())["n"] == 20 and "edgefer eval" in result.stdout


def test_figures_are_filed_under_the_model_that_ran(folder, tmp_path):
    """The PyTorch engine runs an int8 entry's float source: the report names that model."""
    pytest.importorskip("torch")
    from edgefer.manifest import float_source, load_model_entry

    out = tmp_path / "figures.json"
    result = run_cli("eval", str(folder), "--engine", "torch", "--json", str(out))
    assert result.returncode == 0, result.stderr
    ran = float_source(load_model_entry()).name
    assert ran != load_model_entry().name
    assert json.loads(out.read_text())["model"] == ran and f"edgefer eval: {ran}" in result.stdout


def test_onnxruntime_gpu_without_a_gpu_provider_is_refused(folder, monkeypatch, capsys):
    """An ONNX Runtime without CUDA or TensorRT providers (the CPU package, as here; on a GPU
    machine the same is stood in) is refused in one line, not run on the CPU silently."""
    from edgefer.backends import select
    from edgefer.cli.main import main

    monkeypatch.setattr(select, "ort_gpu_providers", lambda: [])
    assert main(["eval", str(folder), "--engine", "onnxruntime-gpu"]) == 3
    (error,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "no CUDA or TensorRT provider" in error and "--engine onnxruntime" in error


@pytest.mark.parametrize("args, code, needles", [
    (["--json", "{tmp}/missing/x.json"], 4, ["output folder does not exist"]),
    (["--limit", "0"], 2, ["--limit", "must be >= 1"]),
    (["--ferplus-labels", "{tmp}/votes.csv"], 2, ["is not a FER+ label file"]),
    (["--ferplus-labels", "{tmp}/binary.csv"], 2, ["not a readable FER+ label file"]),
    (["--exclude-list", "{tmp}/binary.csv"], 2, ["not a readable CSV exclude list"]),
])
def test_bad_arguments_are_refused_before_evaluating(folder, tmp_path, args, code, needles):
    (tmp_path / "votes.csv").write_text("test_image,train_image\na.png,b.png\n")
    (tmp_path / "binary.csv").write_bytes(b"garbage\x00\xff\n")
    args = [a.format(tmp=tmp_path) for a in args]
    assert_one_line_error(run_cli("eval", str(folder), *args), code, *needles)


def test_an_exclude_list_that_matches_nothing_says_so(folder, tmp_path, caplog):
    from edgefer.training.evaluate import EvalOptions, load_dataset

    (tmp_path / "other.csv").write_text("path\nsomewhere/else.png\n")
    data = load_dataset(EvalOptions(data_dir=folder, exclude_list=tmp_path / "other.csv"))
    assert data.excluded == 0 and "none of the 1 names" in caplog.text
