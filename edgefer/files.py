"""File helpers every layer shares: the one atomic writer, temporary copies that a killed run
does not leave behind for good, and TOML reading and writing.

Anything edgefer writes that a crash must not leave half-written (summaries, manifests,
checkpoints, recipes) goes through ``atomic_write``: a temporary file in the same folder,
flushed and fsynced, then renamed over the target, so readers see the old or the new file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgefer.errors import ConfigError, OutputError

TEMP_PREFIX = "edgefer-"  # temporary copies: edgefer-<pid>-..., in the temp folder
ORPHAN_AGE_S = 3600.0  # and untouched this long: a process in another PID namespace (a container
# sharing the temp folder) looks gone from here while it still reads its copy


def temp_prefix() -> str:
    """The prefix of this process's temporary copies, naming the process: a copy it could not
    delete (SIGKILL, power cut) is deleted by the next edgefer process that makes one."""
    _delete_orphans()
    return f"{TEMP_PREFIX}{os.getpid()}-"


@functools.cache
def _delete_orphans() -> None:
    """Once per process: temporary copies whose process is gone, untouched for an hour."""
    old = time.time() - ORPHAN_AGE_S
    for path in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*"):
        pid = path.name[len(TEMP_PREFIX):].split("-", 1)[0]
        with contextlib.suppress(OSError):  # gone already: another process got there first
            if pid.isdigit() and path.stat().st_mtime < old and not _running(int(pid)):
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary binary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    try:
        with tempfile.NamedTemporaryFile("wb", dir=path.parent or ".", prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False) as tmp:
            try:
                write(tmp)
                tmp.flush()
                os.fsync(tmp.fileno())
            except BaseException:
                os.unlink(tmp.name)
                raise
        os.chmod(tmp.name, 0o666 & ~_umask())
        os.replace(tmp.name, path)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """``payload`` as indented, strict JSON (``_plain``), written atomically."""
    text = json.dumps(_plain(payload), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file, turning every failure into one ConfigError line."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except IsADirectoryError as err:
        raise ConfigError(f"config path is a folder, not a file: {path}") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from err


def to_toml(values: dict[str, Any]) -> str:
    """``values`` as TOML text (tuples become arrays); ``tomli-w`` does the quoting."""
    import tomli_w

    return tomli_w.dumps(_toml_plain(values))


def _toml_plain(value: Any) -> Any:
    """TOML's own types: TOML has no null, so an unset value (None) is left out."""
    if isinstance(value, dict):
        return {key: _toml_plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _plain(value: Any) -> Any:
    """JSON's own types: NumPy values and paths converted, and a figure that is undefined
    (NaN: the accuracy of no faces) as null, since strict parsers (browsers', ``jq``'s) reject
    Python's ``NaN``."""
    if isinstance(value, np.ndarray):  # of any rank, 0 included
        value = value.tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value) if isinstance(value, Path) else value
