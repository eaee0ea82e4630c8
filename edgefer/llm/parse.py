"""Parsing LLM replies: a pure function from text to labels (or a reason it is invalid).

Replies are parsed defensively: JSON inside code fences or prose, a list of objects or an
id -> label mapping, label synonyms ("happiness", "anger") mapped to the seven classes.
Anything else is invalid, never guessed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from edgefer.types import canonical_label

REFUSAL_PATTERNS = re.compile(
    r"\b(i'?m sorry|i am sorry|i can(?:no|')t (?:help|assist|comply|provide|identify|analy[sz]e)|"
    r"i am unable|i'm unable|unable to (?:help|assist|comply)|cannot assist|can't assist|"
    r"not able to (?:help|assist)|against (?:my|our) (?:policy|guidelines)|content policy)\b",
    re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    label: str
    confidence: float


@dataclass
class Parsed:
    """Answers by face id; ``error`` says why the reply as a whole is unusable.

    A reply with the right ids is usable even if some labels are not one of the seven classes
    ("contempt", "unknown"): those faces are listed in ``invalid_ids`` and stay unanswered.
    """

    answers: dict[str, Answer] = field(default_factory=dict)
    invalid_ids: set[str] = field(default_factory=set)
    error: str | None = None
    refusal: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def is_refusal(text: str) -> bool:
    """A safety refusal: apologetic prose with no JSON object in it."""
    return "{" not in text and bool(REFUSAL_PATTERNS.search(text))


def parse_reply(text: str | None, expected_ids: list[str]) -> Parsed:
    """Labels for exactly ``expected_ids``, or a Parsed with ``error`` set."""
    if not text or not text.strip():
        return Parsed(error="empty reply")
    if is_refusal(text):
        return Parsed(error="refusal", refusal=True)
    document = _extract_json(text)
    if document is None:
        return Parsed(error="no JSON in reply")
    items = _items(document)
    if items is None:
        return Parsed(error="unexpected JSON shape")
    answers: dict[str, Answer] = {}
    invalid: set[str] = set()
    for face_id, value in items:
        answer = _answer(value)
        if answer is None:
            invalid.add(face_id)
        else:
            answers[face_id] = answer
    ids = [face_id for face_id, _ in items]
    if len(ids) != len(set(ids)) or set(ids) != set(expected_ids):
        return Parsed(error=f"expected ids {sorted(expected_ids)}, got {sorted(ids)}")
    return Parsed(answers=answers, invalid_ids=invalid)


def _extract_json(text: str) -> Any:
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidates = [fenced.group(1)] if fenced else []
    spans = []
    for opening, closing in ("{}", "[]"):
        start, end = text.find(opening), text.rfind(closing)
        if start >= 0 and end > start:
            spans.append((start, end))
    candidates += [text[start:end + 1] for start, end in sorted(spans)]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    return None


def _items(document: Any) -> list[tuple[str, Any]] | None:
    """(id, value) pairs from ``{"faces": [{"id":..}]}``, ``[{"id":..}]`` or ``{"f1": ..}``."""
    if isinstance(document, dict) and isinstance(document.get("faces"), list):
        document = document["faces"]
    if isinstance(document, list):
        if not all(isinstance(d, dict) and "id" in d for d in document):
            return None
        return [(str(d["id"]), d) for d in document]
    if isinstance(document, dict):
        return [(str(k), v) for k, v in document.items()]
    return None


def _answer(value: Any) -> Answer | None:
    if isinstance(value, str):
        label, confidence = canonical_label(value), 1.0
    elif isinstance(value, dict):
        raw = value.get("label", value.get("emotion", ""))
        label = canonical_label(raw) if isinstance(raw, str) else None
        confidence = value.get("confidence", 1.0)
    else:
        return None
    if label is None or not isinstance(confidence, (int, float)) or isinstance(confidence, bool):
        return None
    return Answer(label, float(min(1.0, max(0.0, confidence))))
