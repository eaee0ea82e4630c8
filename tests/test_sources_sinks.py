"""Real video files written and read back; sinks written and read back."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edgefer.errors import InputError, OutputError
from edgefer.files import write_json_atomic
from edgefer.sinks import ROW_COLUMNS, TableSink, check_output
from edgefer.sources import expand_inputs, open_source, read_image


def write_clip(path, frames=30, fps=10.0, size=(64, 48), fourcc="mp4v"):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), i * 8 % 255, np.uint8))
    writer.release()
    return path


def test_video_frames_and_timestamps(tmp_path):
    clip = write_clip(tmp_path / "c.mp4")
    with open_source(str(clip)) as source:
        frames = list(source)
        assert source.fps == pytest.approx(10.0)
    assert [f.index for f in frames] == list(range(30))
    np.testing.assert_allclose([f.timestamp_s for f in frames], np.arange(30) / 10.0, atol=1e-3)


@pytest.mark.parametrize(("stride", "max_fps", "expected"), [
    (3, None, list(range(0, 30, 3))),
    (1, 5.0, list(range(0, 30, 2))),
    (2, 2.5, list(range(0, 30, 4))),
])
def test_sampling(tmp_path, stride, max_fps, expected):
    clip = write_clip(tmp_path / "c.mp4")
    with open_source(str(clip), stride=stride, max_fps=max_fps) as source:
        assert [f.index for f in source] == expected


@pytest.mark.parametrize(("stride", "max_fps"), [(1, 4.0), (2, 3.0), (3, None), (1, 12.0)])
def test_a_clip_and_its_extracted_frames_are_sampled_alike(tmp_path, stride, max_fps):
    import cv2

    clip = write_clip(tmp_path / "c.mp4")
    folder = tmp_path / "frames"
    folder.mkdir()
    for frame in open_source(str(clip)):
        cv2.imwrite(str(folder / f"frame_{frame.index}.png"), frame.image)
    with open_source(str(clip), stride=stride, max_fps=max_fps) as video:
        from_video = [f.index for f in video]
    with open_source(str(folder), stride=stride, max_fps=max_fps, sequence_fps=10.0) as sequence:
        from_sequence = [f.index for f in sequence]
    assert from_sequence == from_video
    if max_fps:  # never more than max_fps frames per second
        assert min(np.diff(from_video)) / 10.0 >= 1 / max_fps - 1e-6


def test_bad_videos(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path in (fake, empty):
        with pytest.raises(InputError, match="cannot open video"):
            open_source(str(path))
    with pytest.raises(InputError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))


def cut_in_half(path):
    data = path.read_bytes()
    cut = path.with_name(f"cut{path.suffix}")
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_truncated_mp4_is_a_clean_error(tmp_path):
    """OpenCV writes the MP4 index at the end: half a file has none, nothing can be decoded."""
    cut = cut_in_half(write_clip(tmp_path / "c.mp4", frames=60))
    with pytest.raises(InputError, match="cannot open video"):
        open_source(str(cut))


def test_truncated_avi_yields_what_decodes(tmp_path):
    """An AVI is read chunk by chunk: the first half of the frames survive the cut."""
    cut = cut_in_half(write_clip(tmp_path / "c.avi", frames=60, fourcc="MJPG"))
    with open_source(str(cut)) as source:
        frames = list(source)
    assert 0 < len(frames) < 60
    assert [f.index for f in frames] == list(range(len(frames)))
    assert source.damage is not None and f"ended after frame {len(frames)} of 60" in source.damage
    with open_source(str(write_clip(tmp_path / "whole.avi", frames=60, fourcc="MJPG"))) as whole:
        assert len(list(whole)) == 60 and whole.damage is None


def test_a_damaged_input_is_scored_with_a_warning(tmp_path):
    """What survives is scored; the report and the summary say what was lost."""
    from conftest import run_cli

    cut = cut_in_half(write_clip(tmp_path / "c.avi", frames=60, fourcc="MJPG"))
    result = run_cli("score", str(cut), "-o", str(tmp_path / "t.csv"), "--summary",
                     str(tmp_path / "s.json"))
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads((tmp_path / "s.json").read_text())["files"].values()
    assert "truncated or corrupt" in entry["warning"] and entry["frames"] < 60
    assert result.stderr.count("WARNING edgefer") == 1  # one, not one per frame


def test_images_of_every_kind(tmp_path):
    import cv2

    gray16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.zeros((20, 30, 4), np.uint8))
    cv2.imwrite(str(tmp_path / "nön ascii.jpg"), np.zeros((20, 30, 3), np.uint8))
    for name in ("g16.png", "rgba.png", "nön ascii.jpg"):
        image = read_image(str(tmp_path / name))
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    (tmp_path / "bad.jpg").write_text("no")
    with pytest.raises(InputError, match="cannot decode"):
        read_image(str(tmp_path / "bad.jpg"))


def test_avif_photos_are_images(tmp_path):
    """Listed as photos and decoded; an OpenCV build without the codec (the PyPI wheel has it)
    reports such a file as undecodable, in one clear error, instead."""
    import cv2

    picture = np.zeros((32, 48, 3), np.uint8)
    picture[:, 24:] = 200
    try:
        ok, data = cv2.imencode(".avif", picture)
    except cv2.error:
        ok, data = False, None
    avif = tmp_path / "photo.avif"
    avif.write_bytes(data.tobytes() if ok else b"\x00\x00\x00\x1cftypavif")
    assert expand_inputs([str(tmp_path)]) == [str(avif)]
    if not ok:
        with pytest.raises(InputError, match="cannot decode image"):
            read_image(str(avif))
        return
    assert np.abs(read_image(str(avif)).astype(int) - picture).mean() < 8


def test_expand_inputs_recurses(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    write_clip(tmp_path / "a" / "b" / "x.mp4")
    (tmp_path / "a" / "y.jpg").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("")
    assert [p.split("/")[-1] for p in expand_inputs([str(tmp_path / "a"), "0"])] == \
        ["x.mp4", "y.jpg", "0"]


def rows(n, file="f"):
    text = {c: "neutral" for c in ROW_COLUMNS if c.endswith(("label", "source"))}  # typed as written
    return [{c: 0 for c in ROW_COLUMNS} | text | {"file": file, "frame": i} for i in range(n)]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_table_sinks_roundtrip(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    with TableSink(path) as sink:
        sink.write(rows(3))
        sink.write(rows(2))
    if suffix == ".csv":
        with path.open() as handle:
            read = list(csv.DictReader(handle))
        assert list(read[0]) == list(ROW_COLUMNS)
    elif suffix == ".jsonl":
        read = [json.loads(line) for line in path.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        read = pq.read_table(path).to_pylist()
    assert len(read) == 5


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_rows_are_on_disk_before_close(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    sink = TableSink(path)
    sink.write(rows(4))
    text = path.read_text()
    assert text.count("\n") == 4 + (suffix == ".csv")
    sink.close()


def test_output_checks(tmp_path):
    existing = tmp_path / "o.csv"
    existing.write_text("keep me")
    with pytest.raises(OutputError, match="--overwrite"):
        check_output(existing, False, (".csv",))
    assert existing.read_text() == "keep me"
    with pytest.raises(InputError, match=r"unsupported output type '\.xlsx'"):
        check_output(tmp_path / "o.xlsx", False, (".csv",))
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "nope" / "o.csv", False, (".csv",))


def test_atomic_json(tmp_path):
    path = tmp_path / "s.json"
    write_json_atomic(path, {"a": np.float32(1.5), "b": np.arange(2)})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1]}
    assert list(tmp_path.iterdir()) == [path]


def test_a_parquet_table_without_rows_has_the_schema(tmp_path):
    """No face found still writes the table (so a --ray part marks the input as done), typed
    like any other part."""
    import pyarrow.parquet as pq

    from edgefer.sinks import parquet_schema

    path = tmp_path / "empty.parquet"
    TableSink(path).close()
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.schema == parquet_schema()


def test_a_folder_says_which_photos_it_cannot_read(tmp_path, caplog):
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (tmp_path / "notes.txt").write_text("not a photo")
    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / "a.png")]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "1 photo under" in warning and ".heic" in warning and "convert them to JPEG" in warning


def test_a_sequence_says_what_it_leaves_out(tmp_path, caplog):
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"frame_{i}.png"), np.zeros((20, 20, 3), np.uint8))
    write_clip(tmp_path / "clip.mp4")
    (tmp_path / "sub").mkdir()
    with open_source(str(tmp_path)) as source:
        assert len(list(source)) == 3
    assert "left out of the sequence" in caplog.text and "clip.mp4, sub" in caplog.text
