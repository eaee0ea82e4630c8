"""``edgefer live`` with a real window on a virtual X display, driven by key presses.

Needs Xvfb and xdotool (Debian packages ``xvfb`` and ``xdotool``); skipped without them. With
``EDGEFER_SCREENSHOTS`` set, the screen is saved there (Pillow's X11 grab) as evidence.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")),
                                reason="needs Xvfb and xdotool")
SCREEN = (1024, 768)


@pytest.fixture
def display():
    number = 90 + os.getpid() % 9
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


def xdotool(display: str, *args: str) -> str:
    result = subprocess.run(["xdotool", *args], capture_output=True, text=True,
                            env={**os.environ, "DISPLAY": display}, timeout=10)
    return result.stdout.strip()


def start_live(display: str, clip: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "DISPLAY": display}
    for name in ("QT_QPA_PLATFORM", "QT_QPA_FONTDIR", "QT_LOGGING_RULES"):
        env.pop(name, None)  # what a user's terminal has: nothing Qt-specific
    process = subprocess.Popen(
        [sys.executable, "-m", "edgefer", "live", "--source", str(clip), "--realtime", "--loop",
         *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    window = ""
    deadline = time.monotonic() + 60
    while not window and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
        window = xdotool(display, "search", "--name", "^edgefer$").split("\n")[0]
    return process, window


def no_window(process: subprocess.Popen) -> str:
    """Why no window appeared: still starting after the deadline, or exited, with its stderr."""
    if process.poll() is None:
        return "no edgefer window within 60 s; the process was still running"
    return (f"edgefer live exited with status {process.returncode} before its window appeared: "
            f"{process.stderr.read()[-2000:]}")


def geometry(display: str, window: str) -> tuple[int, int]:
    values = dict(line.split("=") for line in
                  xdotool(display, "getwindowgeometry", "--shell", window).splitlines())
    return int(values["WIDTH"]), int(values["HEIGHT"])


def screenshot(display: str, name: str) -> None:
    folder = os.environ.get("EDGEFER_SCREENSHOTS")
    if folder:
        from PIL import ImageGrab

        Path(folder).mkdir(parents=True, exist_ok=True)
        ImageGrab.grab(xdisplay=display).save(Path(folder) / name)


def green_pixels(path: Path) -> int:
    """Pixels of the debug overlay's pure green (keypoints and the eye line)."""
    import cv2

    image = cv2.imread(str(path)).astype(int)
    return int(((image[..., 1] > 200) & (image[..., 0] < 90) & (image[..., 2] < 90)).sum())


def stop(display: str, process: subprocess.Popen, window: str) -> str:
    xdotool(display, "key", "--window", window, "q")
    try:
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    return stderr


def test_window_size_keys_snapshot_debug_and_quiet_terminal(display, demo_clip, tmp_path):
    process, window = start_live(display, demo_clip, "--snapshot-dir", str(tmp_path / "snaps"))
    try:
        assert window, no_window(process)
        time.sleep(1.0)
        assert geometry(display, window) == (640, 480)  # the frame's size, not Qt's default
        for key in ("s", "d", "s", "f", "space", "space"):
            xdotool(display, "key", "--window", window, key)
            time.sleep(0.7)
        screenshot(display, "window-640x480.png")
        stderr = stop(display, process, window)
    finally:
        process.kill()
    assert "QFontDatabase" not in stderr and "qt." not in stderr.lower()  # no toolkit noise
    snapshots = sorted((tmp_path / "snaps").glob("*.jpg"), key=lambda p: p.stem[-4:])
    assert len(snapshots) == 2
    import cv2

    assert cv2.imread(str(snapshots[0])).shape[:2] == (480, 640)
    assert green_pixels(snapshots[1]) > green_pixels(snapshots[0]) + 20  # d drew the overlay


def test_large_source_window_fits_the_screen(display, portrait, tmp_path):
    import cv2

    clip = tmp_path / "1080p.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30, (1920, 1080))
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    face = cv2.resize(portrait, (768, 900))
    canvas[90:990, 576:1344] = face
    for _ in range(30):
        writer.write(canvas)
    writer.release()
    process, window = start_live(display, clip)
    try:
        assert window, no_window(process)
        time.sleep(1.5)
        width, height = geometry(display, window)
        screenshot(display, "window-1080p-fitted.png")
        stop(display, process, window)
    finally:
        process.kill()
    assert width <= SCREEN[0] and height <= SCREEN[1]
    assert abs(width / height - 16 / 9) < 0.02 and width >= 0.8 * SCREEN[0]  # fitted, not tiny
