"""A short real training run, exact resume, ONNX export with parity, manifest schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgefer.errors import InputError, ModelError  # noqa: E402
from edgefer.manifest import (  # noqa: E402
    FER2013_ROLL_TOLERANCE,
    update_manifest,
    validate_model_entry,
)
from edgefer.training import export, train  # noqa: E402
from edgefer.training.recipe import Augment, Recipe  # noqa: E402
from edgefer.types import EMOTIONS  # noqa: E402

RECIPE = Recipe(epochs=3, batch_size=16, lr=0.02, warmup_epochs=1, bf16=False, threads=1,
                ema_decay=0.5, augment=Augment(rotate_deg=5, erase_prob=0.0))


def synthetic_split(root: Path, per_class: int, seed: int) -> Path:
    """Seven classes that a CNN can tell apart: a bright blob at a class-specific place."""
    import cv2

    rng = np.random.default_rng(seed)
    for k, label in enumerate(EMOTIONS):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (48, 48)).astype(np.uint8)
            y, x = 8 + 5 * k + rng.integers(-2, 3), 10 + 4 * k + rng.integers(-2, 3)
            cv2.circle(image, (int(x), int(y)), 6, 230, -1)
            cv2.imwrite(str(root / label / f"{label}_{i}.png"), image)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> train.TrainData:
    root = tmp_path_factory.mktemp("synthetic")
    return train.TrainData(str(synthetic_split(root / "train", 24, 0)),
                           str(synthetic_split(root / "val", 6, 1)))


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> tuple[Path, list[train.EpochStats]]:
    out = tmp_path_factory.mktemp("run")
    return out, train.train(RECIPE, dataset, out)


def test_loss_falls_and_checkpoints_are_written(trained):
    out, stats = trained
    assert stats[-1].train_loss < stats[0].train_loss
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    assert len((out / "history.jsonl").read_text().splitlines()) == RECIPE.epochs
    assert Recipe.load(out / "recipe.toml") == RECIPE


def test_command_line_overrides_reach_the_run_recipe(dataset, tmp_path):
    from edgefer.cli.main import main
    from edgefer.files import to_toml

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(to_toml(RECIPE.to_dict()))
    out = tmp_path / "run"
    assert main(["train", dataset.train_dir, "--val", dataset.val_dir, "--recipe", str(recipe),
                 "--epochs", "1", "--seed", "7", "--out", str(out)]) == 0
    assert Recipe.load(out / "recipe.toml") == RECIPE.replace(epochs=1, seed=7)


def test_resume_without_a_run_is_refused_before_the_data_loads(tmp_path, capsys):
    """--resume into a folder with no last.pt fails at once, naming the file, and creates no
    folder: the data (minutes to load for FER2013) is never read; here it does not even exist."""
    from edgefer.cli.main import main

    out = tmp_path / "run"
    missing = str(tmp_path / "no-such-data")
    assert main(["train", missing, "--val", missing, "--out", str(out), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_folder_is_continued_or_replaced_only_when_asked(dataset, tmp_path, capsys,
                                                                monkeypatch):
    """Training into a folder that holds a run is refused without --resume or --overwrite (it
    would replace its checkpoints); --resume without --recipe continues with the run's own.
    Each epoch is one printed line, also where output is no terminal (a log file)."""
    from edgefer.cli.main import main
    from edgefer.files import to_toml

    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(variable, raising=False)  # output is no terminal, as in a log file
    monkeypatch.setenv("COLUMNS", "80")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(to_toml(RECIPE.replace(epochs=1).to_dict()))
    out = tmp_path / "run"
    train_args = ["train", dataset.train_dir, "--val", dataset.val_dir, "--out", str(out)]
    assert main([*train_args, "--recipe", str(recipe)]) == 0
    epoch_lines = [line for line in capsys.readouterr().out.splitlines() if "epoch" in line]
    assert len(epoch_lines) == 1 and epoch_lines[0].rstrip().endswith(("s", "best"))
    before = (out / "last.pt").read_bytes()
    assert main([*train_args, "--recipe", str(recipe)]) == 4
    assert (out / "last.pt").read_bytes() == before
    assert main([*train_args, "--resume", "--epochs", "2"]) == 0
    assert len((out / "history.jsonl").read_text().splitlines()) == 2
    assert Recipe.load(out / "recipe.toml").epochs == 2  # the next --resume continues to 2
    assert len((out / "command.txt").read_text().splitlines()) == 2  # both commands recorded
    assert main([*train_args, "--resume"]) == 0  # done: says so, trains nothing
    assert main([*train_args, "--resume", "--epochs", "1"]) == 2  # never shortened
    assert Recipe.load(out / "recipe.toml").epochs == 2
    assert len((out / "history.jsonl").read_text().splitlines()) == 2
    assert len((out / "command.txt").read_text().splitlines()) == 2  # the two that trained
    assert main([*train_args, "--recipe", str(recipe), "--overwrite"]) == 0
    assert len((out / "history.jsonl").read_text().splitlines()) == 1  # a new run's history
    assert len((out / "command.txt").read_text().splitlines()) == 1


def test_a_refused_run_leaves_no_run_folder(dataset, tmp_path):
    from edgefer.cli.main import main

    out = tmp_path / "run"
    assert main(["train", dataset.train_dir, "--val", str(tmp_path / "nowhere"), "--out",
                 str(out)]) == 2
    assert not out.exists()


def test_a_training_set_smaller_than_a_batch_is_refused(dataset, tmp_path):
    with pytest.raises(InputError, match="fewer than one batch"):
        train.train(RECIPE.replace(batch_size=1024), dataset, tmp_path / "run")


def test_a_missing_class_is_trained_with_a_warning(tmp_path, caplog):
    root = synthetic_split(tmp_path / "train", 4, 0)
    for image in (root / "disgust").iterdir():
        image.unlink()
    data = train.TrainData(str(root), str(synthetic_split(tmp_path / "val", 2, 1)))
    train.train(RECIPE.replace(epochs=1, batch_size=8), data, tmp_path / "run")
    assert any("no training images of disgust" in r.getMessage() for r in caplog.records)


def test_sharpness_aware_gradient_is_taken_uphill_and_leaves_the_weights():
    """On f(w) = sum(a * w**2) / 2 the gradient is a * w: SAM's must be a * (w + rho * g / |g|)."""
    weights = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    curvature = torch.tensor([1.0, 3.0, 10.0])
    model = torch.nn.Module()
    model.weights = weights
    state = train.RunState(model, model, torch.optim.SGD([weights], lr=0.1))

    def loss():
        return (curvature * weights ** 2).sum() / 2

    loss().backward()
    plain = weights.grad.clone()
    train.sharpness_aware_gradient(state, 0.5, loss)
    start = torch.tensor([1.0, -2.0, 0.5])
    torch.testing.assert_close(weights.detach(), start, rtol=0, atol=0)
    torch.testing.assert_close(weights.grad, curvature * (start + 0.5 * plain / plain.norm()))


def test_a_sharpness_aware_recipe_trains_to_other_weights(dataset, trained, tmp_path):
    stats = train.train(RECIPE.replace(sam_rho=0.05), dataset, tmp_path)
    assert stats[-1].train_loss < stats[0].train_loss
    plain = torch.load(trained[0] / "last.pt", weights_only=True)["model"]
    sam = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert any(not torch.equal(sam[key], plain[key]) for key in plain)


class StopAfter:
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def preparing(self, what, done, total):
        pass

    def epoch_started(self, epoch, epochs, steps):
        pass

    def step_done(self, loss, lr):
        pass

    def epoch_done(self, stats):
        if stats.epoch == self.epochs:
            raise KeyboardInterrupt


def test_resume_is_exact(dataset, trained, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train.train(RECIPE, dataset, tmp_path, observer=StopAfter(2))
    resumed = train.train(RECIPE, dataset, tmp_path, resume=True)
    assert [s.epoch for s in resumed] == [3]
    straight = torch.load(trained[0] / "last.pt", weights_only=True)["model"]
    again = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    for key in straight:
        torch.testing.assert_close(again[key], straight[key], rtol=0, atol=0)


def test_device_cuda_without_a_gpu_is_a_clear_error(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU build, here or not
    with pytest.raises(InputError, match="sees no CUDA GPU"):
        train.train(RECIPE, dataset, tmp_path, device="cuda")
    assert not (tmp_path / "last.pt").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA build of torch and a GPU")
def test_a_run_started_on_the_gpu_resumes_on_the_cpu(dataset, trained, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train.train(RECIPE, dataset, tmp_path, observer=StopAfter(2), device="cuda")
    saved = torch.load(tmp_path / "last.pt", weights_only=True)  # no map_location needed
    assert all(tensor.device.type == "cpu" for tensor in saved["model"].values())
    resumed = train.train(RECIPE, dataset, tmp_path, resume=True, device="cpu")
    assert [s.epoch for s in resumed] == [3]
    history = [line for line in (tmp_path / "history.jsonl").read_text().splitlines() if line]
    assert len(history) == RECIPE.epochs
    # The same batches and augmentations on both devices: the GPU run learns what the CPU run
    # learned, up to floating-point order (not bit for bit).
    cpu_stats = trained[1]
    assert abs(resumed[-1].train_loss - cpu_stats[-1].train_loss) < 0.1


def test_resume_refuses_a_different_recipe(dataset, trained):
    from edgefer.errors import InputError

    with pytest.raises(InputError, match="recipe differs in lr"):
        train.train(RECIPE.replace(lr=0.5), dataset, trained[0], resume=True)


def test_resume_accepts_another_thread_count(dataset, trained, tmp_path):
    """A run started on one core may continue in a session with more (same recipe otherwise)."""
    with pytest.raises(KeyboardInterrupt):
        train.train(RECIPE, dataset, tmp_path, observer=StopAfter(2))
    threads = RECIPE.threads + 1
    resumed = train.train(RECIPE.replace(threads=threads, epochs=4), dataset, tmp_path, resume=True)
    assert [s.epoch for s in resumed] == [3, 4]


@pytest.fixture(scope="module")
def exported(trained, dataset, tmp_path_factory) -> export.ExportReport:
    engines = tmp_path_factory.mktemp("engines")
    return export.export_checkpoint([trained[0] / "best.pt"], "toy", dataset.val_dir, "*", engines)


def test_onnx_export_parity_and_dynamic_batch(exported):
    import onnx
    import onnxruntime as ort

    assert exported.parity_max_abs_diff <= export.PARITY_TOLERANCE
    model = onnx.load(str(exported.onnx_path))
    assert model.opset_import[0].version >= 17
    onnx.checker.check_model(model, full_check=True)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 48, 48]
    session = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    for n in (1, 3, 17):
        out = session.run(None, {"input": np.zeros((n, 1, 48, 48), np.float32)})[0]
        assert out.shape == (n, 7)
    assert exported.temperature > 0


def test_manifest_entry_is_valid_and_reloads(exported, tmp_path):
    from edgefer.manifest import REPOSITORY, load_model_entry

    entry = export.manifest_entry(exported, ["recipes/x.toml"], "val", "*")
    validate_model_entry(entry)
    manifest = exported.onnx_path.parent / "manifest.json"
    update_manifest("toy", entry, manifest)
    loaded = load_model_entry(None, manifest)
    loaded.verify()
    assert loaded.classes == EMOTIONS and loaded.input.height == 48
    # data paths relative to the repository (the checkout, wherever the manifest lies: here a
    # scratch folder), never absolute
    root = REPOSITORY
    for key in ("train_dir", "val_dir"):
        recorded = entry["train"]["data"][key]
        assert not Path(recorded).is_absolute()
        assert (root / recorded).resolve() == Path(getattr(exported_data(exported), key)).resolve()


def test_an_export_states_only_the_license_it_is_given(exported):
    """Weights a user trained are not the edgefer authors': no license is assumed."""
    assert export.manifest_entry(exported, ["r.toml"], "val", "*")["license"].startswith(
        "not stated")
    stated = export.manifest_entry(exported, ["r.toml"], "val", "*", license_text="CC-BY-4.0")
    assert stated["license"] == "CC-BY-4.0"


@pytest.mark.parametrize("live_framing, live_roll, roll", [
    (0.0, 0.0, FER2013_ROLL_TOLERANCE), (0.5, 0.0, 0.0), (0.5, 15.0, 15.0)])
def test_the_framing_follows_what_the_network_learnt(live_framing, live_roll, roll):
    # own crops only: the roll FER2013's crops show is read as is; live crops as they were framed
    recipe = RECIPE.replace(live_framing=live_framing, live_roll_tolerance=live_roll)
    assert export.input_spec(recipe.to_dict()).crop.roll_tolerance == roll


def exported_data(report: export.ExportReport) -> train.TrainData:
    return train.TrainData(**report.members[0].data)


def test_checkpoints_hold_only_plain_types(trained):
    """Both checkpoints load with ``weights_only=True``: no pickled code or classes inside."""
    for name in ("last.pt", "best.pt"):
        saved = torch.load(trained[0] / name, map_location="cpu", weights_only=True)
        assert saved["recipe"] == RECIPE.to_dict()


def test_shipped_weights_load_without_unpickling_code():
    from edgefer.backends.torch import load_checkpoint
    from edgefer.manifest import float_source, load_model_entry

    entry = float_source(load_model_entry())
    module, saved = load_checkpoint(entry.file.parent / entry.raw["pytorch_file"])
    assert set(saved) == {"model", "recipe"} and module is not None


class Opaque:
    """Unpickling an instance means importing and running this module's code."""


def test_a_checkpoint_with_code_is_refused(tmp_path):
    from edgefer.backends.torch import load_checkpoint

    path = tmp_path / "opaque.pt"
    torch.save({"model": {}, "recipe": Opaque()}, path)
    with pytest.raises(ModelError, match="not an edgefer checkpoint"):
        load_checkpoint(path)


def test_a_file_without_weights_is_not_a_checkpoint(tmp_path):
    from edgefer.backends.torch import load_checkpoint

    path = tmp_path / "empty.pt"
    torch.save({"recipe": {"arch": "vgg_s", "input_size": 48}}, path)
    with pytest.raises(ModelError, match="not an edgefer checkpoint"):
        load_checkpoint(path, "ema")


@pytest.mark.parametrize(("change", "match"), [
    (lambda e: e.pop("sha256"), "lacks 'sha256'"),
    (lambda e: e["input"].pop("std"), "lacks 'std'"),
    (lambda e: e.update(classes=list(reversed(EMOTIONS))), "classes"),
    (lambda e: e.update(temperature=0), "temperature"),
    (lambda e: e["metrics"].update(bad={"value": 1}), "command"),
])
def test_manifest_schema_rejects(exported, change, match):
    entry = export.manifest_entry(exported, ["recipes/x.toml"], "val", "*")
    change(entry)
    with pytest.raises(ModelError, match=match):
        validate_model_entry(entry)


def test_export_of_the_weight_average_ships_the_average(trained, dataset, tmp_path):
    """``--weights ema`` exports a last.pt's weight average, not its final weights."""
    report = export.export_checkpoint([trained[0] / "last.pt"], "avg", dataset.val_dir, "*",
                                      tmp_path, weights="ema")
    saved = torch.load(trained[0] / "last.pt", weights_only=True)
    shipped = torch.load(report.weights_path, weights_only=True)["model"]
    assert any(not torch.equal(saved["ema"][k], saved["model"][k]) for k in shipped)
    for key, value in shipped.items():
        torch.testing.assert_close(value, saved["ema"][key], rtol=0, atol=0)
    assert report.parity_max_abs_diff <= export.PARITY_TOLERANCE


def test_flip_averaged_export_is_mirror_invariant(trained, dataset, tmp_path):
    import onnxruntime as ort

    report = export.export_checkpoint([trained[0] / "best.pt"], "flip", dataset.val_dir, "*",
                                      tmp_path, tta="flip")
    assert report.parity_max_abs_diff <= export.PARITY_TOLERANCE and report.tta == "flip"
    session = ort.InferenceSession(str(report.onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(3, 1, 48, 48)).astype(np.float32)
    direct = session.run(None, {"input": x})[0]
    mirrored = session.run(None, {"input": x[..., ::-1].copy()})[0]
    np.testing.assert_allclose(direct, mirrored, atol=1e-5)


def test_ensemble_export_averages_its_members_and_reloads(trained, dataset, tmp_path):
    """Two networks export as one graph whose logits are the mean of theirs; the shipped .pt
    reloads as the same ensemble and the manifest names how each member was trained."""
    import onnxruntime as ort

    from edgefer.backends.torch import load_checkpoint

    members = [trained[0] / "best.pt", trained[0] / "last.pt"]  # the weight average, the final
    report = export.export_checkpoint(members, "pair", dataset.val_dir, "*", tmp_path)
    assert report.parity_max_abs_diff <= export.PARITY_TOLERANCE and len(report.members) == 2
    x = np.random.default_rng(0).normal(size=(5, 1, 48, 48)).astype(np.float32)
    with torch.inference_mode():
        alone = [load_checkpoint(path)[0](torch.from_numpy(x)).numpy() for path in members]
        reloaded = load_checkpoint(report.weights_path)[0](torch.from_numpy(x)).numpy()
    assert not np.allclose(alone[0], alone[1], atol=1e-3)  # two different networks
    session = ort.InferenceSession(str(report.onnx_path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], np.mean(alone, axis=0),
                               atol=1e-4)
    np.testing.assert_allclose(reloaded, np.mean(alone, axis=0), atol=1e-5)
    entry = export.manifest_entry(report, ["recipes/a.toml", "recipes/b.toml"], "val", "*")
    validate_model_entry(entry)
    assert [m["recipe"] for m in entry["train"]["members"]] == ["recipes/a.toml", "recipes/b.toml"]
    assert entry["arch"] == f"{RECIPE.arch} + {RECIPE.arch}"


def test_ensemble_of_networks_that_read_differently_is_refused(trained, dataset, tmp_path):
    from edgefer.errors import InputError

    saved = torch.load(trained[0] / "best.pt", weights_only=True)
    other = tmp_path / "other.pt"
    torch.save({**saved, "recipe": {**saved["recipe"], "std": 0.3}}, other)
    with pytest.raises(InputError, match="cannot form one ensemble"):
        export.export_checkpoint([trained[0] / "best.pt", other], "mix", dataset.val_dir, "*",
                                 tmp_path)


def test_an_exported_ensemble_is_not_a_member_or_a_starting_point(trained, dataset, tmp_path):
    from edgefer.errors import InputError

    pair = export.export_checkpoint([trained[0] / "best.pt", trained[0] / "last.pt"], "pair",
                                    dataset.val_dir, "*", tmp_path).weights_path
    with pytest.raises(InputError, match="already an ensemble"):
        export.export_checkpoint([pair], "again", dataset.val_dir, "*", tmp_path)
    with pytest.raises(InputError, match="ensemble of 2 networks"):
        train.train(RECIPE, train.TrainData(dataset.train_dir, dataset.val_dir, init_from=str(pair)),
                    tmp_path / "run")


def test_the_manifest_records_no_absolute_path(tmp_path):
    """A path typed relative (from the repository, as the README's commands run) is kept as
    typed; an absolute one is made relative to the repository."""
    root = tmp_path / "repo"
    assert export.recorded_path("../shared/data/fer2013/test", root) == "../shared/data/fer2013/test"
    assert export.recorded_path(str(tmp_path / "data" / "val"), root) == "../data/val"


def test_export_refuses_a_recipe_file_of_another_network(trained, dataset, tmp_path, caplog):
    """The recipe file is the provenance the manifest records: one describing another network
    (here vgg_m) is refused before any file is written; one that trained it otherwise is said
    (another learning rate), but not for what `edgefer train` overrides (--epochs)."""
    from edgefer.files import to_toml

    other = tmp_path / "other.toml"
    other.write_text(to_toml(RECIPE.replace(arch="vgg_m").to_dict()))
    same = tmp_path / "same.toml"
    same.write_text(to_toml(RECIPE.replace(epochs=90).to_dict()))  # the epochs may differ
    engines = tmp_path / "engines"
    with pytest.raises(InputError, match="arch 'vgg_m' there, 'vgg_s' in the checkpoint"):
        export.export_checkpoint([trained[0] / "best.pt"], "x", dataset.val_dir, "*", engines,
                                 recipe_files=[str(other)])
    assert not engines.exists() or not list(engines.iterdir())
    report = export.export_checkpoint([trained[0] / "best.pt"], "x", dataset.val_dir, "*",
                                      engines, recipe_files=[str(same)])
    assert report.onnx_path.is_file()
    assert "differs from the recipe" not in caplog.text
    (tmp_path / "lr.toml").write_text(to_toml(RECIPE.replace(lr=RECIPE.lr / 2).to_dict()))
    export.export_checkpoint([trained[0] / "best.pt"], "y", dataset.val_dir, "*", engines,
                             recipe_files=[str(tmp_path / "lr.toml")])
    assert "differs from the recipe" in caplog.text and "in lr:" in caplog.text


def test_quantize_writes_an_int8_entry_that_names_its_calibration(exported, dataset, caplog):
    """The int8 copy reloads, agrees mostly with its float source, and its entry says on how
    many images and which data it was calibrated; too few images are warned."""
    from edgefer.manifest import load_model_entry

    manifest = exported.onnx_path.parent / "manifest.json"
    update_manifest("toy", export.manifest_entry(exported, ["recipes/x.toml"], "val", "*"),
                    manifest)
    source = load_model_entry("toy", manifest)
    target, figures = export.quantize_int8(source, "toy_int8", dataset.val_dir, "*",
                                           manifest.parent)
    entry = export.quantized_entry(source, target, figures, "edgefer quantize ...")
    validate_model_entry(entry)
    update_manifest("toy_int8", entry, manifest)
    load_model_entry("toy_int8", manifest).verify()
    images = len(export.validation_folder(dataset.val_dir, "*", None).labels)
    assert f"calibrated on {images} validation images" in entry["quantization"]
    assert entry["metrics"]["val_accuracy"]["data"].endswith(" *")
    assert 0 <= figures["val_accuracy"] <= 1 and figures["agreement_with_float"] > 0.5
    assert f"calibrated on {images} images only" in caplog.text  # the dataset is tiny
