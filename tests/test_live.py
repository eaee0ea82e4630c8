"""The live loop driven headless by a paced file source; overlay pixels; reconnects; HTTP;
SIGTERM; kiosk configuration."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgefer.annotate import COLORS, Hud, draw_faces, draw_hud
from edgefer.apps.kiosk import load_config
from edgefer.apps.live import LiveOptions, LiveSession
from edgefer.apps.outputs import OutputOptions
from edgefer.apps.web.server import HttpOptions
from edgefer.apps.window import DisplayOptions
from edgefer.capture import CaptureOptions, LatestFrameReader
from edgefer.errors import ConfigError, InputError, OutputError
from edgefer.sources import Source, open_source
from edgefer.types import Faces, LabelSource
from tools.ray_cluster import free_port

HEADLESS = DisplayOptions(headless=True)


def test_paced_headless_loop_accounts_for_every_frame(demo_clip):
    """Every captured frame is processed or counted as dropped (how fast is for tools/bench.py)."""
    options = LiveOptions(capture=CaptureOptions(str(demo_clip), realtime=True), display=HEADLESS)
    stats = LiveSession(options).run()
    assert stats.frames > 0 and stats.frames + stats.dropped == 150
    assert len(stats.latencies_ms) == stats.frames and min(stats.latencies_ms) > 0


def test_unpaced_file_drops_frames_instead_of_queueing(demo_clip):
    """Decoding outruns detection: the newest frame wins and the others are counted dropped."""
    options = LiveOptions(capture=CaptureOptions(str(demo_clip)), display=HEADLESS)
    stats = LiveSession(options).run()
    assert stats.frames + stats.dropped == 150
    assert stats.dropped > 0 and stats.frames > 0


def test_a_folder_of_frames_is_a_stream(demo_clip, tmp_path):
    """Frames extracted to ``frame_<i>.png`` play in number order (``frame_2`` before
    ``frame_10``) at 30 frames/s, and the live loop tracks the face through them."""
    import cv2

    capture = cv2.VideoCapture(str(demo_clip))
    frames = [capture.read()[1] for _ in range(45)]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"frame_{i}.png"), frame)
    with open_source(str(tmp_path)) as source:
        read = list(source)
    assert [f.index for f in read] == list(range(45)) and source.fps == 30.0
    with open_source(str(tmp_path), sequence_fps=15.0) as slower:
        assert [f.timestamp_s for f in slower][:3] == [0.0, 1 / 15, 2 / 15]
    assert all(np.array_equal(f.image, frame) for f, frame in zip(read, frames, strict=True))
    options = LiveOptions(capture=CaptureOptions(str(tmp_path), realtime=True), display=HEADLESS)
    stats = LiveSession(options).run()
    assert stats.frames + stats.dropped == 45 and stats.faces >= stats.frames > 0


def test_overlay_is_drawn():
    image = np.zeros((200, 300, 3), np.uint8)
    faces = Faces(np.array([[50, 60, 150, 160]]), np.ones(1), np.zeros((1, 6, 2)))
    faces.probs[0, 3] = 1.0
    faces.smoothed_probs[0, 3] = 1.0
    faces.smoothed_labels[0] = 3
    faces.track_ids[0] = 7
    faces.llm_labels[0] = 3
    faces.llm_probs[0] = np.eye(7)[3]  # the LLM's own confidence fills the bar
    faces.final_labels[0] = 3
    faces.label_sources[0] = LabelSource.LLM
    draw_faces(image, faces)
    assert tuple(image[100, 50]) == COLORS["happy"]  # the box's left edge
    assert tuple(image[100, 100]) == (0, 0, 0)  # inside stays untouched
    assert (image[60:75, 130:150] == (255, 0, 255)).all(axis=2).any()  # the LLM mark
    assert (image[162:165, 51:150] == COLORS["happy"]).all(axis=2).all()  # a full confidence bar
    draw_hud(image, Hud(fps=29.9, latency_ms=12.0))
    assert image[5:25, 5:100].max() == 255  # HUD text


def _ink_height(image: np.ndarray) -> int:
    rows = np.nonzero((image > 128).any(axis=(1, 2)))[0]
    return int(rows[-1] - rows[0] + 1)


@pytest.mark.parametrize("height", [480, 720, 1080])
def test_hud_and_labels_scale_with_the_frame(height):
    """Text keeps the same share of the frame from 480p to 1080p (legible on both)."""
    width = height * 16 // 9
    hud = draw_hud(np.zeros((height, width, 3), np.uint8), Hud(fps=29.9, latency_ms=12.0))
    box = height // 3
    faces = Faces(np.array([[width // 3, height // 2, width // 3 + box, height // 2 + box]]),
                  np.ones(1), np.zeros((1, 6, 2)))
    faces.probs[0, 6] = faces.smoothed_probs[0, 6] = 1.0
    faces.smoothed_labels[0] = faces.final_labels[0] = 6
    label = draw_faces(np.zeros((height, width, 3), np.uint8), faces)[: height // 2]
    for text in (hud[: height // 4, : width // 2], label):
        assert 0.025 < _ink_height(text) / height < 0.06  # ~4% of the frame: 19 px at 480p


class TwentyFrames(Source):
    """The first 20 frames of a file, tagged with the opening they came from: a camera that
    stops sending (live, so that capture reconnects rather than treating it as a file's end)."""

    def __init__(self, path: str, opening: int) -> None:
        self._inner = open_source(path)
        self.opening = opening
        self.live = True

    def __iter__(self):
        for i, frame in enumerate(self._inner):
            if i == 20:
                return
            yield dataclasses.replace(frame, source=f"opening {self.opening}")

    def close(self) -> None:
        self._inner.close()


class FlakyOpener:
    """Opens the file, except that the 2nd opening fails: a camera unplugged and plugged back.

    Each test makes its own, so no state carries from one test to the next.
    """

    def __init__(self) -> None:
        self.openings = 0
        self.failures = 0

    def __call__(self, path: str) -> Source:
        self.openings += 1
        if self.openings == 2:
            self.failures += 1
            raise InputError("camera 0 disappeared")
        return TwentyFrames(path, self.openings)


def test_source_that_fails_then_recovers(demo_clip):
    options = CaptureOptions(str(demo_clip), reconnect=True, reconnect_initial_s=0.05)
    opener = FlakyOpener()
    reader = LatestFrameReader(options, opener=opener).start()
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while "opening 3" not in seen and time.monotonic() < deadline:
        captured = reader.get(0.1)
        if captured is not None:
            seen.add(captured.frame.source)
    reader.close()
    assert opener.failures == 1  # the failing open happened ...
    assert "opening 3" in seen  # ... and frames flowed again from the opening after it
    assert reader.reconnects >= 2


def test_a_file_read_to_its_end_is_done_not_reconnected(demo_clip):
    """A kiosk's file source without ``loop`` plays once: its end is no failure to retry."""
    options = CaptureOptions(str(demo_clip), reconnect=True, reconnect_initial_s=0.05)
    reader = LatestFrameReader(options).start()
    deadline = time.monotonic() + 60
    while not reader.finished and time.monotonic() < deadline:
        reader.get(0.1)
    reader.close()
    assert reader.finished and reader.reconnects == 0 and reader.error is None


def test_reconnects_are_counted_in_metrics(demo_clip):
    import threading

    opener = FlakyOpener()
    port = free_port("127.0.0.1")
    options = LiveOptions(capture=CaptureOptions(str(demo_clip), reconnect=True,
                                                 reconnect_initial_s=0.05),
                          display=HEADLESS, http=HttpOptions(enabled=True, port=port),
                          duration_s=300)
    session = LiveSession(options, opener=opener)
    runner = threading.Thread(target=session.run)
    runner.start()
    try:
        reconnects = 0.0
        deadline = time.monotonic() + 120  # a guard for a very busy machine, not a threshold
        while reconnects < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                _, text = fetch(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                continue
            lines = [line for line in text.splitlines()
                     if line.startswith("edgefer_source_reconnects_total ")]
            reconnects = float(lines[0].split()[1]) if lines else 0.0
    finally:
        session.request_stop()
        runner.join(timeout=30)
    assert reconnects >= 2 and opener.failures == 1


def test_camera_that_cannot_open_is_a_clear_error():
    options = LiveOptions(capture=CaptureOptions("/dev/nonexistent-camera.mp4"), display=HEADLESS)
    with pytest.raises(InputError, match="no such file"):
        LiveSession(options).run()


def test_no_display_suggests_headless(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    if sys.platform == "linux":
        with pytest.raises(InputError, match="--headless"):
            LiveSession(LiveOptions())


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_kiosk_process_health_metrics_events_and_sigterm(demo_clip, tmp_path):
    port = free_port("127.0.0.1")
    config = tmp_path / "kiosk.toml"
    config.write_text(f"""
[capture]
source = "{demo_clip}"
realtime = true
loop = true
[display]
headless = true
[outputs]
table = "{tmp_path / 'rows.csv'}"
events = "{tmp_path / 'events.jsonl'}"
[http]
port = {port}
stale_s = 2
""")
    process = subprocess.Popen([sys.executable, "-m", "edgefer", "kiosk", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline and status != 200:
            time.sleep(0.5)
            try:
                status, body = fetch(f"http://127.0.0.1:{port}/healthz")
            except OSError:
                continue
        assert status == 200 and json.loads(body)["ok"]
        frames = 0.0
        while frames < 30 and time.monotonic() < deadline + 120:  # a guard, not a threshold
            time.sleep(0.5)
            status, metrics = fetch(f"http://127.0.0.1:{port}/metrics")
            line = next(x for x in metrics.splitlines() if x.startswith("edgefer_frames_total "))
            frames = float(line.split()[1])
        assert status == 200
        assert "edgefer_frames_total" in metrics and "edgefer_capture_to_result_seconds_bucket" in metrics
        assert fetch(f"http://127.0.0.1:{port}/nope")[0] == 404
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    lines = (tmp_path / "rows.csv").read_text().splitlines()
    assert len(lines) > 2 and lines[-1].count(",") == lines[0].count(",")  # no torn last row
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "track_start"
    started = {e["track_id"] for e in events if e["event"] == "track_start"}
    assert started == {e["track_id"] for e in events if e["event"] == "track_end"}  # a clean stop


def test_config_precedence(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text("[http]\nport = 9000\nhost = '0.0.0.0'\n[display]\nheadless = true\n")
    config = load_config(path, {"http": {"port": 9300}}, environ={"EDGEFER_HTTP_PORT": "9200",
                                                                  "EDGEFER_HTTP_HOST": "10.0.0.1"})
    assert config.http.port == 9300  # flag > environment > file
    assert config.http.host == "10.0.0.1"  # environment > file
    assert config.display.headless is True  # file > default
    assert config.capture.reconnect and config.recognizer.llm is None


@pytest.mark.parametrize(("text", "environ", "match"), [
    ("[http]\nprot = 1\n", {}, "unknown key http.prot"),
    ("[htp]\nport = 1\n", {}, r"unknown section \[htp\]"),
    ("[http]\nport = 'eighty'\n", {}, "http.port"),
    ("[http]\nport = 70000\n", {}, "http.port"),
    ("[detector]\nmodel = 'long'\n", {}, "detector model"),
    ("[llm]\nenabled = true\nthreshold = 2\n", {"OPENAI_API_KEY": "x"},
     r"threshold=2\.0: must be in \[0, 1\]"),
    ("[http\n", {}, "invalid TOML"),
    ("", {"EDGEFER_DISPLAY_HEADLESS": "maybe"}, "display.headless"),
    ("[capture]\nreconnect_initial_s = 0\n", {}, "reconnect_initial_s"),
    ("[http]\nenabled = 'false'\n", {}, "http.enabled .*: expected bool, got 'false'"),
    ("[outputs]\nrecord_fps = -1.0\n", {}, "record_fps must be > 0"),
    ("[llm]\nenabled = true\napi_key_env = 'MY_KEY'\n", {"OPENAI_API_KEY": "other"},
     "llm.api_key_env names MY_KEY, which is not set"),
    ("[capture]\nreconnect_max_s = 0.1\n", {}, "reconnect_initial_s <= reconnect_max_s"),
])
def test_bad_config_is_rejected_with_the_key(tmp_path, monkeypatch, text, environ, match):
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "k.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path, {}, environ=environ)


def test_the_variables_holding_secrets_are_not_read_as_settings(tmp_path):
    """``EDGEFER_HTTP_TOKEN`` (the README's example) holds the page's token: it is not the
    setting ``http.token``, which does not exist, and the kiosk starts with it."""
    path = tmp_path / "k.toml"
    path.write_text("[http]\nhost = '127.0.0.2'\ntoken_env = 'EDGEFER_HTTP_TOKEN'\n"
                    "[llm]\nenabled = true\napi_key_env = 'EDGEFER_LLM_API_KEY'\n")
    environ = {"EDGEFER_HTTP_TOKEN": "abc", "EDGEFER_LLM_API_KEY": "sk-x"}
    options = load_config(path, {}, environ=environ)
    assert options.http.token_env == "EDGEFER_HTTP_TOKEN"
    assert options.recognizer.llm.api_key == "sk-x"
    with pytest.raises(ConfigError, match=r"unknown key http\.tokn"):  # typos are still found
        load_config(path, {}, environ={**environ, "EDGEFER_HTTP_TOKN": "abc"})


def test_kiosk_cli_rejects_unknown_key(tmp_path):
    from conftest import run_cli

    path = tmp_path / "k.toml"
    path.write_text("[capture]\nsource = '0'\ncolour = 'red'\n")
    result = run_cli("kiosk", "--config", str(path))
    assert result.returncode == 2 and "capture.colour" in result.stderr
    assert "Traceback" not in result.stderr


def test_looped_source_timestamps_are_monotonic(demo_clip):
    """A looping file restarts its own timestamps; capture re-stamps frames monotonically."""
    reader = LatestFrameReader(CaptureOptions(str(demo_clip), loop=True)).start()
    stamps = []
    while len(stamps) < 20:
        item = reader.get(1.0)
        if item is not None:
            stamps.append(item.frame.timestamp_s)
    reader.close()
    assert stamps == sorted(stamps)


@pytest.mark.skipif(not __import__("os").path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("output", ["table", "events"])
def test_disk_full_output_is_reported_and_the_loop_goes_on(demo_clip, tmp_path, capfd, output):
    """The failing output is disabled and counted, the loop runs on, and closing it at the end
    neither raises nor prints a traceback."""
    full = tmp_path / ("rows.csv" if output == "table" else "events.jsonl")
    full.symlink_to("/dev/full")  # every write fails with ENOSPC, like a full disk
    outputs = (OutputOptions(table=full, overwrite=True) if output == "table"
               else OutputOptions(events=str(full)))
    options = LiveOptions(capture=CaptureOptions(str(demo_clip), realtime=True, loop=True),
                          display=HEADLESS, outputs=outputs, max_frames=60)
    stats = LiveSession(options).run()
    assert stats.frames == 60 and stats.errors >= 1
    assert "Traceback" not in capfd.readouterr().err


def test_disk_full_in_score_is_one_line(demo_clip, tmp_path):
    from conftest import assert_one_line_error, run_cli

    full = tmp_path / "rows.csv"
    full.symlink_to("/dev/full")
    result = run_cli("score", str(demo_clip), "-o", str(full), "--overwrite")
    assert_one_line_error(result, 4, "No space left on device")


EXAMPLE = Path(__file__).resolve().parent.parent / "tools" / "kiosk.example.toml"


def test_example_kiosk_config_is_valid():
    options = load_config(EXAMPLE, {}, environ={})
    assert options.http.host == "127.0.0.1" and options.recognizer.llm is None
    assert options.capture.reconnect and options.display.fullscreen  # the kiosk's defaults


def test_example_documents_every_option_with_its_default():
    """Every field of every section appears in the example (as a key or a commented key), with
    the dataclass's default unless the line says it is an example or a kiosk default."""
    import tomllib

    from edgefer.apps.kiosk import KIOSK_DEFAULTS, NEVER_FROM_CONFIG, SECTIONS, _known_keys, convert

    documented: dict[str, dict[str, str]] = {}
    section = ""
    for line in EXAMPLE.read_text().splitlines():
        text = line.lstrip("# ").strip()
        if line.startswith("["):
            section = line.split("]")[0][1:]
        elif re.match(r"^[a-z0-9_]+ = ", text):
            documented.setdefault(section, {})[text.split(" = ")[0]] = line
    for name in SECTIONS:
        known = _known_keys(name)
        assert set(documented[name]) == set(known), name
        defaults = {**_defaults(SECTIONS[name]), **KIOSK_DEFAULTS.get(name, {})}
        for key, line in documented[name].items():
            value, _, comment = line.partition("#")
            if "example" in comment or key not in defaults or line.startswith("#"):
                continue
            parsed = convert(tomllib.loads(value)[key], known[key], key)
            assert parsed == defaults[key], f"{name}.{key}: example {parsed!r}, default {defaults[key]!r}"
    assert not set(NEVER_FROM_CONFIG) & {f"{s}.{k}" for s, keys in documented.items() for k in keys}


def _defaults(cls) -> dict:
    import dataclasses

    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


def test_every_llm_option_is_configurable(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text("[llm]\nenabled = true\nbase_url = 'http://127.0.0.1:9/v1'\nbatch_size = 4\n"
                    "top2 = false\ncontext_frame = true\ncooldown_s = 2\ncache_path = ''\n"
                    "[tracker]\ntimeout_s = 3\n[recognizer]\nmodel = 'vgg_s'\n")
    options = load_config(path, {}, environ={"EDGEFER_SMOOTHING_HALF_LIFE_S": "0.5",
                                             "EDGEFER_OUTPUTS_TABLE": "rows.csv"})
    llm = options.recognizer.llm
    assert (llm.batch_size, llm.top2, llm.context_frame, llm.cooldown_s) == (4, False, True, 2.0)
    assert llm.cache_path is None and llm.api_key is None
    assert options.recognizer.tracker.timeout_s == 3.0 and options.recognizer.model == "vgg_s"
    assert options.recognizer.smoothing.half_life_s == 0.5
    assert options.outputs.table == Path("rows.csv")


@pytest.mark.parametrize(("text", "match"), [
    ("[source]\ninput = '0'\n", r"unknown section \[source\] \(renamed \[capture\]\)"),
    ("[llm]\ncache = 'x.sqlite'\n", r"unknown key llm.cache \(renamed llm.cache_path\)"),
    ("[llm]\napi_key = 'sk-123'\n", "llm.api_key is not accepted"),
    ("[llm]\nbatch_size = 'many'\n", "llm.batch_size .*expected int"),
    ("[llm]\nbatch_size = true\n", "llm.batch_size .*expected int"),
    ("[llm]\nenabled = true\nbase_url = 'http://127.0.0.1:9/v1'\nbatch_size = 0\n",
     "batch_size"),
    ("[tracker]\niou_threshold = 1.5\n", r"\[tracker\].*iou_threshold"),
    ("[http]\npreview_fps = 30\n", "http.preview_fps"),
    ("[capture]\nloop = 'sometimes'\n", "capture.loop"),
    ("[display]\nheadless = 1\n", "display.headless .*expected bool"),
    ("[recognizer]\ndetector = 'full'\n", "unknown key recognizer.detector"),
])
def test_config_errors_name_the_key(tmp_path, text, match):
    path = tmp_path / "k.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path, {}, environ={})


def test_a_snapshot_that_cannot_be_saved_is_logged_not_fatal(tmp_path, caplog):
    """A key press must not stop a kiosk: a snapshot folder that cannot be made is logged."""
    import cv2

    from edgefer.apps.window import DisplayOptions, Window

    image = np.full((48, 64, 3), 128, np.uint8)
    (tmp_path / "a-file").write_text("")
    assert Window(DisplayOptions(), snapshot_dir=tmp_path / "a-file" / "snaps").snapshot(image) is None
    assert "snapshot not saved" in caplog.text
    saved = Window(DisplayOptions(), snapshot_dir=tmp_path / "snaps").snapshot(image)
    assert saved is not None and cv2.imread(str(saved)).shape == (48, 64, 3)


def test_a_restart_keeps_every_runs_table_with_start_in_the_name(tmp_path):
    """A restarted kiosk: ``{start}`` gives each run its own file; without it the existing
    file stops the start with a message that says how to keep it."""
    from edgefer.apps.outputs import ErrorReporter, Outputs

    named = OutputOptions(table=tmp_path / "faces-{start}.csv")
    for _ in range(3):  # restarts within one second too
        with Outputs(named, "cam", ErrorReporter()):
            pass
    made = sorted(tmp_path.glob("faces-2*.csv"))
    assert len(made) == 3
    with pytest.raises(OutputError, match=r"put \{start\} in its name"):
        Outputs(OutputOptions(table=made[0]), "cam", ErrorReporter()).__enter__()


def test_stream_credentials_never_reach_errors_or_logs(caplog):
    reader = LatestFrameReader(CaptureOptions("rtsp://admin:hunter2@127.0.0.1:1/cam?key=k1",
                                              reconnect=True, reconnect_initial_s=0.05)).start()
    deadline = time.monotonic() + 30
    while "unavailable" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.1)
    reader.close()
    assert "rtsp://127.0.0.1:1/cam" in caplog.text
    assert "hunter2" not in caplog.text and "k1" not in caplog.text


def test_a_source_that_opens_but_sends_nothing_backs_off():
    """A camera that accepts the connection and sends no frame is retried ever more slowly, as
    one that refuses it is: the backoff starts over only when frames came."""

    class Silent(Source):
        def __iter__(self):
            raise InputError("no decodable frames in cam")
            yield

    reader = LatestFrameReader(CaptureOptions("cam", reconnect=True, reconnect_initial_s=0.05),
                               opener=lambda _: Silent()).start()
    time.sleep(1.6)  # 0.05 + 0.1 + 0.2 + 0.4 + 0.8: five tries; without the backoff, thirty
    reader.close()
    assert 2 <= reader.reconnects <= 7


def test_an_outage_longer_than_the_timeout_ends_the_tracks_then(demo_clip, tmp_path):
    """The face's track_end is written during the outage, stamped with its last frame, and
    the face seen after it is a new track that continues the numbering."""
    comes_back = time.monotonic() + 3.0
    openings = []

    def opener(path: str) -> Source:
        openings.append(path)
        if len(openings) > 1 and time.monotonic() < comes_back:
            raise InputError("camera 0 disappeared")
        return TwentyFrames(path, len(openings))

    events = tmp_path / "events.jsonl"
    options = LiveOptions(capture=CaptureOptions(str(demo_clip), reconnect=True,
                                                 reconnect_initial_s=0.05, realtime=True),
                          display=HEADLESS, outputs=OutputOptions(events=str(events)),
                          max_frames=30)
    LiveSession(options, opener=opener).run()
    logged = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [(e["event"], e["track_id"]) for e in logged]
    assert kinds.index(("track_end", 1)) < kinds.index(("track_start", 2))
    end = next(e for e in logged if e["event"] == "track_end" and e["track_id"] == 1)
    start = next(e for e in logged if e["event"] == "track_start" and e["track_id"] == 2)
    assert start["time_s"] - end["time_s"] > 1.0  # stamped when the face was last seen
