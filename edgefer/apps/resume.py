"""Resuming an interrupted ``edgefer score`` run without duplicate or missing rows.

``score`` records each finished input in ``OUT.progress.json`` (written atomically when the
table is opened and after each input, and kept when the run completes, so that a finished table
can be extended with more inputs, and a resume of it skips what it holds). On ``--resume`` the
table is repaired: a torn last line is cut, and the rows of the last frame of the unfinished
input are removed (that frame may have been half written); scoring then restarts at that frame,
with track ids continuing after the ones already written.

The record also holds the settings that decide the rows (``apps.score.run_settings``): a resume
asking for another model, stride, frame rate... is refused before the table is touched, since the
table would mix rows of both. A table without a record was not written by this version of
``score`` (or by none) and is refused: nothing says which inputs it holds, or how they were
scored. A record written before settings were kept cannot say: the resume is accepted, and its
record keeps saying nothing of the settings.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefer.errors import InputError, OutputError
from edgefer.files import write_json_atomic

RESUMABLE = (".csv", ".jsonl")


def progress_path(output: Path) -> Path:
    return output.with_name(output.name + ".progress.json")


@dataclass
class ResumeState:
    completed: set[str] = field(default_factory=set)
    start_frame: dict[str, int] = field(default_factory=dict)
    next_track_id: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    settings_known: bool = True  # False: the table's record said nothing of its settings


def record_completed(output: Path, completed: list[str], settings: dict[str, Any] | None,
                     partial: dict[str, int] | None = None) -> None:
    """``settings`` None: unknown (a table continued from a record that held none), so that
    a later resume is not checked against settings the table's first rows may not have.
    ``partial``: inputs whose rows stop before their end, with the frame to continue from (one
    that failed when its resume came, so that other inputs' rows now follow its own)."""
    write_json_atomic(progress_path(output), {"completed": completed, "settings": settings,
                                              "partial": partial or {}})


def prepare_resume(output: Path, settings: dict[str, Any], items: list[str]) -> ResumeState:
    """Read what a previous run wrote, check it used ``settings`` (this run's
    ``apps.score.run_settings``), repair the table's tail, and say where this run's ``items``
    continue."""
    if output.suffix.lower() not in RESUMABLE:
        raise InputError(f"--resume works with {' and '.join(RESUMABLE)} tables, not {output.suffix}")
    if not output.is_file():
        raise InputError(f"nothing to resume: {output} does not exist")
    completed, recorded, partial = _read_record(output)
    if recorded is not None:
        _check_settings(output, recorded, settings)
    state = ResumeState(completed=completed, settings_known=recorded is not None,
                        start_frame=dict(partial))
    lines = _complete_lines(output)
    rows = [_parse(output, line, lines[0] if output.suffix == ".csv" else None) for line in
            lines[1 if output.suffix == ".csv" else 0:]]
    # Inputs are scored one after the other, the one a run stopped in first: any input before
    # the last one in the table is done, but those the record says are partial.
    if rows:
        state.completed |= {row["file"] for row in rows[:-1]} - {rows[-1]["file"]} - set(partial)
    keep = len(rows)
    if rows and rows[-1]["file"] not in state.completed:
        item, last_frame = rows[-1]["file"], int(rows[-1]["frame"])
        if item not in items:  # its rows would end up mid-table, never to be finished
            raise InputError(f"--resume: {item} was being scored when {output} stopped; resume "
                             "with it among the inputs")
        while keep and rows[keep - 1]["file"] == item and int(rows[keep - 1]["frame"]) == last_frame:
            keep -= 1
        state.start_frame[item] = last_frame
    state.rows = rows[:keep]
    for row in state.rows:
        item = row["file"]
        state.next_track_id[item] = max(state.next_track_id.get(item, 1), int(row["track_id"]) + 1)
    header = 1 if output.suffix == ".csv" else 0
    _truncate(output, sum(len(line.encode()) for line in lines[:header + keep]))
    return state


def _read_record(output: Path) -> tuple[set[str], dict[str, Any] | None, dict[str, int]]:
    """The inputs the record says are complete, the settings it holds (None: a record written
    before settings were kept), and the partial inputs with the frame each continues from."""
    path = progress_path(output)
    if not path.is_file():
        raise InputError(f"nothing to resume: {output} has no record of its inputs ({path.name}), "
                         "so it was not written by this version of edgefer score; score into a "
                         "new table, or start again with --overwrite")
    try:
        record = json.loads(path.read_text())
        settings = record.get("settings")
        if settings is not None and not isinstance(settings, dict):
            raise TypeError(f"settings is a {type(settings).__name__}")
        partial = {str(item): int(frame) for item, frame in record.get("partial", {}).items()}
        return set(record["completed"]), settings, partial
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as err:
        raise InputError(f"{path} is damaged ({err}); delete it to rescore every input") from err


def _check_settings(output: Path, recorded: dict[str, Any], settings: dict[str, Any]) -> None:
    """Refuse to continue a table with other settings: its rows would not be comparable (one
    input at two strides, or scored by two models) and nothing in the table would say so."""
    old, new = _flatten(recorded), _flatten(settings)
    changed = [key for key in new if old.get(key) != new[key]]
    changed += [key for key in old if key not in new]
    if changed:
        raise InputError(f"--resume: {output} was scored with {_describe(old, changed)}; this run "
                         f"asks for {_describe(new, changed)}: run with the same settings, or "
                         "--overwrite to start again")


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (``tracker.max_age``), so a message names the one that differs."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _describe(settings: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{key} {_show(settings.get(key))}" for key in keys)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return "/".join(str(v) for v in value)
    return str(value)


def _complete_lines(output: Path) -> list[str]:
    """The file's lines up to the last newline (a torn final line is dropped)."""
    text = output.read_bytes().decode("utf-8", errors="replace")
    end = text.rfind("\n") + 1
    return text[:end].splitlines(keepends=True)


def _parse(output: Path, line: str, header: str | None) -> dict[str, Any]:
    try:
        if header is None:
            return json.loads(line)
        return next(csv.DictReader(io.StringIO(header + line)))
    except (json.JSONDecodeError, StopIteration) as err:
        raise InputError(f"{output} has an unreadable row; cannot resume: {line[:80]!r}") from err


def _truncate(output: Path, size: int) -> None:
    try:
        with output.open("r+b") as handle:
            handle.truncate(size)
    except OSError as err:
        raise OutputError(f"cannot repair {output}: {err.strerror}") from err
