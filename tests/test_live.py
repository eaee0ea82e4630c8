"""The live loop driven headless by a paced file source; overlay pixels; reconnects; HTTP;
SIGTERM; kiosk configuration."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from edgefer.annotate import COLORS, Hud, draw_faces, draw_hud
from edgefer.apps.kiosk import load_config, to_live_options
from edgefer.apps.live import LiveOptions, LiveSession
from edgefer.capture import CaptureOptions, LatestFrameReader
from edgefer.errors import ConfigError, InputError
from edgefer.sources import Source, open_source
from edgefer.types import Faces, LabelSource

# Whether the paced loop keeps up with 30 frames/s, and at what latency, is measured by
# ``tools/bench.py live``, not asserted here.


def test_unpaced_file_drops_frames_instead_of_queueing(demo_clip):
    """Decoding outruns detection: the newest frame wins and the others are counted dropped."""
    options = LiveOptions(capture=CaptureOptions(str(demo_clip)), headless=True)
    stats = LiveSession(options).run()
    assert stats.frames + stats.dropped == 150
    assert stats.dropped > 0 and stats.frames > 0


def test_overlay_is_drawn():
    image = np.zeros((200, 300, 3), np.uint8)
    faces = Faces(np.array([[50, 60, 150, 160]]), np.ones(1), np.zeros((1, 6, 2)))
    faces.probs[0, 3] = 1.0
    faces.smoothed_probs[0, 3] = 1.0
    faces.smoothed_labels[0] = 3
    faces.track_ids[0] = 7
    faces.final_labels[0] = 3
    faces.label_sources[0] = LabelSource.LLM
    draw_faces(image, faces)
    assert tuple(image[100, 50]) == COLORS["happy"]  # the box's left edge
    assert tuple(image[100, 100]) == (0, 0, 0)  # inside stays untouched
    assert (image[60:75, 130:150] == (255, 0, 255)).all(axis=2).any()  # the LLM mark
    assert (image[162:165, 51:150] == COLORS["happy"]).all(axis=2).all()  # a full confidence bar
    draw_hud(image, Hud(fps=29.9, latency_ms=12.0))
    assert image[5:25, 5:100].max() == 255  # HUD text


class TwentyFrames(Source):
    """The first 20 frames of a file, tagged with the opening they came from."""

    def __init__(self, path: str, opening: int) -> None:
        self._inner = open_source(path)
        self.opening = opening

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


def test_reconnects_are_counted_in_metrics(demo_clip):
    import threading

    port = free_port()
    options = LiveOptions(capture=CaptureOptions(str(demo_clip), reconnect=True,
                                                 reconnect_initial_s=0.05),
                          headless=True, http_port=port, duration_s=30)
    opener = FlakyOpener()
    session = LiveSession(options, opener=opener)
    runner = threading.Thread(target=session.run)
    runner.start()
    try:
        reconnects = 0.0
        deadline = time.monotonic() + 25
        while reconnects < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                _, text = fetch(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                continue
            reconnects = metric(text, "edgefer_source_reconnects")
    finally:
        session.request_stop()
        runner.join(timeout=30)
    assert reconnects >= 2 and opener.failures == 1


def test_camera_that_cannot_open_is_a_clear_error():
    options = LiveOptions(capture=CaptureOptions("/dev/nonexistent-camera.mp4"), headless=True)
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


def metric(text: str, name: str) -> float:
    """One unlabelled value from a Prometheus exposition, 0 when it is not there yet."""
    values = [line.split()[1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(values[0]) if values else 0.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_kiosk_process_health_metrics_events_and_sigterm(demo_clip, tmp_path):
    port = free_port()
    config = tmp_path / "kiosk.toml"
    config.write_text(f"""
[source]
input = "{demo_clip}"
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
        faces, deadline = 0.0, time.monotonic() + 60
        while time.monotonic() < deadline and faces < 40:  # however fast this machine is today
            time.sleep(0.5)
            status, metrics = fetch(f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            faces = metric(metrics, "edgefer_faces_detected_total")
        assert faces >= 40
        assert "edgefer_frames_total" in metrics and "edgefer_capture_to_result_seconds_bucket" in metrics
        assert fetch(f"http://127.0.0.1:{port}/nope")[0] == 404
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    lines = (tmp_path / "rows.csv").read_text().splitlines()
    assert len(lines) > 30 and lines[-1].count(",") == lines[0].count(",")  # no torn last row
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "track_start"


def test_config_precedence(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text("[http]\nport = 9000\nhost = '0.0.0.0'\n[display]\nheadless = true\n")
    config = load_config(path, {"http": {"port": 9300}}, environ={"EDGEFER_HTTP_PORT": "9200",
                                                                  "EDGEFER_HTTP_HOST": "10.0.0.1"})
    assert config.http.port == 9300  # flag > environment > file
    assert config.http.host == "10.0.0.1"  # environment > file
    assert config.display.headless is True  # file > default
    options = to_live_options(config)
    assert options.capture.reconnect and options.recognizer.llm is None


@pytest.mark.parametrize(("text", "environ", "match"), [
    ("[http]\nprot = 1\n", {}, "unknown key http.prot"),
    ("[htp]\nport = 1\n", {}, r"unknown section \[htp\]"),
    ("[http]\nport = 'eighty'\n", {}, "http.port"),
    ("[http]\nport = 70000\n", {}, "http.port"),
    ("[detector]\nmodel = 'long'\n", {}, "detector model"),
    ("[llm]\nenabled = true\nthreshold = 2\n", {"OPENAI_API_KEY": "x"}, "threshold"),
    ("[http\n", {}, "invalid TOML"),
    ("", {"EDGEFER_DISPLAY_HEADLESS": "maybe"}, "display.headless"),
])
def test_bad_config_is_rejected_with_the_key(tmp_path, monkeypatch, text, environ, match):
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "k.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path, {}, environ=environ)


def test_kiosk_cli_rejects_unknown_key(tmp_path):
    from conftest import run_cli

    path = tmp_path / "k.toml"
    path.write_text("[source]\ninput = '0'\ncolour = 'red'\n")
    result = run_cli("kiosk", "--config", str(path))
    assert result.returncode == 2 and "source.colour" in result.stderr
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
def test_disk_full_output_is_reported_and_the_loop_goes_on(demo_clip, tmp_path):
    full = tmp_path / "rows.csv"
    full.symlink_to("/dev/full")  # every write fails with ENOSPC, like a full disk
    options = LiveOptions(capture=CaptureOptions(str(demo_clip), realtime=True, loop=True),
                          headless=True, output=full, overwrite=True, max_frames=30)
    stats = LiveSession(options).run()  # the looped clip lasts until 30 frames are processed
    assert stats.frames == 30 and stats.errors >= 1


def test_disk_full_in_score_is_one_line(demo_clip, tmp_path):
    from conftest import assert_one_line_error, run_cli

    full = tmp_path / "rows.csv"
    full.symlink_to("/dev/full")
    result = run_cli("score", str(demo_clip), "-o", str(full), "--overwrite")
    assert_one_line_error(result, 4, "No space left on device")


def test_example_kiosk_config_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "tools" / "kiosk.example.toml"
    config = load_config(example, {}, environ={})
    assert config.http.host == "127.0.0.1" and config.llm.enabled is False
