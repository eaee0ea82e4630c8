"""The live window: opened once at the frame's size (fitted to the screen), keys, snapshots.

OpenCV's wheels draw windows with a bundled Qt. Left alone, Qt opens a ``WINDOW_NORMAL`` window
at its own small default size with a toolbar, and prints font-directory warnings on every start
because the wheel ships no fonts; ``quiet_qt`` points it at the system's fonts first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefer.errors import OutputError
from edgefer.files import atomic_write
from edgefer.images import encode_jpeg

log = logging.getLogger(__name__)

TITLE = "edgefer"
ESC = 27
SNAPSHOT_QUALITY = 95  # OpenCV's default JPEG quality, as snapshots were always saved
SCREEN_FILL = 0.9  # a large source's window takes at most this share of the screen
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts",
             "/usr/local/share/fonts")


@dataclass(frozen=True)
class DisplayOptions:
    headless: bool = False
    fullscreen: bool = False


def display_available() -> bool:
    """A window can be opened: a display server, or Qt told to render offscreen."""
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("QT_QPA_PLATFORM") == "offscreen")


def font_dir() -> str | None:
    """A folder of TrueType fonts for Qt: the system's, else matplotlib's bundled DejaVu."""
    for folder in FONT_DIRS:
        if Path(folder).is_dir():
            return folder
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"
        if bundled.is_dir():
            return str(bundled)
    return None


def quiet_qt() -> None:
    """Before cv2 creates its first window: real fonts for Qt, and Qt's platform chatter off."""
    folder = font_dir()
    if folder is not None:
        os.environ.setdefault("QT_QPA_FONTDIR", folder)
    os.environ.setdefault("QT_LOGGING_RULES", "qt.qpa.*=false")


def screen_size() -> tuple[int, int] | None:
    """(width, height) of the X screen, or None where it cannot be asked (Wayland, no libX11)."""
    library = ctypes.util.find_library("X11")
    if not library or not os.environ.get("DISPLAY"):
        return None
    x11 = ctypes.cdll.LoadLibrary(library)
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultScreen.argtypes = [ctypes.c_void_p]
    x11.XDisplayWidth.argtypes = x11.XDisplayHeight.argtypes = [ctypes.c_void_p, ctypes.c_int]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    display = x11.XOpenDisplay(None)
    if not display:
        return None
    try:
        screen = x11.XDefaultScreen(display)
        return x11.XDisplayWidth(display, screen), x11.XDisplayHeight(display, screen)
    finally:
        x11.XCloseDisplay(display)


def fitted_size(frame_wh: tuple[int, int], screen_wh: tuple[int, int] | None) -> tuple[int, int]:
    """The frame's own size, shrunk (aspect kept) to fit ``SCREEN_FILL`` of the screen."""
    width, height = frame_wh
    if screen_wh is None:
        return width, height
    scale = min(1.0, SCREEN_FILL * screen_wh[0] / width, SCREEN_FILL * screen_wh[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class Window:
    """Shows annotated frames and turns key presses into state the loop reads.

    Keys: q/Esc quit, space pause, f fullscreen, d debug overlay, s snapshot.
    """

    def __init__(self, options: DisplayOptions, snapshot_dir: Path | None = None) -> None:
        self.snapshot_dir = snapshot_dir
        self.fullscreen = options.fullscreen
        self.paused = False
        self.debug = False
        self.quit = False
        self.snapshots = 0
        self._opened_at: tuple[int, int] | None = None
        self._shown_fullscreen: bool | None = None
        quiet_qt()

    def show(self, image: np.ndarray) -> None:
        """Display ``image`` and handle the keys pressed since the last call."""
        import cv2

        self._open(image.shape[1], image.shape[0])
        cv2.imshow(TITLE, image)
        self._handle(cv2.waitKey(1) & 0xFF, image)

    def _open(self, width: int, height: int) -> None:
        import cv2

        if self._opened_at is None:
            cv2.namedWindow(TITLE, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
            self._opened_at = fitted_size((width, height), screen_size())
            cv2.resizeWindow(TITLE, *self._opened_at)
        if self._shown_fullscreen != self.fullscreen:
            cv2.setWindowProperty(TITLE, cv2.WND_PROP_FULLSCREEN,
                                  cv2.WINDOW_FULLSCREEN if self.fullscreen else cv2.WINDOW_NORMAL)
            self._shown_fullscreen = self.fullscreen

    def _handle(self, key: int, image: np.ndarray) -> None:
        if key in (ord("q"), ESC):
            self.quit = True
        elif key == ord(" "):
            self.paused = not self.paused
        elif key == ord("f"):
            self.fullscreen = not self.fullscreen
        elif key == ord("d"):
            self.debug = not self.debug
        elif key == ord("s"):
            self.snapshot(image)

    def snapshot(self, image: np.ndarray) -> Path | None:
        """Save ``image`` as a JPEG in the snapshot folder; a failure is logged, never fatal
        (a key press must not stop a kiosk)."""
        if self.snapshot_dir is None:
            log.warning("snapshot ignored: no --snapshot-dir given")
            return None
        self.snapshots += 1
        path = self.snapshot_dir / f"edgefer-{time.strftime('%Y%m%d-%H%M%S')}-{self.snapshots:04d}.jpg"
        jpeg = encode_jpeg(image, SNAPSHOT_QUALITY)
        try:
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda handle: handle.write(jpeg))
        except (OSError, OutputError) as err:
            log.error("snapshot not saved: %s", err)
            return None
        log.info("snapshot saved: %s", path)
        return path

    def close(self) -> None:
        import cv2

        if self._opened_at is not None:
            cv2.destroyAllWindows()
