"""The reply parser on canned strings."""

from __future__ import annotations

import pytest

from edgefer.llm.parse import Answer, is_refusal, parse_reply

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
