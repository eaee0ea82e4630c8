"""The reply parser on canned strings."""

from __future__ import annotations

import pytest

from edgefer.llm.parse import Answer, is_refusal, parse_reply, rank_distribution
from edgefer.types import EMOTIONS

IDS = ["f1", "f2"]


@pytest.mark.parametrize(("text", "expected"), [
    ('{"faces": [{"id": "f1", "label": "happy", "confidence": 0.8},'
     ' {"id": "f2", "label": "Sadness", "confidence": 0.6}]}',
     {"f1": Answer("happy", 0.8), "f2": Answer("sad", 0.6)}),
    ('```json\n{"f1": "anger", "f2": {"emotion": "surprised"}}\n```',
     {"f1": Answer("angry", 1.0), "f2": Answer("surprise", 1.0)}),
    ('Sure! Here it is: [{"id": "f1", "label": "neutral", "confidence": 3},'
     ' {"id": "f2", "label": "fear", "confidence": -1}] hope that helps',
     {"f1": Answer("neutral", 1.0), "f2": Answer("fear", 0.0)}),
])
def test_valid_replies(text, expected):
    parsed = parse_reply(text, IDS)
    assert parsed.ok, parsed.error
    assert parsed.answers == expected


@pytest.mark.parametrize(("text", "error"), [
    (None, "empty"),
    ("   ", "empty"),
    ("I'm sorry, but I can't help with identifying people.", "refusal"),
    ('{"faces": [{"id": "f1", "label": "happy"}]}', "expected ids"),
    ('{"faces": [{"id": "f1", "label": "happy"}, {"id": "f3", "label": "sad"}]}', "expected ids"),
    ('{"faces": [{"id": "f1", "label": "happy"}, {"id": "f1", "label": "sad"}]}', "expected ids"),
    ('{"faces": [{"id": "f1", "label": "happy"}, {"id": "f2", "label": ', "no JSON"),
    ("The first person looks happy and the second sad.", "no JSON"),
    ('{"faces": [1, 2]}', "unexpected JSON shape"),
    ('[{"label": "happy"}]', "unexpected JSON shape"),
])
def test_invalid_replies(text, error):
    parsed = parse_reply(text, IDS)
    assert not parsed.ok
    assert error in parsed.error
    assert parsed.refusal == (error == "refusal")


@pytest.mark.parametrize("value", ['"contempt"', '{"label": "happy", "confidence": "high"}',
                                   '{"label": 3}', "null"])
def test_labels_outside_the_seven_classes_leave_that_face_unanswered(value):
    parsed = parse_reply(f'{{"f1": {value}, "f2": "sad"}}', IDS)
    assert parsed.ok
    assert parsed.invalid_ids == {"f1"}
    assert parsed.answers == {"f2": Answer("sad", 1.0)}


def test_prose_that_contains_json_is_not_a_refusal():
    assert not is_refusal('I am unable to be sure, but: {"f1": "happy"}')
    assert is_refusal("I cannot assist with that.")


def test_a_confidence_per_label_becomes_a_normalised_distribution():
    parsed = parse_reply('{"faces": [{"id": "f1", "confidences": {"happy": 3, "neutral": 1, '
                         '"contempt": 5, "sad": "x"}}, {"id": "f2", "scores": {"Sadness": 0.7, '
                         '"fear": 0.3}}]}', IDS)
    assert parsed.ok, parsed.error
    f1, f2 = parsed.answers["f1"], parsed.answers["f2"]
    assert (f1.label, f1.confidence) == ("happy", 0.75)
    assert f1.distribution()[EMOTIONS.index("neutral")] == pytest.approx(0.25)
    assert f1.distribution().sum() == pytest.approx(1.0)
    assert (f2.label, f2.confidence) == ("sad", pytest.approx(0.7))


def test_a_ranking_becomes_halving_weights():
    probs = rank_distribution(["Surprise", "fear", "contempt", "neutral", "sadness", "anger"])
    # contempt is skipped: five ranked classes, two (disgust, happy) unranked
    expected = {"surprise": 0.5, "fear": 0.25, "neutral": 0.125, "sad": 0.0625, "angry": 0.03125,
                "disgust": 0.015625, "happy": 0.015625}
    assert {e: round(float(p), 6) for e, p in zip(EMOTIONS, probs, strict=True)} == expected
    parsed = parse_reply('{"f1": {"ranking": ["fear", "sad"]}, "f2": ["happy"]}', IDS)
    assert parsed.answers["f1"].label == "fear" and parsed.answers["f2"].label == "happy"
    assert rank_distribution(["contempt", "unknown"]) is None


@pytest.mark.parametrize(("text", "label"), [
    ("neutral", "neutral"), ("Happiness.", "happy"), ("The person looks happy.", "happy"),
    ('{"label": "sad", "confidence": 0.6}', "sad"), ("surprised!", "surprise"),
])
def test_single_faces_may_be_answered_in_prose_or_without_an_id(text, label):
    parsed = parse_reply(text, ["only"])
    assert parsed.ok, parsed.error
    assert parsed.answers["only"].label == label


@pytest.mark.parametrize(("text", "ids", "error"), [
    ("The person looks happy.", IDS, "no JSON"),  # several faces need ids
    ("Happy or maybe sad.", ["only"], "several labels"),
    ("I see a face.", ["only"], "no JSON"),
    ('{"label": "sad"}', IDS, "expected ids"),
])
def test_prose_is_accepted_only_when_unambiguous(text, ids, error):
    parsed = parse_reply(text, ids)
    assert not parsed.ok and error in parsed.error


@pytest.mark.parametrize("text", ["[" * 200_000 + "]" * 200_000,
                                  '{"f1": ' + "[" * 100_000 + "]" * 100_000 + ', "f2": "sad"}',
                                  "x" * 20_000_000, "\udcff\udcfe garbage"])
def test_hostile_text_is_an_invalid_reply_not_an_exception(text):
    parsed = parse_reply(text, IDS)
    assert not parsed.ok and not parsed.answers
