"""Zip and tar archives as inputs: real archives written here, read in place."""

from __future__ import annotations

import os
import struct
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

from edgefer.errors import InputError
from edgefer.sources import expand_inputs, open_source, read_image
from tests.test_sources_sinks import write_clip

SUFFIXES = ("zip", "tar", "tar.gz", "tgz", "tar.bz2", "tar.xz")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A clip, a photo and a note, in a folder tree to pack."""
    import cv2

    tree = tmp_path / "tree"
    (tree / "day1").mkdir(parents=True)
    write_clip(tree / "day1" / "clip.mp4")
    cv2.imwrite(str(tree / "photo.png"), np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3))
    (tree / "notes.txt").write_text("not media")
    return tree


def pack(tree: Path, archive: Path) -> Path:
    """``tree`` packed as ``archive``, members in the order photo.png, notes.txt, day1/clip.mp4
    (not sorted; tar members with ``tar -C tree .``'s leading ``./``)."""
    members = ["photo.png", "notes.txt", "day1/clip.mp4"]
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w") as packed:
            for name in members:
                packed.write(tree / name, name)
    else:
        with tarfile.open(archive, "w:" + {"gz": "gz", "tgz": "gz", "bz2": "bz2", "xz": "xz"}
                          .get(archive.name.rsplit(".", 1)[1], "")) as packed:
            for name in members:
                packed.add(tree / name, f"./{name}")
    return archive


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_members_are_inputs_read_in_place(files, tmp_path, suffix):
    archive = pack(files, tmp_path / f"batch.{suffix}")
    items = expand_inputs([str(archive)])
    assert items == [f"{archive}/photo.png", f"{archive}/day1/clip.mp4"]  # stored order, media only
    np.testing.assert_array_equal(read_image(items[0]), read_image(str(files / "photo.png")))
    before = temporary_copies()
    with open_source(items[1], stride=3) as source:
        frames = [frame.index for frame in source]
        assert source.name == items[1] and len(temporary_copies() - before) == 1
    assert frames == list(range(0, 30, 3))
    assert temporary_copies() == before  # the copy went with the source


def temporary_copies() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("edgefer-*"))


def test_folders_open_the_archives_in_them(files, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    archive = pack(files, folder / "b.tgz")
    (folder / "a.png").write_bytes((files / "photo.png").read_bytes())
    assert expand_inputs([str(folder)]) == [str(folder / "a.png"), f"{archive}/photo.png",
                                            f"{archive}/day1/clip.mp4"]


def test_bad_archives_and_members(files, tmp_path):
    archive = pack(files, tmp_path / "ok.zip")
    (tmp_path / "junk.zip").write_text("no zip")
    (tmp_path / "junk.tgz").write_text("no tar")
    assert expand_inputs([str(tmp_path / "junk.zip")]) == [str(tmp_path / "junk.zip")]
    with pytest.raises(InputError, match="not a zip file, or damaged"):
        open_source(str(tmp_path / "junk.zip"))
    with pytest.raises(InputError, match="not a tar file, or damaged"):
        open_source(str(tmp_path / "junk.tgz"))
    with pytest.raises(InputError, match="no such file"):
        open_source(f"{archive}/missing.jpg")
    with pytest.raises(InputError, match="is an archive"):
        open_source(str(archive))


def test_an_undecodable_video_member_leaves_no_copy(tmp_path):
    archive = tmp_path / "fake.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        packed.writestr("notes.mp4", "not a video")
    before = temporary_copies()
    with pytest.raises(InputError, match=f"cannot open video: {archive}/notes.mp4"):
        open_source(f"{archive}/notes.mp4")
    assert temporary_copies() == before


@pytest.mark.slow
def test_score_an_archive_like_its_files(demo_clip, tmp_path):
    """The CLI over a tar.gz gives the rows of the same files scored unpacked, named through
    the archive; a damaged archive beside it fails alone."""
    import csv

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "clip.mp4").write_bytes(demo_clip.read_bytes())
    from edgefer.apps.demo import portrait_path

    (tree / "face.jpg").write_bytes(portrait_path().read_bytes())
    archive = tmp_path / "batch.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(tree / "clip.mp4", "clip.mp4")
        packed.add(tree / "face.jpg", "face.jpg")
    (tmp_path / "junk.zip").write_text("no zip")
    unpacked = run_cli("score", str(tree / "clip.mp4"), str(tree / "face.jpg"), "-o",
                       str(tmp_path / "files.csv"))
    assert unpacked.returncode == 0, unpacked.stderr
    packed_run = run_cli("score", str(archive), str(tmp_path / "junk.zip"), "-o",
                         str(tmp_path / "archive.csv"))
    assert packed_run.returncode == 1, packed_run.stderr
    assert "junk.zip: cannot read archive" in packed_run.stderr

    def rows(name: str, prefix: str) -> list[list[str]]:
        with (tmp_path / name).open() as handle:
            return [[row[0].removeprefix(prefix), *row[1:]] for row in csv.reader(handle)][1:]

    assert rows("archive.csv", f"{archive}/") == rows("files.csv", f"{tree}/")
    assert len(rows("files.csv", "")) > 150


def test_live_refuses_an_archive(files, tmp_path):
    archive = pack(files, tmp_path / "batch.zip")
    result = run_cli("live", "--source", str(archive), "--headless")
    assert_one_line_error(result, 2, "is an archive")


@pytest.mark.slow
def test_sigterm_mid_member_removes_the_copy(demo_clip, tmp_path):
    """SIGTERM ends ``score`` as Ctrl-C does: exit 130, the table closed, no copy left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    archive = tmp_path / "clips.tar"
    with tarfile.open(archive, "w") as packed:
        for i in range(8):
            packed.add(demo_clip, f"clip{i}.mp4")
    temp = tmp_path / "temp"
    temp.mkdir()
    out = tmp_path / "faces.csv"
    process = subprocess.Popen([sys.executable, "-m", "edgefer", "score", str(archive), "-o",
                                str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "TMPDIR": str(temp)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and len(out.read_bytes()) > 20_000):
        time.sleep(0.05)
    assert process.poll() is None, "scoring finished before it could be stopped"
    assert list(temp.glob("edgefer-*.mp4"))  # a member is being read from its copy
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in stderr, stderr
    assert not list(temp.glob("edgefer-*"))
    assert out.read_text().endswith("\n")  # the table ends on a whole row


def test_a_copy_left_by_a_killed_run_goes_with_the_next_run(files, tmp_path, monkeypatch):
    """SIGKILL leaves no chance to delete a member's copy: the next edgefer process that makes
    one deletes the copies of processes that are gone, untouched for an hour, and no other's."""
    import subprocess
    import sys

    from edgefer import files as edgefer_files

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    edgefer_files._delete_orphans.cache_clear()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    orphan = temp / f"edgefer-{gone}-abc.mp4"
    orphan_folder = temp / f"edgefer-{gone}-input"
    alive = temp / f"edgefer-{os.getpid()}-def.mp4"
    unrelated = temp / "edgefer-notes.txt"
    recent = temp / f"edgefer-{gone}-ghi.mp4"  # its process may live in another PID namespace
    for path in (orphan, alive, unrelated, recent):
        path.write_bytes(b"x")
    orphan_folder.mkdir()
    (orphan_folder / "clip.mp4").write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for path in (orphan, orphan_folder, alive, unrelated):
        os.utime(path, (two_hours_ago, two_hours_ago))
    archive = pack(files, tmp_path / "b.tgz")
    with open_source(f"{archive}/day1/clip.mp4") as source:
        next(iter(source))
    assert not orphan.exists() and not orphan_folder.exists()
    assert alive.exists() and unrelated.exists() and recent.exists()


def test_macos_resource_forks_are_not_inputs(files, tmp_path):
    """Zips made on a Mac carry ``__MACOSX/._name`` twins, and Macs write ``._name`` onto other
    drives: named like images, they are not, and would fail every run."""
    archive = tmp_path / "mac.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        packed.write(files / "photo.png", "photo.png")
        packed.writestr("__MACOSX/._photo.png", b"\x00\x05\x16\x07")
        packed.writestr("._photo.png", b"\x00\x05\x16\x07")
    (files / "._photo.png").write_bytes(b"\x00\x05\x16\x07")
    assert expand_inputs([str(archive)]) == [f"{archive}/photo.png"]
    assert str(files / "._photo.png") not in expand_inputs([str(files)])


def unflagged_zip(archive: Path, members: dict[bytes, bytes]) -> Path:
    """A zip of ``members`` named by their raw bytes without the UTF-8 flag (bit 11), as Info-ZIP's
    ``zip`` 3.0 writes UTF-8 names on Linux (and old Windows tools cp437 ones). zipfile flags every
    name that is not ASCII, so each is written under an ASCII stand-in as long, then renamed in
    place in its local header (name at 30) and its central directory entry (name at 46)."""
    with zipfile.ZipFile(archive, "w") as packed:
        for i, (name, data) in enumerate(members.items()):
            packed.writestr(str(i).rjust(len(name), "x"), data)
    raw = bytearray(archive.read_bytes())
    entry = struct.unpack_from("<I", raw, len(raw) - 6)[0]  # the end record's directory offset
    for name in members:
        local = struct.unpack_from("<I", raw, entry + 42)[0]
        raw[local + 30:local + 30 + len(name)] = raw[entry + 46:entry + 46 + len(name)] = name
        entry += 46 + sum(struct.unpack_from("<3H", raw, entry + 28))  # name, extra, comment
    archive.write_bytes(raw)
    return archive


def test_zip_names_in_utf8_without_the_flag(tmp_path):
    """zipfile reads unflagged names as cp437 (``two p├⌐ople ≡ƒÿÇ.jpg``), but Info-ZIP's ``zip``
    writes UTF-8 there: such members are listed, opened and scored by their UTF-8 names, and a
    name whose bytes are not UTF-8 stays cp437."""
    import csv

    from edgefer.apps.demo import portrait_path

    utf8, cp437 = "sub/two péople 😀.jpg", "grün.jpg"
    photo = portrait_path().read_bytes()
    archive = unflagged_zip(tmp_path / "arc.zip",
                            {utf8.encode(): photo, cp437.encode("cp437"): photo})
    with zipfile.ZipFile(archive) as packed:
        assert [info.flag_bits & 0x800 for info in packed.infolist()] == [0, 0]
        assert packed.namelist() == [utf8.encode().decode("cp437"), cp437]
    members = [f"{archive}/{utf8}", f"{archive}/{cp437}"]
    assert expand_inputs([str(archive)]) == members
    for member in members:
        np.testing.assert_array_equal(read_image(member), read_image(str(portrait_path())))
    result = run_cli("score", members[0], "-o", str(tmp_path / "out.csv"))
    assert result.returncode == 0, result.stderr
    with (tmp_path / "out.csv").open(encoding="utf-8") as handle:
        assert [row["file"] for row in csv.DictReader(handle)] == [members[0]]
