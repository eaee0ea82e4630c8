"""``edgefer score --ray`` on a real Ray cluster on loopback (127.0.0.2, token authentication on).

One cluster (2 CPUs) serves the module. Inputs are short clips made from the public-domain
portrait, an image and a text file named ``.mp4``; the reference is a local ``edgefer score``
of the same inputs. Skipped when the ``ray`` extra is absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from edgefer.apps.distributed import Dataset, RayOptions, expand_uris, part_name, score_on_ray
from edgefer.apps.score import ScoreOptions
from edgefer.errors import InputError, OutputError
from edgefer.manifest import load_model_entry
from tests.conftest import ROOT

pq = pytest.importorskip("pyarrow.parquet")
CLIPS = {"a.mp4": 2.0, "b.mp4": 3.0, "c.mp4": 4.0}  # seconds at 30 frames/s


def edgefer(*args: str, env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgefer", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


def rows(path: Path) -> Counter:
    """Every row as a tuple, counted (order ignored, duplicates visible)."""
    return Counter(tuple(r.values()) for r in pq.read_table(path).to_pylist())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgefer.apps.demo import portrait_path, write_demo_clip

    folder = tmp_path_factory.mktemp("ray_inputs")
    for name, seconds in CLIPS.items():
        write_demo_clip(folder / name, seconds)
    shutil.copy(portrait_path(), folder / "portrait.jpg")
    return folder


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    from tools.ray_cluster import LocalCluster

    with LocalCluster(cpus=2) as running:
        yield running


@pytest.fixture(scope="module")
def reference(inputs: Path, tmp_path_factory: pytest.TempPathFactory, cluster) -> Counter:
    """A local ``edgefer score`` of the good inputs."""
    out = tmp_path_factory.mktemp("local") / "faces.parquet"
    result = edgefer("score", str(inputs), "-o", str(out), env=cluster.env)
    assert result.returncode == 0, result.stderr
    return rows(out)


@pytest.fixture(scope="module")
def scored(inputs: Path, tmp_path_factory: pytest.TempPathFactory, cluster):
    """One ``--ray`` run over the good inputs plus a bad one."""
    folder = tmp_path_factory.mktemp("ray_run")
    bad = folder / "broken.mp4"
    bad.write_text("not a video")
    out = folder / "dataset"
    result = edgefer("score", str(inputs), str(bad), "-o", str(out), "--summary",
                     str(folder / "summary.json"), "--ray", cluster.address, env=cluster.env)
    return result, out, folder


@pytest.mark.ray
def test_dataset_equals_a_local_run(scored, reference, inputs) -> None:
    result, out, folder = scored
    assert result.returncode == 1, result.stderr  # the bad input failed alone
    assert "broken.mp4" in result.stderr and "cannot open video" in result.stderr
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    assert len(parts) == len(CLIPS) + 1  # one per good input, none for the bad one
    assert rows(out) == reference  # pyarrow reads the folder as one table
    assert not (out / "_temporary").exists()
    import json

    document = json.loads((folder / "summary.json").read_text())
    assert document["model"] == load_model_entry().name and "llm" not in document
    summary = document["files"]
    assert set(summary) == {str(p) for p in inputs.iterdir()} | {str(folder / "broken.mp4")}
    assert "error" in summary[str(folder / "broken.mp4")]
    assert summary[str(inputs / "c.mp4")]["frames"] == 120


@pytest.mark.ray
def test_pandas_and_duckdb_read_the_dataset_as_one_table(scored, reference) -> None:
    pd = pytest.importorskip("pandas")
    duckdb = pytest.importorskip("duckdb")
    _, out, _ = scored
    frame = pd.read_parquet(out)
    assert len(frame) == sum(reference.values())
    query = duckdb.sql(f"SELECT * FROM '{out}/*.parquet'")
    assert len(query.fetchall()) == len(frame)
    assert query.columns == list(frame.columns) == pq.read_table(out).column_names


@pytest.mark.ray
def test_rerun_skips_complete_parts(scored, reference, cluster, tmp_path) -> None:
    _, out, _ = scored
    again = tmp_path / "dataset"
    shutil.copytree(out, again)
    lost = sorted(again.glob("part-*.parquet"))[0]  # as if the run had stopped before it
    lost.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in again.glob("part-*.parquet")}
    inputs = sorted({r[0] for r in reference})
    result = edgefer("score", *inputs, "-o", str(again), "--ray", cluster.address, env=cluster.env)
    assert result.returncode == 0, result.stderr
    assert f"skipped {len(inputs) - 1} input(s)" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in again.glob("part-*.parquet")
            if p.name != lost.name} == kept  # complete parts were not rewritten
    assert rows(again) == reference


@pytest.mark.ray
def test_a_killed_worker_is_retried_without_duplicates(inputs, reference, cluster,
                                                        tmp_path) -> None:
    out = tmp_path / "dataset"
    clips = [str(inputs / name) for name in CLIPS]
    command = [sys.executable, "-m", "edgefer", "score", *clips, str(inputs / "portrait.jpg"),
               "-o", str(out), "--ray", cluster.address]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=cluster.env, cwd=ROOT)
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and driver.poll() is None and time.monotonic() < deadline:
        busy = cluster.worker_pids("ray::_Worker.score")
        if busy and list(out.glob("part-*.parquet")):  # one input done, the next one under way
            time.sleep(0.3)
            victim = busy[0]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    _, stderr = driver.communicate(timeout=400)
    assert victim is not None, "the run ended before a worker could be killed"
    assert driver.returncode == 0, stderr
    assert "retry" in stderr and "worker died" in stderr
    assert rows(out) == reference  # no duplicate, no missing row
    assert not (out / "_temporary").exists()


@pytest.mark.ray
def test_archive_members_are_scored_like_files(inputs, cluster, tmp_path) -> None:
    """Workers read a zip's members in place: the rows of a local run, named through the zip."""
    import zipfile

    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        packed.write(inputs / "a.mp4", "day1/a.mp4")
        packed.write(inputs / "portrait.jpg", "portrait.jpg")
    local = tmp_path / "local.parquet"
    result = edgefer("score", str(archive), "-o", str(local), env=cluster.env)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "dataset"
    result = edgefer("score", str(archive), "-o", str(out), "--ray", cluster.address,
                     env=cluster.env)
    assert result.returncode == 0, result.stderr
    assert rows(out) == rows(local)
    assert {row["file"] for row in pq.read_table(out).to_pylist()} == {
        f"{archive}/day1/a.mp4", f"{archive}/portrait.jpg"}


@pytest.mark.ray
def test_the_summary_adds_up_every_workers_llm_counters(inputs, cluster, tmp_path) -> None:
    """Each worker asks the LLM itself; the driver's summary counts every face asked, as a
    local run's does, and names the model."""
    pytest.importorskip("openai")
    import json

    import cv2

    from tools.openai_stub import StubServer, StubState

    photos = tmp_path / "photos"
    photos.mkdir()
    portrait = cv2.imread(str(inputs / "portrait.jpg"))
    for shade, name in enumerate(("one.jpg", "two.jpg", "three.jpg")):  # not one cached answer
        cv2.imwrite(str(photos / name), cv2.convertScaleAbs(portrait, alpha=1.0, beta=8 * shade))
    with StubServer(StubState(answer=lambda face: "surprise")) as server:
        result = edgefer("score", str(photos), "-o", str(tmp_path / "dataset"), "--summary",
                         str(tmp_path / "summary.json"), "--llm", "--llm-base-url",
                         server.base_url, "--llm-model", "stub", "--llm-threshold", "1.0",
                         "--ray-workers", "2", "--ray-cpus-per-worker", "1",
                         "--ray", cluster.address, env=cluster.env)
        asked = sum(request["faces"] for request in server.state.requests)
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "summary.json").read_text())
    assert document["model"] == load_model_entry().name
    assert (document["llm"]["faces_asked"], document["llm"]["faces_answered"]) == (3, 3) == (
        asked, sum(f["llm_answers"] for f in document["files"].values()))


@pytest.mark.ray
def test_auto_starts_a_local_instance_on_loopback(inputs, cluster, tmp_path) -> None:
    """``--ray`` without an address starts its own instance (no cluster is registered in this
    RAY_TMPDIR), on 127.0.0.2; a worker asking for more CPUs than the machine has is
    clamped to what exists instead of waiting forever."""
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_")}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="efauto")
    try:
        out = tmp_path / "dataset"
        result = edgefer("score", str(inputs / "portrait.jpg"), "-o", str(out),
                         "--ray-cpus-per-worker", "64", "--ray", env=env)
        assert result.returncode == 0, result.stderr
        assert len(list(out.glob("part-*.parquet"))) == 1
        (raylet_log,) = Path(env["RAY_TMPDIR"]).glob("ray/session_latest/logs/raylet.out")
        assert "node:127.0.0.2" in raylet_log.read_text()  # the node's address resource
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


@pytest.mark.ray
def test_a_driver_without_the_token_is_refused(inputs, cluster, tmp_path) -> None:
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    result = edgefer("score", str(inputs / "portrait.jpg"), "-o", str(tmp_path / "d"),
                     "--ray", cluster.address, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "RAY_AUTH_MODE=token" in result.stderr
    assert not (tmp_path / "d").exists()  # refused by the cluster: nothing created


# -- without a cluster ------------------------------------------------------------------------
def test_part_names_are_stable_and_distinct() -> None:
    assert part_name("/data/a/clip.mp4") == part_name("/data/a/clip.mp4")
    assert part_name("/data/a/clip.mp4") != part_name("/data/b/clip.mp4")
    assert part_name("s3://bucket/x y.mp4").endswith("-x_y.parquet")


@pytest.mark.parametrize("spec", ["0", "rtsp://127.0.0.1/cam"])
def test_cameras_and_streams_are_refused(spec: str) -> None:
    with pytest.raises(InputError, match="cannot be scored with --ray"):
        expand_uris([spec])


def test_inputs_become_absolute_and_lists_are_read(tmp_path, monkeypatch) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "list.txt").write_text("a.jpg\n# a comment\nfile:///nowhere/b.mp4\n")
    monkeypatch.chdir(tmp_path)
    assert expand_uris(["a.jpg", "list.txt"]) == [str(tmp_path / "a.jpg"), str(tmp_path / "a.jpg"),
                                                 "file:///nowhere/b.mp4"]


def test_a_folder_uri_is_listed_as_a_local_folder_is(tmp_path, caplog) -> None:
    for name in ("a.jpg", "b/c.MP4", "__MACOSX/._a.jpg", "notes.txt", "d.zip"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    listed = expand_uris([f"file://{tmp_path}"])
    assert listed == [f"file://{tmp_path}/a.jpg", f"file://{tmp_path}/b/c.MP4"]
    assert "1 archive(s)" in caplog.text and "d.zip" in caplog.text


def test_sequences_send_a_folder_as_one_input(tmp_path, monkeypatch) -> None:
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "frame_0.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert expand_uris(["frames"], sequences=True) == [str(tmp_path / "frames")]
    assert expand_uris(["frames"]) == [str(tmp_path / "frames" / "frame_0.png")]


def prepared(folder: Path, settings: dict, overwrite: bool = False) -> Dataset:
    """``folder`` as ``score_on_ray`` prepares it: checked, then (cluster joined) created."""
    dataset = Dataset(str(folder))
    dataset.check(settings, overwrite)
    dataset.create(settings, overwrite)
    return dataset


def test_a_folder_scored_with_other_settings_is_refused(tmp_path) -> None:
    prepared(tmp_path / "d", {"stride": 1})
    prepared(tmp_path / "d", {"stride": 2})  # no part yet: free
    (tmp_path / "d" / "part-00000-a.parquet").write_bytes(b"")
    prepared(tmp_path / "d", {"stride": 2})  # same: a rerun
    with pytest.raises(InputError, match=r"other settings \(stride\)"):
        Dataset(str(tmp_path / "d")).check({"stride": 1}, overwrite=False)
    prepared(tmp_path / "d", {"stride": 1}, overwrite=True)
    assert not (tmp_path / "d" / "part-00000-a.parquet").exists()
    # a folder from before the default model was named ("model": null) is not refused for it
    prepared(tmp_path / "old", {"model": None, "stride": 1})
    (tmp_path / "old" / "part-00000-a.parquet").write_bytes(b"")
    Dataset(str(tmp_path / "old")).check({"model": "vgg_s4_int8", "stride": 1}, overwrite=False)


def test_an_unreadable_settings_file_is_said_and_overwrite_starts_again(tmp_path) -> None:
    prepared(tmp_path / "d", {"stride": 1})
    (tmp_path / "d" / "part-00000-a.parquet").write_bytes(b"")
    (tmp_path / "d" / "_edgefer.json").write_text("{torn")
    with pytest.raises(OutputError, match=r"_edgefer\.json is unreadable; --overwrite"):
        Dataset(str(tmp_path / "d")).check({"stride": 1}, overwrite=False)
    prepared(tmp_path / "d", {"stride": 1}, overwrite=True)
    assert not (tmp_path / "d" / "part-00000-a.parquet").exists()


def test_a_table_name_is_refused_and_checking_creates_nothing(tmp_path) -> None:
    """-o faces.csv with --ray would have become a folder named faces.csv; and the checks that
    run before the cluster is joined leave no folder for a refused run."""
    with pytest.raises(InputError, match=r"not a \.csv table \(e\.g\. .*/faces/\)"):
        Dataset(str(tmp_path / "faces.csv")).check({"stride": 1}, overwrite=False)
    Dataset(str(tmp_path / "faces.parquet")).check({"stride": 1}, overwrite=False)  # a dataset
    assert list(tmp_path.iterdir()) == []


def test_annotate_is_refused_before_any_work(tmp_path) -> None:
    options = ScoreOptions(output=tmp_path / "d", annotate=tmp_path / "a.mp4")
    with pytest.raises(InputError, match="--annotate is not available with --ray"):
        score_on_ray([str(tmp_path)], options, RayOptions(output=str(tmp_path / "d")))
    assert not (tmp_path / "d").exists()
