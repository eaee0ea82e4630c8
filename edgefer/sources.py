"""Frame sources: camera index, video file, RTSP/HTTP stream, image files, folders, archives.

Every source is a context manager and an iterator of ``Frame`` (index, presentation time in
seconds, BGR image). ``open_source`` picks the right one from a string; ``expand_inputs`` turns
user arguments (files, folders, URLs) into the list of items to process.
"""

from __future__ import annotations

import glob
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from edgefer.archives import (
    extract_member,
    is_archive,
    is_resource_fork,
    list_members,
    read_member,
    split_member,
)
from edgefer.errors import InputError
from edgefer.types import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".avif")
# photo formats the OpenCV wheel has no codec for (iPhones save HEIC by default)
UNDECODABLE_PHOTO_SUFFIXES = (".heic", ".heif", ".jxl")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ts")
MAX_CONSECUTIVE_BAD_FRAMES = 25  # a damaged stretch longer than this ends the file
LIVE_DAMAGE_LOG_S = 10.0  # a live source's undecodable frames are logged at most this often
LIST_SUFFIX = ".txt"  # a text file listing inputs
SEQUENCE_FPS = 30.0  # the frame rate of a folder of images read as one stream, unless given
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def is_stream(spec: str) -> bool:
    return spec.lower().startswith(STREAM_SCHEMES)


def redact(source: str) -> str:
    """The source as people see it (logs, errors, the page): a URL loses its user, password,
    query and fragment, where stream credentials and tokens live."""
    if "://" not in source:
        return source
    parts = urlsplit(source)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def is_camera(spec: str) -> bool:
    return spec.isdigit()


def open_camera(index: int) -> Any:
    """``cv2.VideoCapture`` of a camera, without OpenCV's own log lines when it is absent
    (they would precede, and repeat, edgefer's one-line error)."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(index)
    finally:
        cv2.utils.logging.setLogLevel(level)


def camera_devices_hint() -> str:
    """The video devices this machine has, for the error when a camera index does not open."""
    if sys.platform != "linux":
        return ""
    devices = sorted(glob.glob("/dev/video*"))
    if not devices:
        return " (no /dev/video* device on this machine: score a file instead, or try edgefer demo)"
    return f" (video devices here: {', '.join(devices)})"


def is_image(spec: str) -> bool:
    return Path(spec).suffix.lower() in IMAGE_SUFFIXES


def expand_inputs(inputs: list[str], sequences: bool = False) -> list[str]:
    """Files as given, folders recursed for images, videos and archives (sorted), archives
    opened for the images and videos inside (``photos.zip/a.jpg``, in stored order), URLs and
    cameras as is, and a ``.txt`` file read as a list of inputs, one per line (``#`` starts a
    comment; relative paths are relative to the list's folder). With ``sequences``, a folder
    is one input: its images are the frames of one video (``ImageSequenceSource``).

    Missing paths are kept so that the caller reports them in order with the other failures.
    """
    items: list[str] = []
    for spec in inputs:
        path = Path(spec)
        if path.suffix.lower() == LIST_SUFFIX and path.is_file():
            items += expand_inputs(_read_list(path), sequences)
        elif path.is_dir() and sequences:
            items.append(spec)
        elif path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()]
            found = sorted(str(p) for p in files if is_media(p))
            if not found:
                log.warning("no images, videos or archives under %s", path)
            _warn_undecodable(path, files)
            items += expand_inputs(found)
        elif is_archive(path) and path.is_file():
            items += _archive_members(path)
        else:
            items.append(spec)
    return items


def _warn_undecodable(folder: Path, files: list[Path]) -> None:
    """Photos a folder holds in formats OpenCV cannot decode are left out; say so, once."""
    skipped = [p for p in files if p.suffix.lower() in UNDECODABLE_PHOTO_SUFFIXES]
    if skipped:
        kinds = ", ".join(sorted({p.suffix.lower() for p in skipped}))
        count = f"{len(skipped)} photo{'s' if len(skipped) > 1 else ''}"
        log.warning("%s under %s left out (%s: OpenCV cannot decode them; convert them to JPEG "
                    "or PNG)", count, folder, kinds)


def is_media(path: Path) -> bool:
    """An image, a video or an archive of them, by name."""
    return (path.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES or is_archive(path)) \
        and not is_resource_fork(path)


def _archive_members(path: Path) -> list[str]:
    """The images and videos in an archive; an unreadable archive stays one input, so that it
    is reported with the other failures."""
    try:
        found = list_members(path, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    except InputError:
        return [str(path)]
    if not found:
        log.warning("no images or videos in %s", path)
    return found


def _read_list(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line if "://" in line or Path(line).is_absolute() else str(path.parent / line)
            for line in lines if line]


class Source:
    """Base of all sources: iterate for frames; ``close`` releases the device or file."""

    name: str = ""
    fps: float | None = None  # nominal frame rate when known
    frame_count: int | None = None  # total frames when known (files)
    live: bool = False  # frames arrive in real time and may be dropped
    damage: str | None = None  # once read to its end: what was wrong with it, in one line

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageSource(Source):
    """One still image as frame 0."""

    def __init__(self, path: str) -> None:
        self.name = path
        self.frame_count = 1
        self._image = read_image(path)

    def __iter__(self) -> Iterator[Frame]:
        yield Frame(0, 0.0, self._image, self.name, still=True)


def read_image(path: str | Path, gray: bool = False) -> np.ndarray:
    """A still as 8-bit BGR (or gray), whatever its depth or channels (alpha, 16-bit, CMYK
    JPEG); ``path`` may lead into an archive (``photos.zip/a.jpg``).

    Reads the bytes with NumPy and decodes them with OpenCV, because ``cv2.imread`` fails on
    some non-ASCII paths.
    """
    member = split_member(str(path))
    if member is not None:
        return decode_image_bytes(np.frombuffer(read_member(*member), np.uint8), path, gray)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    return decode_image_bytes(np.fromfile(path, dtype=np.uint8), path, gray)


class FramePicker:
    """Which frames a source keeps: every ``stride``-th frame, and of those at most ``max_fps``
    per second of presentation time. One rule for videos and image sequences, so a clip and
    its extracted frames give the same rows."""

    def __init__(self, stride: int = 1, max_fps: float | None = None) -> None:
        if stride < 1:
            raise InputError(f"stride must be >= 1, got {stride}")
        if max_fps is not None and max_fps <= 0:
            raise InputError(f"max-fps must be > 0, got {max_fps}")
        self.stride = stride
        self.max_fps = max_fps
        self._next_due_s = 0.0

    def wanted(self, index: int, time_s: float) -> bool:
        """Whether frame ``index`` at ``time_s`` is to be decoded and kept."""
        return index % self.stride == 0 and time_s + 1e-6 >= self._next_due_s

    def took(self, time_s: float) -> None:
        """A wanted frame decoded: the next one is due ``1 / max_fps`` later (a frame that
        failed to decode leaves the next one due at once)."""
        if self.max_fps:
            self._next_due_s = time_s + 1.0 / self.max_fps


class VideoSource(Source):
    """A video file, a network stream or a camera, through OpenCV's FFmpeg/V4L2 capture.

    ``stride`` skips frames with ``grab()`` (no colour conversion); ``max_fps`` keeps at most that
    many frames per second of presentation time; ``start_frame`` skips the frames before it
    (resuming an interrupted run). ``name`` is what frames and errors call it (default ``spec``).
    """

    def __init__(self, spec: str, stride: int = 1, max_fps: float | None = None,
                 start_frame: int = 0, name: str | None = None) -> None:
        import cv2

        self._picker = FramePicker(stride, max_fps)
        self.name = name or redact(spec)  # a stream's credentials never reach logs or rows
        self.live = is_camera(spec) or is_stream(spec)
        if not self.live and not Path(spec).is_file():
            raise InputError(f"no such file: {self.name}")
        self._capture = open_camera(int(spec)) if is_camera(spec) else cv2.VideoCapture(spec)
        if not self._capture.isOpened():
            if is_camera(spec):
                raise InputError(f"cannot open camera {spec}{camera_devices_hint()}")
            kind = "stream" if is_stream(spec) else "video"
            raise InputError(f"cannot open {kind}: {self.name}")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else None
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and not self.live else None
        self.start_frame = start_frame
        self._damage_logged_at = -float("inf")
        self._lock = threading.Lock()
        self._opened_at = time.monotonic()

    def __iter__(self) -> Iterator[Frame]:
        index = -1  # the file's frame number, counting frames that failed to decode
        decoded = failures = unreadable = 0
        last_read = -1  # the last frame grabbed: how far into the file reading got
        while True:
            with self._lock:
                if self._capture is None:
                    break
                grabbed = self._capture.grab()
                index += 1
                if not grabbed:
                    failures += 1
                    if not self._may_skip(index, failures):
                        break
                    continue
                # failed grabs with a frame after them were unreadable; a run of them at the
                # end is where the file stops (counted as ending early)
                unreadable, failures, last_read = unreadable + failures, 0, index
                if index < self.start_frame:
                    continue
                time_s = self._timestamp_s(index)
                if not self._picker.wanted(index, time_s):
                    continue
                ok, image = self._capture.retrieve()
            if not ok or image is None:
                unreadable += 1
                self._report_live_damage(unreadable)
                continue
            decoded += 1
            self._picker.took(time_s)
            yield Frame(index, time_s, image, self.name)
        if decoded == 0 and index >= self.start_frame:
            raise InputError(f"no decodable frames in {self.name}")
        self.damage = self._damage(unreadable, last_read)
        if self.damage:
            log.warning("%s: %s", self.name, self.damage)

    def _may_skip(self, index: int, failures: int) -> bool:
        """After a failed grab: is there more of the file to try? (corrupt frames mid-file)"""
        if self.live or not self.frame_count:
            return False
        if failures > MAX_CONSECUTIVE_BAD_FRAMES or index >= self.frame_count - 1:
            return False
        log.debug("%s: frame %d could not be read; trying the next", self.name, index)
        return True

    def _report_live_damage(self, unreadable: int) -> None:
        """A camera or stream has no end to report damage at: its undecodable frames are
        logged as they come, at most every ``LIVE_DAMAGE_LOG_S`` seconds."""
        now = time.monotonic()
        if self.live and now - self._damage_logged_at >= LIVE_DAMAGE_LOG_S:
            self._damage_logged_at = now
            log.warning("%s: %d frame%s failed to decode so far; skipped", self.name, unreadable,
                        "s" if unreadable > 1 else "")

    def _damage(self, unreadable: int, last_read: int) -> str | None:
        """What was wrong with the input once read, in one line (None: nothing, or a camera,
        which has no end): frames that could not be read, and an end before the frame count its
        header gives (a tolerance of 2% for headers that overestimate it)."""
        if is_camera(self.name):
            return None
        problems = [f"{unreadable} unreadable frame{'s' if unreadable > 1 else ''}"] if unreadable else []
        if self.frame_count and last_read + 1 < self.frame_count * 0.98:
            problems.append(f"ended after frame {last_read + 1} of {self.frame_count}")
        return "; ".join(problems) + " (truncated or corrupt)" if problems else None

    def _timestamp_s(self, index: int) -> float:
        import cv2

        if self.live:  # wall-clock arrival time: what latency and track timeouts care about
            return time.monotonic() - self._opened_at
        msec = self._capture.get(cv2.CAP_PROP_POS_MSEC)
        if msec > 0 or index == 0:
            return msec / 1000.0
        return index / self.fps if self.fps else float(index)

    def close(self) -> None:
        with self._lock:
            if self._capture is not None:
                self._capture.release()
                self._capture = None


class ImageSequenceSource(Source):
    """A folder of images read as one stream, in natural name order (``frame_2`` before
    ``frame_10``): extracted video frames, a camera's snapshots. Frame ``i`` is at ``i / fps``
    seconds (tracking and smoothing count in seconds). ``score`` reads a folder as separate
    photos unless asked (``--sequences``)."""

    def __init__(self, folder: str, stride: int = 1, max_fps: float | None = None,
                 start_frame: int = 0, fps: float = SEQUENCE_FPS) -> None:
        if fps <= 0:
            raise InputError(f"a sequence's frame rate must be > 0, got {fps}")
        self.name = folder
        entries = [p for p in Path(folder).iterdir() if not is_resource_fork(p)]
        self._paths = sorted((p for p in entries if p.is_file() and is_image(p.name)),
                             key=lambda p: natural_key(p.name))
        if not self._paths:
            raise InputError(f"no images in {folder}")
        listed = set(self._paths)
        others = [p.name for p in entries if p not in listed and not p.name.startswith(".")]
        if others:  # a sequence is one folder's images: a video or a subfolder is no frame
            log.warning("%s: left out of the sequence, not images edgefer reads: %s%s", folder,
                        ", ".join(sorted(others)[:3]), " ..." if len(others) > 3 else "")
        self.fps = fps
        self.frame_count = len(self._paths)
        self._picker = FramePicker(stride, max_fps)
        self._start = start_frame

    def __iter__(self) -> Iterator[Frame]:
        for index in range(self._start, len(self._paths)):
            time_s = index / self.fps
            if not self._picker.wanted(index, time_s):
                continue
            try:
                image = read_image(self._paths[index])
            except InputError as err:
                log.warning("%s: %s; skipped", self.name, err)
                continue
            self._picker.took(time_s)
            yield Frame(index, time_s, image, self.name)


def natural_key(name: str) -> list[Any]:
    """Sort key that orders the numbers inside names by value."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class ArchivedVideoSource(VideoSource):
    """A video inside an archive, read from a temporary copy that ``close`` deletes."""

    def __init__(self, spec: str, archive: Path, member: str, stride: int = 1,
                 max_fps: float | None = None, start_frame: int = 0) -> None:
        self._copy = extract_member(archive, member)
        try:
            super().__init__(str(self._copy), stride=stride, max_fps=max_fps,
                             start_frame=start_frame, name=spec)
        except InputError:
            self._copy.unlink()
            raise

    def close(self) -> None:
        super().close()
        self._copy.unlink(missing_ok=True)


def open_source(spec: str, stride: int = 1, max_fps: float | None = None,
                start_frame: int = 0, sequence_fps: float = SEQUENCE_FPS) -> Source:
    """The source for a camera index ("0"), URL, image path, video path, a folder of images read
    as one stream, or an image or video inside an archive (``clips.tar.gz/day1/a.mp4``)."""
    if is_image(spec) and not is_stream(spec):
        return ImageSource(spec)
    if not (is_stream(spec) or is_camera(spec)) and Path(spec).is_dir():
        return ImageSequenceSource(spec, stride=stride, max_fps=max_fps, start_frame=start_frame,
                                   fps=sequence_fps)
    member = None if is_stream(spec) or is_camera(spec) else split_member(spec)
    if member is None and is_archive(spec) and Path(spec).is_file():
        list_members(Path(spec), ())  # an unreadable archive raises why
        raise InputError(f"{spec} is an archive: edgefer score reads the images and videos in it")
    if member is not None:
        return ArchivedVideoSource(spec, *member, stride=stride, max_fps=max_fps,
                                   start_frame=start_frame)
    return VideoSource(spec, stride=stride, max_fps=max_fps, start_frame=start_frame)


def decode_image_bytes(data: np.ndarray, name: str | Path, gray: bool = False) -> np.ndarray:
    """An encoded image held in memory, decoded as ``read_image`` does; ``name`` for errors."""
    import cv2

    flags = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise InputError(f"cannot decode image: {name}")
    return image


def load_gray(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Read an image as 8-bit gray at ``size`` (height, width); raise InputError if unreadable."""
    import cv2

    image = read_image(path, gray=True)
    if image.shape != size:
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return image
