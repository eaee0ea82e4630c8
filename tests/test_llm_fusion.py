"""The learned policy: fitting on synthetic answers, its file, the stage's use of it, and
``edgefer llm calibrate`` end to end against the OpenAI-protocol test server."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import run_cli

from edgefer.errors import ConfigError
from edgefer.llm.config import LlmConfig
from edgefer.llm.fusion import FusionModel, fusion_key, fusion_path, load_for
from edgefer.llm.stage import resolve_policy
from edgefer.training import cascade
from edgefer.training.metrics import accuracy


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, cascade.LlmAnswers]:
    """A CNN that is right 60% of the time, and an LLM that is right on classes 0-2 and
    answers class 6 for everything else (reliable on some classes, useless on others)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
    guess = np.where(rng.random(n) < 0.6, y, rng.integers(0, 7, n))
    logits = rng.normal(0, 1, (n, 7))
    logits[np.arange(n), guess] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    llm_labels = np.where(y <= 2, y, 6)
    llm_probs = np.full((n, 7), 0.02)
    llm_probs[np.arange(n), llm_labels] = 0.88
    return y, probs, cascade.LlmAnswers(llm_labels, llm_probs, np.ones((n, 2)), None)


def test_fusion_learns_where_the_llm_is_reliable_and_routes_there():
    y, probs, llm = synthetic(800, 0)
    model = cascade.fit_fusion(y, probs, llm, max_share=1.0)
    assert model.provenance["share_cap"] == 1.0  # asking won its out-of-fold test
    y2, probs2, llm2 = synthetic(800, 1)  # new faces
    recal = accuracy(y2, model.recalibrate(probs2).argmax(1))
    fused = accuracy(y2, cascade.learned_predictions(model, probs2, llm2, 1.0))
    replace = accuracy(y2, cascade.cascade_predictions(probs2, llm2.labels, 1.0))
    assert fused > recal + 0.15 and fused > replace
    # faces the CNN calls class 0-2 (where the LLM is reliable) rank above the others
    benefit = model.expected_benefit(probs2)
    assert benefit[probs2.argmax(1) <= 2].mean() > benefit[probs2.argmax(1) > 2].mean()
    # a face the CNN is sure of gains less from asking than one it cannot tell
    sure, unsure = np.eye(7)[[1]] * 0.97 + 0.005, np.full((1, 7), 1 / 7)
    assert model.expected_benefit(sure)[0] < model.expected_benefit(unsure)[0]


def test_an_endpoint_that_only_guesses_costs_little_and_is_asked_little():
    def guessing(seed: int) -> tuple[np.ndarray, np.ndarray, cascade.LlmAnswers]:
        y, probs, _ = synthetic(800, seed)
        guesses = np.random.default_rng(seed + 99).integers(0, 7, len(y))  # not y's seed
        distribution = np.eye(7)[guesses] * 0.86 + 0.02
        return y, probs, cascade.LlmAnswers(guesses, distribution, np.ones((len(y), 2)), None)

    model = cascade.fit_fusion(*guessing(5), max_share=1.0)
    share = model.provenance["share_sent_on_fitting_data"]
    y2, probs2, llm2 = guessing(15)  # new faces
    assert model.provenance["share_cap"] == 0.0  # asking lost its out-of-fold test
    assert share <= 0.2
    assert np.mean(model.expected_benefit(probs2) > model.benefit_threshold) <= 0.25
    recalibrated = accuracy(y2, model.recalibrate(probs2).argmax(1))
    assert accuracy(y2, cascade.learned_predictions(model, probs2, llm2, share)) >= recalibrated - 0.01


@pytest.mark.parametrize("seed", [0, 1])
def test_the_cnn_is_recalibrated_only_where_that_helps_out_of_fold(seed):
    y, probs, llm = synthetic(800, seed)
    # labels drawn from the CNN's own probabilities: nothing to learn, the CNN stays as it is
    own = (np.random.default_rng(seed + 50).random((len(y), 1)) > probs.cumsum(1)).sum(1)
    model = cascade.fit_fusion(own, probs, llm, max_share=1.0)
    assert not model.provenance["recalibrated"]
    np.testing.assert_allclose(model.recalibrate(probs), probs, atol=1e-6)
    # annotators who call every class-3 face class 6 (as FER+ calls weak expressions neutral)
    model = cascade.fit_fusion(np.where(y == 3, 6, y), probs, llm, max_share=1.0)
    y2, probs2, _ = synthetic(800, seed + 100)
    shifted = np.where(y2 == 3, 6, y2)
    assert model.provenance["recalibrated"]
    assert accuracy(shifted, model.recalibrate(probs2).argmax(1)) > accuracy(shifted, probs2.argmax(1)) + 0.02


def test_held_out_figures_report_the_spread_over_splits():
    y, probs, llm = synthetic(600, 4)
    held = cascade.held_out_figures(y, probs, llm, max_share=0.3, splits=3)
    spread = held["repeated_splits"]
    assert held["llm_contribution"] == cascade.held_out_report(y, probs, llm, 0, 0.3)["llm_contribution"]
    low, high = spread["llm_contribution_range"]
    assert spread["splits"] == 3 and low <= held["llm_contribution"] <= high
    assert low <= spread["llm_contribution_mean"] <= high and spread["llm_contribution_standard_error"] >= 0


def test_all_faces_out_of_fold_measures_what_the_answers_hold():
    y, probs, llm = synthetic(600, 6)
    reliable = cascade.all_faces_out_of_fold(y, probs, llm, repeats=2)
    noise = np.random.default_rng(7).integers(0, 7, len(y))
    guesses = cascade.LlmAnswers(noise, np.eye(7)[noise] * 0.86 + 0.02, np.ones((len(y), 2)), None)
    guessing = cascade.all_faces_out_of_fold(y, probs, guesses, repeats=2)
    assert reliable["gain"] > 0.15  # the LLM is right on three classes the CNN often misses
    assert abs(guessing["gain"]) < 0.02
    # a guessing endpoint's gain is within a few of its standard errors of zero; the reliable
    # one's many standard errors above it
    assert abs(guessing["gain"]) < 3 * guessing["gain_standard_error"] + 1e-9
    assert reliable["gain"] > 5 * reliable["gain_standard_error"]
    assert reliable["recalibrated_accuracy"] == pytest.approx(guessing["recalibrated_accuracy"])


def test_a_half_without_answers_fits_the_cnn_as_it_is():
    """Answers for a few faces only (an endpoint that mostly failed): halves without any
    answer give the prior, the CNN unchanged, instead of failing."""
    y, probs, llm = synthetic(60, 3)
    labels = np.full(len(y), -1)
    labels[:2] = llm.labels[:2]
    tokens = np.where(labels[:, None] >= 0, 1.0, 9.0) * np.ones((len(y), 2))
    sparse = cascade.LlmAnswers(labels, np.where(labels[:, None] >= 0, llm.probs, np.nan),
                                tokens, None)
    held = cascade.held_out_figures(y, probs, sparse, max_share=1.0, splits=3)
    assert 0 <= held["second_half_cnn"]["accuracy"] <= 1
    assert held["tokens_per_face_asked"] in ([1.0, 1.0], [0.0, 0.0])  # answered faces' only


def test_held_out_report_never_fits_on_the_faces_it_reports():
    y, probs, llm = synthetic(600, 2)
    held = cascade.held_out_report(y, probs, llm, seed=0, max_share=0.3)
    assert held["chosen_share_on_first_half"] <= 0.3
    assert held["second_half_learned"]["share"] <= 0.3
    _, rest = cascade.split_halves(y, 0)
    assert held["second_half_cnn"]["n"] == len(rest)
    curve = {row["share_sent"]: row for row in held["curve"]}
    assert curve[0.0]["learned"] == pytest.approx(held["second_half_cnn_recalibrated"]["accuracy"])


def test_fusion_file_round_trip_and_refusals(tmp_path, monkeypatch):
    y, probs, llm = synthetic(300, 3)
    model = cascade.fit_fusion(y, probs, llm, provenance={"llm_model": "m"})
    path = fusion_path("gpt-4o-mini", "open", str(tmp_path / "f.json"))
    model.save(path)
    loaded = FusionModel.load(path)
    np.testing.assert_allclose(loaded.fuse(probs, llm.probs), model.fuse(probs, llm.probs),
                               atol=1e-4)
    assert loaded.provenance["llm_model"] == "m"
    raw = json.loads(path.read_text())
    raw["fusion"] = raw["fusion"][:3]
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="shape"):
        FusionModel.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_for("m", "open", str(tmp_path / "missing.json"))
    assert fusion_key("qwen/Qwen2-VL 7B", "top2") != fusion_key("qwen/Qwen2-VL 7B", "open")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_for("m", "open") == (None, fusion_path("m", "open"))


def test_learned_policy_falls_back_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    policy, fusion, note = resolve_policy(LlmConfig(model="m", policy="learned"))
    assert (policy, fusion) == ("override", None) and "edgefer llm calibrate" in note
    y, probs, llm = synthetic(300, 4)
    cascade.fit_fusion(y, probs, llm).save(fusion_path("m", "top2"))
    policy, fusion, note = resolve_policy(LlmConfig(model="m", policy="learned"))
    assert policy == "learned" and fusion is not None and "learned" in note
    assert resolve_policy(LlmConfig(model="m", policy="fuse"))[0] == "fuse"
    never = dataclasses.replace(fusion, benefit_threshold=float("inf"))
    never.save(fusion_path("m", "top2"))
    assert "asks about no faces" in resolve_policy(LlmConfig(model="m", policy="learned"))[2]
    cascade.fit_fusion(y, probs, llm, provenance={"cnn_model": "vgg_s_int8"}).save(
        fusion_path("m", "top2"))
    assert resolve_policy(LlmConfig(model="m", policy="learned"), "vgg_s_int8")[0] == "learned"
    policy, fusion, note = resolve_policy(LlmConfig(model="m", policy="learned"), "other_cnn")
    assert (policy, fusion) == ("override", None) and "--model other_cnn" in note


@pytest.fixture(scope="module")
def folder(tmp_path_factory, portrait):
    """60 crops of the portrait under three class folders."""
    import cv2

    root = tmp_path_factory.mktemp("calibset")
    rng = np.random.default_rng(0)
    for label in ("happy", "neutral", "sad"):
        (root / label).mkdir()
        for i in range(20):
            dx, dy, size = rng.integers(-25, 25), rng.integers(-25, 25), rng.integers(180, 280)
            crop = portrait[130 + dy:130 + dy + size, 160 + dx:160 + dx + size]
            cv2.imwrite(str(root / label / f"{label}_{i}.png"), crop)
    return root


def test_calibrate_measures_fits_stores_and_resumes(folder, tmp_path):
    pytest.importorskip("openai")
    from tools.openai_stub import StubServer, StubState

    out, cache = tmp_path / "fusion.json", tmp_path / "answers.sqlite"
    args = ("llm", "calibrate", str(folder), "--llm-model", "stub", "--llm-prompt", "open",
            "--llm-cache", str(cache), "--out", str(out), "--json", str(tmp_path / "f.json"))
    with StubServer(StubState(answer=lambda face: ["happy", "neutral"])) as server:
        first = run_cli(*args, "--llm-base-url", server.base_url)
        asked = len(server.state.requests)
        again = run_cli(*args, "--llm-base-url", server.base_url)
        assert len(server.state.requests) == asked  # resumed from the cache: nothing re-asked
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    stored = json.loads(out.read_text())
    assert stored["provenance"]["llm_model"] == "stub" and stored["provenance"]["prompt"] == "open"
    assert stored["provenance"]["faces"] == 60 and stored["provenance"]["answered"] == 60
    figures = json.loads((tmp_path / "f.json").read_text())
    assert figures["accuracy"]["llm"] == pytest.approx(20 / 60)  # "happy" for every face
    assert "second_half_cnn_recalibrated" in figures["held_out"]
    assert "LLM confusion" in first.stdout
    # stored outside the user's fusion folder: the closing line says how to point at it
    assert f"--llm-policy learned --llm-model stub --llm-prompt open --llm-fusion {out}" \
        in first.stdout


def test_calibrate_refuses_when_too_few_faces_are_answered(folder, tmp_path):
    pytest.importorskip("openai")
    from tools.openai_stub import StubServer, StubState

    with StubServer(StubState(answer=lambda face: "contempt")) as server:
        result = run_cli("llm", "calibrate", str(folder), "--llm-model", "stub",
                         "--llm-base-url", server.base_url, "--llm-cache",
                         str(tmp_path / "a.sqlite"), "--out", str(tmp_path / "f.json"))
    assert result.returncode == 2 and "at least 50" in result.stderr
    assert "answers outside the seven classes" in result.stderr  # why none counted
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "f.json").exists()
