"""Image-folder datasets (``DIR/<class>/*.jpg``, the FER2013 layout) and FER+ vote files.

Labels follow ``Emotion`` order whatever the folder order is. Folders that name no edgefer
class (CK+'s ``contempt``, say) are skipped and logged, so a dataset with fewer classes, like
CK+48 without neutral, loads as is. A dataset may also be an archive of such a folder, or a
folder inside an archive (``fer2013.zip/test``), read in place as datasets are often shipped.
"""

from __future__ import annotations

import csv
import fnmatch
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefer.archives import is_archive, member_names, split_member
from edgefer.errors import InputError
from edgefer.sources import IMAGE_SUFFIXES, load_gray
from edgefer.types import EMOTIONS, canonical_label

log = logging.getLogger(__name__)



FERPLUS_VOTE_COLUMNS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
# every vote column of ferplus_labels.csv, in its order
FERPLUS_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                   "contempt", "unknown", "NF")


@dataclass(frozen=True)
class ImageFolder:
    """File paths and integer labels of an image-folder dataset; pixels are loaded on demand."""

    root: Path
    paths: tuple[Path, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray) -> ImageFolder:
        return ImageFolder(self.root, tuple(self.paths[i] for i in indices), self.labels[indices])


def scan_image_folder(
    root: str | Path, glob: str = "*", exclude: set[str] | None = None
) -> ImageFolder:
    """List ``root/<class>/**/<glob>`` images, leaving out those whose ``image_key`` is excluded.

    ``root`` may be an archive or a folder inside one: its images are listed in stored order
    (reading a compressed tar out of order is quadratic), after the folders that every image
    shares (``CK+48/`` in ``CK+48.zip``)."""
    root = Path(root)
    inside = _archive_root(root)
    images = _folder_images(root) if inside is None else _archive_images(*inside)
    paths: list[Path] = []
    labels: list[int] = []
    skipped: set[Path] = set()
    for class_dir, path in images:
        label = canonical_label(class_dir.name)
        if label is None:
            if class_dir not in skipped:
                log.warning("skipping folder %s: not one of %s", class_dir, ", ".join(EMOTIONS))
                skipped.add(class_dir)
            continue
        if not fnmatch.fnmatch(path.name, glob) or (exclude and image_key(path) in exclude):
            continue
        paths.append(path)
        labels.append(EMOTIONS.index(label))
    if not paths:
        raise InputError(f"no images matching {glob!r} under {root}/<class>/ "
                         f"(class folders must be named {', '.join(EMOTIONS)})")
    return ImageFolder(root, tuple(paths), np.asarray(labels, dtype=np.int64))


def _archive_root(root: Path) -> tuple[Path, str] | None:
    """``(archive, folder inside it)`` when ``root`` is an archive or leads into one."""
    if is_archive(root) and root.is_file():
        return root, ""
    return split_member(str(root))


def _folder_images(root: Path) -> Iterator[tuple[Path, Path]]:
    """``(class folder, image)`` pairs of a folder on disk, in name order."""
    if not root.is_dir():
        if root.is_file():
            raise InputError(f"not a dataset: {root} is a file (give a folder of <class>/ "
                             "folders, or a zip or tar archive of one)")
        raise InputError(f"dataset folder not found: {root}")
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield class_dir, path


def _archive_images(archive: Path, folder: str) -> Iterator[tuple[Path, Path]]:
    """``(class folder, image)`` pairs of the images under ``folder`` in ``archive``."""
    prefix = f"{folder}/" if folder else ""
    parts = [Path(name[len(prefix):]).parts for name in member_names(archive, IMAGE_SUFFIXES)
             if name.startswith(prefix)]
    shared = _shared_folders(parts)
    base = Path(archive, folder, *parts[0][:shared]) if parts else archive
    for image in parts:
        if len(image) > shared + 1:
            yield base / image[shared], Path(base, *image[shared:])


def _shared_folders(parts: list[tuple[str, ...]]) -> int:
    """How many leading folders every image shares that name no class (``CK+48/``), each
    leaving a class folder and a file below it."""
    shared = 0
    while parts and all(len(p) > shared + 2 for p in parts) \
            and len({p[shared] for p in parts}) == 1 and canonical_label(parts[0][shared]) is None:
        shared += 1
    return shared


def image_key(path: str | Path) -> str:
    """``<class>/<file name>``: how list files written against another root find our images.

    FER2013 file names repeat across classes (twice in Training), never within one.
    """
    parts = Path(path).parts
    return "/".join(parts[-2:])


def read_exclude_list(csv_path: str | Path) -> set[str]:
    """Image keys (see ``image_key``) from the first column of a CSV such as FER2013's
    ``test_train_duplicates.csv``, whichever folder its paths are relative to."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"exclude list not found: {csv_path}")
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            return {image_key(row[0]) for row in csv.reader(handle)
                    if row and row[0] not in ("test_image", "path")}
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{csv_path}: not a readable CSV exclude list ({err})") from None


def load_pixels(dataset: ImageFolder, size: tuple[int, int] = (48, 48)) -> np.ndarray:
    """All images of a dataset as one ``(N, H, W)`` uint8 array (FER2013 train is 66 MB)."""
    return np.stack([load_gray(path, size) for path in dataset.paths])


def read_ferplus_votes(csv_path: str | Path) -> dict[str, np.ndarray]:
    """FER+ vote counts over the seven classes (Emotion order), keyed by ``image_key``.

    Contempt, unknown and not-a-face votes are dropped; images with no remaining vote are left out.
    """
    votes: dict[str, np.ndarray] = {}
    for row, counts in _ferplus_rows(csv_path):
        kept = np.array([counts[FERPLUS_COLUMNS.index(c)] for c in FERPLUS_VOTE_COLUMNS],
                        dtype=np.float32)
        if kept.sum() > 0:
            votes[image_key(row["path"])] = kept
    return votes


def ferplus_majority(csv_path: str | Path) -> dict[str, str]:
    """FER+ naive majority label per image name (keyed by ``image_key`` and by ``ferplus_image_name``).

    Images whose majority is contempt, unknown or not-a-face are omitted.
    """
    majority: dict[str, str] = {}
    for row, counts in _ferplus_rows(csv_path):
        label = canonical_label(FERPLUS_COLUMNS[int(np.argmax(counts))])
        if label is not None:
            majority[image_key(row["path"])] = label
            majority[row["ferplus_image_name"]] = label
    return majority


def _ferplus_rows(csv_path: str | Path) -> Iterator[tuple[dict[str, str], np.ndarray]]:
    """Each image FER+ kept (those it dropped have no votes) with its ten vote counts; a file
    that is not ``ferplus_labels.csv`` (another CSV, a binary file) fails in one line."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"FER+ label file not found: {csv_path}")
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("path", "ferplus_image_name", *FERPLUS_COLUMNS)
                       if c not in (reader.fieldnames or ())]
            if missing:
                raise InputError(f"{csv_path} is not a FER+ label file (ferplus_labels.csv): "
                                 f"no column {', '.join(missing)}")
            for row in reader:
                if all(row[c] for c in FERPLUS_COLUMNS):
                    yield row, np.array([float(row[c]) for c in FERPLUS_COLUMNS])
    except (UnicodeDecodeError, csv.Error, ValueError) as err:
        raise InputError(f"{csv_path}: not a readable FER+ label file ({err})") from None


def relabel_ferplus(folder: ImageFolder, majority: dict[str, str]) -> tuple[ImageFolder, int]:
    """Labels replaced by the FER+ majority (see ``ferplus_majority``); images without a 7-class
    majority are dropped, and counted."""
    rows = [i for i, p in enumerate(folder.paths) if image_key(p) in majority]
    if not rows:
        raise InputError(f"no image of {folder.root} has a FER+ majority label")
    labels = np.array([EMOTIONS.index(majority[image_key(folder.paths[i])]) for i in rows])
    subset = folder.subset(np.array(rows))
    return ImageFolder(subset.root, subset.paths, labels), len(folder) - len(rows)


def stratified_sample(labels: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Indices of about ``limit`` items keeping class shares (each present class keeps >= 1)."""
    if limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = max(1, round(limit * len(members) / len(labels)))
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))
