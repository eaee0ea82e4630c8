"""Zip and tar archives as inputs, read in place.

Each image or video inside an archive is an input of its own, named like a path through the
archive (``photos.zip/2024/a.jpg``), so rows, summaries and ``--resume`` treat it like a file.
Nothing is unpacked to disk except one video at a time (OpenCV opens paths, not streams).

Open archives are kept (a few, per process) because a compressed tar is one stream: reading its
members in stored order from one open handle is linear, reopening it per member is quadratic.
"""

from __future__ import annotations

import posixpath
import shutil
import tarfile
import tempfile
import threading
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import IO

from edgefer.errors import InputError
from edgefer.files import temp_prefix

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
OPEN_ARCHIVES = 4  # handles kept per process
ARCHIVE_ERRORS = (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile)
_UTF8_FLAG = 0x800  # a zip member's general-purpose flag bit 11: "name and comment are UTF-8"


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def split_member(spec: str) -> tuple[Path, str] | None:
    """``(archive, member)`` when ``spec`` names a file inside an archive file, else None."""
    parts = Path(spec).parts
    for end in range(1, len(parts)):
        head = Path(*parts[:end])
        if is_archive(head) and head.is_file():
            return head, "/".join(parts[end:])
    return None


def list_members(archive: Path, suffixes: tuple[str, ...]) -> list[str]:
    """The archive's files whose names end in ``suffixes``, as inputs, in stored order
    (macOS's resource forks left out)."""
    return [f"{archive}/{name}" for name in member_names(archive, suffixes)]


def member_names(archive: Path, suffixes: tuple[str, ...]) -> list[str]:
    """What ``list_members`` lists, named inside the archive (``2024/a.jpg``)."""
    with _LOCK:
        names = _open(archive).names()
    return [name for name in names
            if name.lower().endswith(suffixes) and not is_resource_fork(Path(name))]


def is_resource_fork(path: Path) -> bool:
    """macOS's metadata twin of a file (``._a.jpg``, ``__MACOSX/``), written into zips and onto
    non-Apple drives: named like the image, but not one."""
    return path.name.startswith("._") or "__MACOSX" in path.parts


def read_member(archive: Path, member: str) -> bytes:
    with _LOCK, _open(archive).open(member) as stream:
        try:
            return stream.read()
        except ARCHIVE_ERRORS as err:
            raise InputError(f"cannot read {member} in {archive}: {err}") from err


def extract_member(archive: Path, member: str) -> Path:
    """A temporary copy of one member (same suffix, so decoders recognise it); the caller
    deletes it."""
    with _LOCK, _open(archive).open(member) as stream, \
            tempfile.NamedTemporaryFile(prefix=temp_prefix(), suffix=Path(member).suffix,
                                        delete=False) as copy:
        try:
            shutil.copyfileobj(stream, copy)
        except ARCHIVE_ERRORS as err:
            Path(copy.name).unlink()
            raise InputError(f"cannot copy {member} out of {archive}: {err}") from err
    return Path(copy.name)


def _zip_name(info: zipfile.ZipInfo) -> str:
    """A zip member's name as its maker meant it. Without the UTF-8 flag (bit 11) zipfile decodes
    names as cp437, but Info-ZIP's ``zip`` 3.0 on Linux writes UTF-8 names without the flag
    (``é`` would read as ``├⌐``): names whose raw bytes are UTF-8 are read as UTF-8, others stay
    cp437. The member is still opened by its ZipInfo, whose name zipfile checks unchanged."""
    if info.flag_bits & _UTF8_FLAG:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except UnicodeError:  # cp437 indeed (or a name zipfile already decoded otherwise)
        return info.filename


def _normal(name: str) -> str:
    """A member's name as a path through the archive writes it (``./a.jpg`` is ``a.jpg``)."""
    return posixpath.normpath(name).lstrip("/")


class _Archive:
    """One open zip or tar file: its members by name, opened as streams; errors become
    InputErrors naming the archive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        is_zip = path.name.lower().endswith(".zip")
        try:
            if is_zip:
                self._file: zipfile.ZipFile | tarfile.TarFile = zipfile.ZipFile(path)
                infos = [(_zip_name(info), info) for info in self._file.infolist()
                         if not info.is_dir()]
            else:
                self._file = tarfile.open(path, "r:*")  # noqa: SIM115 (kept open; any compression)
                infos = [(info.name, info) for info in self._file.getmembers() if info.isfile()]
        except (zipfile.BadZipFile, tarfile.ReadError) as err:  # tar's lists every method tried
            kind = "zip" if is_zip else "tar"
            raise InputError(f"cannot read archive {path}: not a {kind} file, or damaged") from err
        except ARCHIVE_ERRORS as err:
            raise InputError(f"cannot read archive {path}: {err}") from err
        self._members = {_normal(name): info for name, info in infos}

    def names(self) -> list[str]:
        return list(self._members)

    def open(self, member: str) -> IO[bytes]:
        if member not in self._members:
            raise InputError(f"no such file: {self.path}/{member}")
        try:
            if isinstance(self._file, zipfile.ZipFile):
                return self._file.open(self._members[member])
            stream = self._file.extractfile(self._members[member])
        except ARCHIVE_ERRORS as err:
            raise InputError(f"cannot read {member} in {self.path}: {err}") from err
        if stream is None:  # extractfile's answer for links and devices, which are not listed
            raise InputError(f"{member} in {self.path} is not a file")
        return stream

    def close(self) -> None:
        self._file.close()


_LOCK = threading.RLock()  # tar and zip handles are not thread-safe
_ARCHIVES: OrderedDict[tuple[Path, int], _Archive] = OrderedDict()


def _open(path: Path) -> _Archive:
    """The open archive for ``path`` (reopened when the file changes); call with ``_LOCK``."""
    key = (path.resolve(), path.stat().st_mtime_ns)
    if key not in _ARCHIVES:
        _ARCHIVES[key] = _Archive(path)
        while len(_ARCHIVES) > OPEN_ARCHIVES:
            _ARCHIVES.popitem(last=False)[1].close()
    _ARCHIVES.move_to_end(key)
    return _ARCHIVES[key]
