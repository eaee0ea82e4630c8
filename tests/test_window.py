"""``edgefer live`` with a real window on a virtual X display, driven by key presses.

Needs Xvfb and xdotool (Debian packages ``xvfb`` and ``xdotool``); skipped without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")),
                                reason="needs Xvfb and xdotool")


@pytest.fixture
def display():
    number = 90 + os.getpid() % 9
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1024x768x24"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


def xdotool(display: str, *args: str) -> str:
    result = subprocess.run(["xdotool", *args], capture_output=True, text=True,
                            env={**os.environ, "DISPLAY": display}, timeout=10)
    return result.stdout.strip()


def test_window_keys_snapshot_and_quit(display, demo_clip, tmp_path):
    env = {**os.environ, "DISPLAY": display}
    env.pop("QT_QPA_PLATFORM", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "edgefer", "live", "--source", str(demo_clip), "--realtime",
         "--loop", "--snapshot-dir", str(tmp_path / "snaps")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        window = ""
        deadline = time.monotonic() + 60
        while not window and time.monotonic() < deadline:
            time.sleep(0.5)
            window = xdotool(display, "search", "--name", "edgefer").split("\n")[0]
        assert window, "no edgefer window appeared"
        for key in ("d", "s", "f", "space", "space"):
            xdotool(display, "key", "--window", window, key)
            time.sleep(0.5)
        xdotool(display, "key", "--window", window, "q")
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    snapshots = list((tmp_path / "snaps").glob("*.jpg"))
    assert len(snapshots) == 1
    import cv2

    assert cv2.imread(str(snapshots[0])).shape[:2] == (480, 640)
