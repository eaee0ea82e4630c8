"""Property-based tests: the aligner, the tracker, the LLM reply parser, the config loader."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgefer.align import Aligner, similarity_transforms, valid_rows
from edgefer.apps.kiosk import SECTIONS, _known_keys, load_config
from edgefer.errors import ConfigError
from edgefer.llm.parse import parse_reply
from edgefer.manifest import CropSpec, InputSpec
from edgefer.track import IouTracker, TrackerOptions
from edgefer.types import EMOTIONS, Faces

SPEC = InputSpec("input", 48, 48, 1, "gray", 1 / 255, (0.5,), (0.25,))
coordinates = st.one_of(st.floats(-1e5, 1e5), st.sampled_from([np.nan, np.inf, -np.inf, 0.0]))


@settings(max_examples=200, deadline=None)
@given(keypoints=arrays(np.float64, (3, 6, 2), elements=coordinates),
       height=st.integers(1, 300), width=st.integers(1, 300))
def test_aligner_gives_a_valid_crop_or_a_clear_rejection(keypoints, height, width):
    image = np.full((height, width, 3), 128, np.uint8)
    faces = Faces(np.zeros((3, 4)), np.ones(3), keypoints)
    batch, valid = Aligner(SPEC).align(image, faces)
    assert batch.shape == (3, 1, 48, 48) and batch.dtype == np.float32
    assert np.isfinite(batch).all()
    assert (batch >= -2.0).all() and (batch <= 2.0).all()
    # a row is rejected exactly when its transform is not finite
    np.testing.assert_array_equal(
        valid, valid_rows(similarity_transforms(faces.keypoints, CropSpec(), 48)))


boxes = st.lists(st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(5, 80), st.floats(5, 80)),
                 min_size=0, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(boxes, min_size=1, max_size=8), seed=st.integers(0, 1000))
def test_tracker_ids_do_not_depend_on_detection_order(frames, seed):
    rng = np.random.default_rng(seed)
    tracker_a, tracker_b = IouTracker(), IouTracker()
    for t, frame in enumerate(frames):
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in frame]).reshape(-1, 4)
        order = rng.permutation(len(xyxy))
        a = tracker_a.update(Faces(xyxy, np.ones(len(xyxy)), np.zeros((len(xyxy), 6, 2))), t * 0.1)
        b = tracker_b.update(Faces(xyxy[order], np.ones(len(xyxy)), np.zeros((len(xyxy), 6, 2))),
                             t * 0.1)
        assert len(set(a.track_ids.tolist())) == len(xyxy)  # one track per face
        # the same box gets the same id, unless two boxes tie exactly
        ids_a = dict(zip(map(tuple, xyxy.tolist()), a.track_ids.tolist(), strict=True))
        ids_b = dict(zip(map(tuple, xyxy[order].tolist()), b.track_ids.tolist(), strict=True))
        if len(ids_a) == len(xyxy):
            assert ids_a == ids_b


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(0, 4), min_size=1, max_size=30))
def test_tracker_forgets_ended_tracks(counts):
    tracker = IouTracker(TrackerOptions(timeout_s=0.2))
    for t, n in enumerate(counts):
        xyxy = np.array([[i * 100 + t * 50, 0, i * 100 + t * 50 + 40, 40] for i in range(n)])
        tracker.update(Faces(xyxy.reshape(-1, 4), np.ones(n), np.zeros((n, 6, 2))), t * 0.1)
        tracker.pop_ended()
        assert len(tracker.tracks) <= sum(counts[max(0, t - 2):t + 1])
    for k in range(1, 11):  # a second of frames without faces
        tracker.update(None, (len(counts) + k) * 0.1)
    assert not tracker.tracks


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), st.builds(json.dumps, st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=10),
              st.sampled_from([*EMOTIONS, "happiness", "contempt", "f1", "f2"])),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["faces", "id", "label", "confidence", "f1", "f2"]), children, max_size=4),
    max_leaves=12))))
def test_parser_returns_valid_labels_or_invalid(text):
    parsed = parse_reply(text, ["f1", "f2"])
    if parsed.ok:
        assert set(parsed.answers) | parsed.invalid_ids == {"f1", "f2"}
        for answer in parsed.answers.values():
            assert answer.label in EMOTIONS and 0.0 <= answer.confidence <= 1.0
    else:
        assert parsed.error and not parsed.answers


values = st.one_of(st.integers(-5, 70000), st.floats(allow_nan=False), st.text(max_size=8),
                   st.booleans(), st.lists(st.integers(), max_size=2))
REJECTED = object()
TRUTHY, FALSY = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def expected_value(kind: type, value: object) -> object:
    """The loader's contract: TOML values of the field's type (ints widen to float fields),
    strings (from the environment) parsed as the field's type, anything else rejected."""
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            return text in TRUTHY if text in TRUTHY + FALSY else REJECTED
        try:
            return kind(text)
        except ValueError:
            return REJECTED
    if kind is float and type(value) is int:
        return float(value)
    return value if type(value) is kind else REJECTED


def _section(options, name):
    """The built dataclass behind table ``name`` (None when it is off, like a disabled LLM)."""
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if field.name == name:
            return value
        if dataclasses.is_dataclass(value):
            found = _section(value, name)
            if found is not None:
                return found
    return None


@settings(max_examples=300, deadline=None)
@given(section=st.sampled_from(["capture", "display", "http", "llm", "outputs", "detector",
                                "source", "x"]),
       key=st.sampled_from(["source", "headless", "port", "enabled", "threshold", "model",
                            "batch_size", "zz"]),
       value=values)
def test_config_loader_accepts_or_names_the_key(section, key, value):
    """Values the oracle rejects fail naming the key; accepted ones are stored as the oracle
    says, unless a range check refuses them, again naming the table or the key."""
    hint = _known_keys(section).get(key) if section in SECTIONS else None
    expected = expected_value(hint, value) if hint is not None else REJECTED
    named = re.escape(f"{section}.{key}" if section in SECTIONS else f"[{section}]")
    if expected is REJECTED:
        with pytest.raises(ConfigError, match=named):
            load_config(None, {section: {key: value}}, environ={})
        return
    try:
        options = load_config(None, {section: {key: value}}, environ={})
    except ConfigError as err:  # a range check: port 70000, detector model "abc"...
        assert key in str(err) or f"[{section}]" in str(err)
        return
    built = _section(options, section)
    if built is not None and key != "enabled":
        stored = getattr(built, key)
        assert stored == expected and type(stored) is type(expected)


@pytest.mark.parametrize(("value", "expected"), [("", None), ("0", 0), ("abc", None),
                                                 ("70000", None), (" 9200 ", 9200)])
def test_string_ports_from_the_environment(value, expected):
    if expected is None:
        with pytest.raises(ConfigError, match=r"http\.port"):
            load_config(None, {}, environ={"EDGEFER_HTTP_PORT": value})
    else:
        assert load_config(None, {}, environ={"EDGEFER_HTTP_PORT": value}).http.port == expected
