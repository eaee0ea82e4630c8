"""Image-folder scanning, exclude lists and FER+ votes on generated files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefer.errors import InputError
from edgefer.training import datasets as data
from edgefer.types import canonical_label


def make_folder(root: Path, counts: dict[str, int], prefix: str = "img") -> Path:
    import cv2

    rng = np.random.default_rng(0)
    for label, count in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cv2.imwrite(str(root / label / f"{prefix}_{label}_{i}.png"),
                        rng.integers(0, 255, (48, 48), dtype=np.uint8))
    return root


def test_scan_orders_labels_by_emotion_and_skips_unknown(tmp_path, caplog):
    root = make_folder(tmp_path, {"neutral": 2, "angry": 1, "contempt": 3})
    folder = data.scan_image_folder(root)
    assert len(folder) == 3
    assert sorted(folder.labels.tolist()) == [0, 6, 6]
    assert "contempt" in caplog.text


def test_glob_and_exclude(tmp_path):
    root = make_folder(tmp_path / "test", {"happy": 3})
    make_folder(tmp_path / "test", {"happy": 2}, prefix="other")
    assert len(data.scan_image_folder(root, "img_*")) == 3
    exclude_csv = tmp_path / "dups.csv"
    exclude_csv.write_text("test_image,identical_train_images,same_class\n"
                           "test/happy/img_happy_0.png,train/happy/x.png,True\n")
    excluded = data.read_exclude_list(exclude_csv)
    assert len(data.scan_image_folder(root, "img_*", excluded)) == 2


@pytest.mark.parametrize(("path", "error"), [("missing", "not found"), ("empty", "no images")])
def test_scan_errors(tmp_path, path, error):
    (tmp_path / "empty" / "happy").mkdir(parents=True)
    with pytest.raises(InputError, match=error):
        data.scan_image_folder(tmp_path / path)


def test_ferplus_votes_and_majority(tmp_path):
    csv_path = tmp_path / "ferplus_labels.csv"
    header = ("path,usage,fer2013_row,dup_group_size,match,fer2013_class,ferplus_image_name,"
              "neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n")
    csv_path.write_text(header
                        + "test/angry/a.jpg,PrivateTest,1,1,unique,angry,fer1.png,2,0,0,0,8,0,0,0,0,0\n"
                        + "test/sad/b.jpg,PrivateTest,2,1,unique,sad,fer2.png,0,0,0,1,0,0,0,9,0,0\n")
    votes = data.read_ferplus_votes(csv_path)
    np.testing.assert_array_equal(votes["angry/a.jpg"], [8, 0, 0, 0, 0, 0, 2])
    majority = data.ferplus_majority(csv_path)
    assert majority["angry/a.jpg"] == "angry"
    assert majority["fer1.png"] == "angry"
    assert "sad/b.jpg" not in majority  # contempt majority has no FER2013 class


def test_stratified_sample_keeps_shares():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    picked = data.stratified_sample(labels, 100, seed=1)
    assert np.bincount(labels[picked]).tolist() == [60, 30, 10]
    assert len(np.unique(picked)) == len(picked)


@pytest.mark.parametrize(("name", "expected"), [("Happiness", "happy"), ("anger", "angry"),
                                                ("contempt", None), ("surprised", "surprise")])
def test_canonical_label(name, expected):
    assert canonical_label(name) == expected


def test_images_with_non_ascii_names_load(tmp_path):
    import cv2

    (tmp_path / "happy").mkdir()
    cv2.imencode(".png", np.full((60, 60), 200, np.uint8))[1].tofile(
        str(tmp_path / "happy" / "lächeln ünïcode.png"))
    folder = data.scan_image_folder(tmp_path)
    pixels = data.load_pixels(folder)
    assert pixels.shape == (1, 48, 48) and pixels[0, 0, 0] == 200
