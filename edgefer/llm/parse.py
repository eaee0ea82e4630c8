"""Parsing LLM replies: a pure function from text to answer distributions (or a reason it is invalid).

Replies are parsed defensively: JSON inside code fences or prose, a list of objects or an
id -> answer mapping, label synonyms ("happiness", "anger") mapped to the seven classes. Each
face's answer may be a confidence per label, a ranking, or one label with a confidence; all
become a distribution over the seven classes (see ``rank_distribution``). A single-face request
may also be answered in plain prose or with a bare label ("neutral", "The person looks happy."):
one face and one label named is unambiguous. Anything else is invalid, never guessed. Hostile
input (huge, deeply nested, undecodable) is an invalid reply, never an exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefer.llm.constants import MAX_REPLY_CHARS
from edgefer.types import EMOTIONS, canonical_label

REFUSAL_PATTERNS = re.compile(
    r"\b(i'?m sorry|i am sorry|i can(?:no|')t (?:help|assist|comply|provide|identify|analy[sz]e)|"
    r"i am unable|i'm unable|unable to (?:help|assist|comply)|cannot assist|can't assist|"
    r"not able to (?:help|assist)|against (?:my|our) (?:policy|guidelines)|content policy)\b",
    re.IGNORECASE)
DISTRIBUTION_KEYS = ("confidences", "scores", "probabilities")
RANKING_KEYS = ("ranking", "ranks", "labels")
ANSWER_KEYS = ("label", "emotion", *DISTRIBUTION_KEYS, *RANKING_KEYS)


@dataclass(frozen=True)
class Answer:
    """The LLM's answer for one face: its label, its confidence, and a distribution over the
    seven classes (``probs``; when a reply gave only a label and a confidence, the rest of the
    mass is spread evenly over the other classes)."""

    label: str
    confidence: float
    probs: tuple[float, ...] | None = None
    # this face's share of its request's reported usage (0 when unknown)
    prompt_tokens: float = field(default=0.0, compare=False)
    completion_tokens: float = field(default=0.0, compare=False)

    def distribution(self) -> np.ndarray:
        if self.probs is not None:
            return np.asarray(self.probs, np.float32)
        rest = (1 - self.confidence) / (len(EMOTIONS) - 1)
        probs = np.full(len(EMOTIONS), rest, np.float32)
        probs[EMOTIONS.index(self.label)] = self.confidence
        return probs

    @classmethod
    def from_distribution(cls, probs: np.ndarray) -> Answer:
        probs = np.asarray(probs, np.float64)
        probs = probs / probs.sum()
        best = int(probs.argmax())
        return cls(EMOTIONS[best], float(probs[best]), tuple(round(float(p), 6) for p in probs))


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
    usage: tuple[int, int] = (0, 0)  # the request's (prompt, completion) tokens, set by the client

    @property
    def ok(self) -> bool:
        return self.error is None


def rank_distribution(ranking: list[str]) -> np.ndarray | None:
    """A ranking as a distribution: rank r (0 first) weighs 2^-r, every unranked class
    2^-len(ranking); normalised. A 5-label ranking gives 0.5, 0.25, 0.125, 0.0625, 0.03125 and
    0.015625 to each of the two unranked classes. Labels outside the seven are skipped."""
    labels = [canonical_label(x) for x in ranking if isinstance(x, str)]
    labels = list(dict.fromkeys(x for x in labels if x is not None))
    if not labels:
        return None
    weights = np.full(len(EMOTIONS), 0.5 ** len(labels))
    for rank, label in enumerate(labels):
        weights[EMOTIONS.index(label)] = 0.5 ** rank
    return weights / weights.sum()


def is_refusal(text: str) -> bool:
    """A safety refusal: apologetic prose with no JSON object in it."""
    return "{" not in text and bool(REFUSAL_PATTERNS.search(text))


def parse_reply(text: str | None, expected_ids: list[str]) -> Parsed:
    """Answers for exactly ``expected_ids``, or a Parsed with ``error`` set."""
    if not isinstance(text, str) or not text.strip():
        return Parsed(error="empty reply")
    if len(text) > MAX_REPLY_CHARS:
        return Parsed(error=f"reply longer than {MAX_REPLY_CHARS} characters")
    if is_refusal(text):
        return Parsed(error="refusal", refusal=True)
    document = _extract_json(text)
    if document is None:
        if len(expected_ids) == 1:
            return _single_from_prose(text, expected_ids[0])
        return Parsed(error="no JSON in reply")
    if len(expected_ids) == 1 and isinstance(document, dict) and \
            any(key in document for key in ANSWER_KEYS):
        document = {expected_ids[0]: document}  # one face answered without its id
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
        shown = sorted(ids)[:10]
        return Parsed(error=f"expected ids {sorted(expected_ids)}, got {shown}")
    return Parsed(answers=answers, invalid_ids=invalid)


def _single_from_prose(text: str, face_id: str) -> Parsed:
    """One face answered in words: valid when exactly one of the seven classes is named."""
    named = {canonical_label(word) for word in re.findall(r"[a-z]+", text.lower())} - {None}
    if len(named) != 1:
        return Parsed(error="no JSON in reply" if not named else "prose names several labels")
    label = named.pop()
    assert label is not None
    return Parsed(answers={face_id: Answer(label, 1.0)})


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
        except (json.JSONDecodeError, RecursionError):  # a 200,000-deep array is just invalid
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
        label = canonical_label(value)
        return Answer(label, 1.0) if label else None
    if isinstance(value, list):
        return _from_ranking(value)
    if not isinstance(value, dict):
        return None
    for key in DISTRIBUTION_KEYS:
        if isinstance(value.get(key), dict):
            return _from_confidences(value[key])
    for key in RANKING_KEYS:
        if isinstance(value.get(key), list):
            return _from_ranking(value[key])
    raw = value.get("label", value.get("emotion", ""))
    label = canonical_label(raw) if isinstance(raw, str) else None
    confidence = value.get("confidence", 1.0)
    if label is None or not _is_number(confidence):
        return None
    return Answer(label, float(min(1.0, max(0.0, confidence))))


def _from_ranking(ranking: list[Any]) -> Answer | None:
    probs = rank_distribution(ranking)
    return Answer.from_distribution(probs) if probs is not None else None


def _from_confidences(scores: dict[str, Any]) -> Answer | None:
    """A confidence per label; unknown labels and bad numbers are ignored, then normalised."""
    probs = np.zeros(len(EMOTIONS))
    for name, score in scores.items():
        label = canonical_label(str(name))
        if label is not None and _is_number(score) and 0 <= score < float("inf"):
            probs[EMOTIONS.index(label)] += float(score)
    return Answer.from_distribution(probs) if probs.sum() > 0 else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
