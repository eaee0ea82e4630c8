"""Training for the live path and for FER+: live-framed crops (real BlazeFace on a real portrait),
capture degradations, FER+ targets and fine-tuning from given weights."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgefer.errors import ConfigError, InputError  # noqa: E402
from edgefer.training import datasets, live_crops, train, widen  # noqa: E402
from edgefer.training.recipe import Augment, Recipe  # noqa: E402
from edgefer.types import EMOTIONS  # noqa: E402


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory, portrait) -> Path:
    """``happy/`` holds the portrait's face cropped FER2013-style at 48x48; ``sad/`` a blank."""
    import cv2

    root = tmp_path_factory.mktemp("faces")
    face = cv2.cvtColor(portrait[60:360, 110:410], cv2.COLOR_BGR2GRAY)
    for label, image in (("happy", cv2.resize(face, (48, 48), interpolation=cv2.INTER_AREA)),
                         ("sad", np.full((48, 48), 128, np.uint8))):
        (root / label).mkdir()
        cv2.imwrite(str(root / label / f"{label}_0.png"), image)
    return root


def test_live_crops_frame_found_faces_and_keep_the_rest(face_folder, tmp_path):
    folder = datasets.scan_image_folder(face_folder)
    pixels, found = live_crops.live_framed_pixels(folder, live_crops.gray_spec(48), tmp_path)
    happy, sad = folder.labels.tolist().index(EMOTIONS.index("happy")), \
        folder.labels.tolist().index(EMOTIONS.index("sad"))
    assert found[happy] and not found[sad]
    original = datasets.load_pixels(folder)
    assert np.array_equal(pixels[sad], original[sad])  # no face: the original framing stays
    assert not np.array_equal(pixels[happy], original[happy])  # re-framed by the aligner
    assert pixels[happy].std() > 10  # a real face, not a black crop


def test_live_crops_are_cached_and_keyed_by_framing(face_folder, tmp_path, monkeypatch):
    folder = datasets.scan_image_folder(face_folder)
    first = live_crops.live_framed_pixels(folder, live_crops.gray_spec(48), tmp_path)

    def recompute(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(live_crops, "_compute", recompute)
    again = live_crops.live_framed_pixels(folder, live_crops.gray_spec(48), tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    with pytest.raises(AssertionError, match="recomputed"):  # another size is another cache entry
        live_crops.live_framed_pixels(folder, live_crops.gray_spec(40), tmp_path)


def test_a_first_live_framing_says_so_in_a_log_and_a_cached_one_is_quiet(face_folder, tmp_path,
                                                                         capsys):
    """Framing a folder takes minutes on FER2013's 28,709 images: a log file (no terminal)
    gets a line where it starts and ends, once; the validation folder, here the same, is
    then read from the cache without a word."""
    from edgefer.cli.train import RichObserver

    data = train.TrainData(str(face_folder), str(face_folder), crop_cache=str(tmp_path))
    with RichObserver() as observer:
        train.load_splits(Recipe(live_framing=1.0), data, observer)
    lines = [line for line in capsys.readouterr().out.splitlines() if "live framing" in line]
    assert [line.split(": ")[1].split()[0] for line in lines] == ["started", "done"]
    assert all(str(face_folder) in line for line in lines)
    with RichObserver() as observer:
        train.load_splits(Recipe(live_framing=1.0), data, observer)
    assert "live framing" not in capsys.readouterr().out


def test_the_recipe_sets_the_roll_live_crops_keep(face_folder, tmp_path):
    from edgefer.manifest import CropSpec

    def live(roll: float) -> np.ndarray:
        recipe = Recipe(live_framing=1.0, live_roll_tolerance=roll)
        return train.load_split(str(face_folder), "*", recipe, {}, None,
                                str(tmp_path)).live_pixels.numpy()

    kept = live(90.0)
    expected, _ = live_crops.live_framed_pixels(
        datasets.scan_image_folder(face_folder),
        live_crops.gray_spec(48, CropSpec(roll_tolerance=90.0)), tmp_path)
    assert np.array_equal(kept, expected)
    assert not np.array_equal(kept, live(0.0))  # the portrait's slight roll levelled


def test_degradations_off_change_nothing_and_on_change_images():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(8, 1, 48, 48, generator=generator)
    assert torch.equal(train.degrade(images, Augment(), generator), images.clamp(0, 1))
    blurred = train.degrade(images, Augment(blur_prob=1.0, blur_min_side=8), generator)
    # Downscaling and upscaling removes pixel-level detail: neighbours become alike.
    assert (blurred.diff(dim=3).abs().mean()) < 0.5 * images.diff(dim=3).abs().mean()
    noisy = train.degrade(torch.full((64, 1, 48, 48), 0.5), Augment(noise_std=0.1), generator)
    assert noisy.std() > 0.01 and float(noisy.min()) >= 0 and float(noisy.max()) <= 1


def test_live_framing_share_picks_live_crops_only_where_a_face_was_found():
    split = train.Split(pixels=torch.zeros(4, 2, 2, dtype=torch.uint8), labels=torch.zeros(4),
                        targets=torch.zeros(4, 7), live_pixels=torch.ones(4, 2, 2, dtype=torch.uint8),
                        live_found=torch.tensor([True, True, False, False]))
    batch = torch.arange(4)
    always, live = train.training_pixels(split, batch, 1.0, torch.Generator().manual_seed(0))
    assert always[:, 0, 0].tolist() == [1, 1, 0, 0] and live.tolist() == [True, True, False, False]
    never, _ = train.training_pixels(split, batch, 0.0, torch.Generator().manual_seed(0))
    assert never.sum() == 0


def write_votes(path: Path, folder: datasets.ImageFolder, majority: str) -> None:
    """A FER+-style vote file giving every image the same majority ``majority``."""
    columns = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
               "contempt", "unknown", "NF"]
    ferplus_name = {"neutral": "neutral", "happy": "happiness", "sad": "sadness"}[majority]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "ferplus_image_name", *columns])
        for i, image in enumerate(folder.paths):
            votes = [8 if c == ferplus_name else 0 for c in columns]
            votes[columns.index("unknown")] = 2
            writer.writerow([datasets.image_key(image), f"fer{i:07d}.png", *votes])


def test_ferplus_recipe_learns_and_is_selected_on_the_ferplus_majority(face_folder, tmp_path):
    votes = tmp_path / "ferplus.csv"
    write_votes(votes, datasets.scan_image_folder(face_folder), "neutral")
    recipe = Recipe(target_labels="ferplus", ferplus_weight=1.0, label_smoothing=0.0)
    data = train.TrainData(str(face_folder), str(face_folder), ferplus_csv=str(votes))
    train_split, val_split = train.load_splits(recipe, data)
    neutral = EMOTIONS.index("neutral")
    assert val_split.labels.tolist() == [neutral, neutral]  # folder said happy and sad
    assert torch.allclose(train_split.targets[:, neutral], torch.ones(2))
    with pytest.raises(InputError, match="--ferplus"):
        train.load_splits(recipe, train.TrainData(str(face_folder), str(face_folder)))


def test_fine_tuning_starts_from_the_given_weights(tmp_path):
    recipe = Recipe(epochs=1, batch_size=2, bf16=False, threads=1)
    source = train.new_state(recipe.replace(seed=7))
    torch.save({"recipe": recipe.to_dict(), "model": source.model.state_dict()}, tmp_path / "w.pt")
    state = train.new_state(recipe)
    train.load_initial_weights(state, tmp_path / "w.pt", recipe)
    for mine, theirs in zip(state.ema.state_dict().values(), source.model.state_dict().values(),
                            strict=True):
        assert torch.equal(mine, theirs)
    with pytest.raises(InputError, match="not found"):
        train.load_initial_weights(state, tmp_path / "missing.pt", recipe)


def test_a_wider_network_starts_from_a_narrower_ones_function(face_folder, tmp_path):
    narrow = Recipe(epochs=1, batch_size=2, bf16=False, threads=1)
    wide = narrow.replace(arch="vgg_m")
    split = train.load_splits(narrow, train.TrainData(str(face_folder), str(face_folder)))[0]
    source = train.new_state(narrow.replace(seed=7)).model.eval()
    torch.save({"recipe": narrow.to_dict(), "model": source.state_dict()}, tmp_path / "s.pt")
    state = train.new_state(wide)
    train.load_initial_weights(state, tmp_path / "s.pt", wide)
    inputs = (split.pixels.unsqueeze(1).float() / 255 - narrow.mean) / narrow.std
    with torch.no_grad():
        expected, got = source(inputs), state.ema(inputs)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=0.05 * float(expected.abs().max()))
    torch.save({"recipe": wide.to_dict(), "model": state.model.state_dict()}, tmp_path / "w.pt")
    with pytest.raises(InputError, match="cannot start this recipe's 'vgg_s'"):
        train.load_initial_weights(train.new_state(narrow), tmp_path / "w.pt", narrow)


def test_widening_keeps_the_function_exactly_without_noise_and_refuses_other_layouts():
    from edgefer import models

    source, target = models.build("vgg_s").eval(), models.build("vgg_m").eval()
    widen.widen_into(source, target, noise=0.0)
    inputs = torch.randn(4, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(target(inputs), source(inputs), atol=1e-4)
    assert not widen.can_widen(target, source)  # narrower
    assert not widen.can_widen(source, models.build("vgg_s", num_classes=8))  # other labels
    with pytest.raises(InputError, match="cannot widen"):
        widen.widen_into(target, source)


def test_distillation_targets_are_the_teachers_softened_probabilities(face_folder, tmp_path):
    recipe = Recipe(epochs=1, batch_size=2, bf16=False, threads=1, teacher_weight=1.0,
                    teacher_temperature=3.0)
    split = train.load_splits(recipe, train.TrainData(str(face_folder), str(face_folder)))[0]
    teacher = train.new_state(recipe.replace(seed=3)).model.eval()
    torch.save({"recipe": recipe.to_dict(), "model": teacher.state_dict()}, tmp_path / "t.pt")
    train.add_teacher_targets(split, recipe, (str(tmp_path / "t.pt"),))
    inputs = (split.pixels.unsqueeze(1).float() / 255 - recipe.mean) / recipe.std
    with torch.no_grad():
        logits = (teacher(inputs) + teacher(torch.flip(inputs, dims=[3]))) / 2
    expected = torch.softmax(logits / 3.0, dim=1)
    assert torch.allclose(split.teacher, expected, atol=1e-5)
    live = torch.zeros(2, dtype=torch.bool)
    assert torch.allclose(train.batch_targets(split, torch.arange(2), live, 1.0), expected, atol=1e-5)
    half = train.batch_targets(split, torch.arange(2), live, 0.5)
    assert torch.allclose(half, (split.targets + expected) / 2, atol=1e-5)
    with pytest.raises(InputError, match="--teacher"):
        train.add_teacher_targets(split, recipe, ())


def test_live_framed_samples_can_learn_the_teachers_reading_of_the_original_crop(face_folder,
                                                                                 tmp_path):
    recipe = Recipe(epochs=1, batch_size=2, bf16=False, threads=1, teacher_weight=1.0)
    split = train.load_splits(recipe, train.TrainData(str(face_folder), str(face_folder)))[0]
    split.live_pixels = torch.flip(split.pixels, dims=[1])  # a different framing of each image
    teacher = train.new_state(recipe.replace(seed=3)).model.eval()
    torch.save({"recipe": recipe.to_dict(), "model": teacher.state_dict()}, tmp_path / "t.pt")
    live, batch = torch.ones(2, dtype=torch.bool), torch.arange(2)
    targets = {}
    for framing in ("same", "original"):
        train.add_teacher_targets(split, recipe.replace(teacher_framing=framing),
                                  (str(tmp_path / "t.pt"),))
        targets[framing] = train.batch_targets(split, batch, live, 1.0)
        split.live_teacher = None
    assert torch.allclose(targets["original"], split.teacher)
    assert not torch.allclose(targets["same"], split.teacher)
    with pytest.raises(ConfigError, match="teacher_framing"):
        recipe.replace(teacher_framing="live")


def test_framing_figures_score_each_checkpoint_in_both_framings_and_their_ensemble(face_folder,
                                                                                   tmp_path):
    from tools.framing_figures import framing_figures

    recipe = Recipe(epochs=1, batch_size=2, bf16=False, threads=1)
    model = train.new_state(recipe.replace(seed=3)).model
    for name in ("a.pt", "b.pt"):
        torch.save({"recipe": recipe.to_dict(), "model": model.state_dict()}, tmp_path / name)
    checkpoints = [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    rows = framing_figures(checkpoints, str(face_folder), "*", str(tmp_path / "crops"))
    assert [row.name for row in rows] == [*checkpoints, "ensemble"]
    assert rows[0].own == rows[1].own == rows[2].own  # one model twice: the ensemble is that model
    assert rows[2].mean == (rows[2].own + rows[2].live) / 2
    assert all(value in (0.0, 0.5, 1.0) for row in rows for value in (row.own, row.live))
    assert len(list((tmp_path / "crops").glob("live_crops_*.npz"))) == 1  # one framing, once
    with pytest.raises(InputError, match="'ema'"):
        framing_figures([f"{checkpoints[0]}:ema"], str(face_folder), "*", str(tmp_path / "crops"))


def test_framing_figures_may_score_only_the_ensemble_unmirrored(face_folder, tmp_path):
    """An unmirrored pair costs what one mirror-averaged network costs: its row beside the
    networks as shipped, so that its paired difference from them is printed in one call."""
    from tools.framing_figures import framing_figures

    recipe = Recipe(epochs=1, batch_size=2, bf16=False, threads=1)
    for seed, name in ((3, "a.pt"), (4, "b.pt")):
        model = train.new_state(recipe.replace(seed=seed)).model
        torch.save({"recipe": recipe.to_dict(), "model": model.state_dict()}, tmp_path / name)
    checkpoints = [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    crops = str(tmp_path / "crops")
    mixed = framing_figures(checkpoints, str(face_folder), "*", crops, ensemble_mirror=False)
    mirrored = framing_figures(checkpoints, str(face_folder), "*", crops)
    unmirrored = framing_figures(checkpoints, str(face_folder), "*", crops, mirror=False)
    assert mixed[-1].name == "ensemble, unmirrored"
    for row, expected in zip(mixed, [*mirrored[:2], unmirrored[2]], strict=True):
        assert np.array_equal(row.correct, expected.correct)


def test_framing_figures_weigh_a_difference_against_its_paired_noise():
    from tools.framing_figures import FramingFigures

    base = FramingFigures("base", np.array([[True, True, False, False], [True, False, False, True]]))
    other = FramingFigures("other", np.array([[True, True, True, False], [True, False, True, False]]))
    assert (base.own, base.live, base.mean) == (0.5, 0.5, 0.5)
    # 2 crops gained, 1 lost of 8: +12.5 points; paired s.e. sqrt((3/8 - 1/64) / 8) = 21.2 points
    assert other.versus(base) == ("+12.50 ± 21.19 points against base "
                                  "(2 crops right only here, 1 only there)")


def test_framing_figures_frame_each_checkpoint_as_its_export_would(face_folder, tmp_path):
    """A network trained on live crops reads levelled faces, one trained on FER2013's own crops
    alone keeps their head roll: each is scored on its own live framing, the ensemble on the
    first's (as `edgefer export A B` frames it), and a last.pt's weight average by PATH:ema."""
    from tools.framing_figures import framing_figures

    own_only = Recipe(epochs=1, batch_size=2, bf16=False, threads=1)
    live_trained = own_only.replace(live_framing=0.5, live_roll_tolerance=0.0)
    model = train.new_state(own_only.replace(seed=3)).model.state_dict()
    torch.save({"recipe": own_only.to_dict(), "model": model}, tmp_path / "own.pt")
    torch.save({"recipe": live_trained.to_dict(), "model": model, "ema": model},
               tmp_path / "last.pt")
    checkpoints = [str(tmp_path / "own.pt"), f"{tmp_path / 'last.pt'}:ema"]
    rows = framing_figures(checkpoints, str(face_folder), "*", str(tmp_path / "crops"))
    assert [row.name for row in rows] == [*checkpoints, "ensemble"]
    assert len(list((tmp_path / "crops").glob("live_crops_*.npz"))) == 2  # a framing each
    assert np.array_equal(rows[2].correct, rows[0].correct)  # one network twice
    assert rows[2].versus(rows[0]).startswith("+0.00 ± 0.00 points against")
