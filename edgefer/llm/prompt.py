"""The request: a prompt that ignores identity, one image part per face, a JSON schema."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from edgefer.types import EMOTIONS

_CONFIDENCES = ", ".join(f'"{e}": 0.0' for e in EMOTIONS)
SYSTEM_PROMPT = (
    "You label facial expressions in face crops. Ignore identity: never name, recognise or "
    "describe who anyone is. For every image id, give your confidence between 0 and 1 that "
    f"each of these expressions is the one shown: {', '.join(EMOTIONS)} (they should sum to 1). "
    f'Reply with JSON only: {{"faces": [{{"id": "<id>", "confidences": {{{_CONFIDENCES}}}}}]}}, '
    "with exactly one entry per image id."
)
TOP2_SYSTEM_PROMPT = (
    "You label facial expressions in face crops. Ignore identity: never name, recognise or "
    "describe who anyone is. For every image id you are offered two expressions; choose the one "
    "that fits the face better and give your confidence between 0 and 1. "
    'Reply with JSON only: {"faces": [{"id": "<id>", "label": "<label>", "confidence": 0.0}]}, '
    "with exactly one entry per image id."
)


@dataclass(frozen=True)
class FaceQuery:
    """One face to ask about: a JPEG crop, its cache key, and for top-2 prompts two options."""

    face_id: str
    jpeg: bytes
    key: str
    options: tuple[str, str] | None = None
    context_jpeg: bytes | None = None


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def response_schema(ids: list[str], top2: bool) -> dict[str, Any]:
    """Structured-output schema: exactly the given ids; a label from the seven classes and a
    confidence (top-2 prompt) or a confidence per class (open prompt)."""
    if top2:
        answer = {"required": ["id", "label", "confidence"],
                  "properties": {"id": {"type": "string", "enum": ids},
                                 "label": {"type": "string", "enum": list(EMOTIONS)},
                                 "confidence": {"type": "number"}}}
    else:
        answer = {"required": ["id", "confidences"],
                  "properties": {"id": {"type": "string", "enum": ids}, "confidences": {
                      "type": "object", "additionalProperties": False,
                      "required": list(EMOTIONS),
                      "properties": {e: {"type": "number"} for e in EMOTIONS}}}}
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "facial_expressions",
            "strict": True,
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "required": ["faces"],
                "properties": {"faces": {
                    "type": "array", "minItems": len(ids), "maxItems": len(ids),
                    "items": {"type": "object", "additionalProperties": False, **answer},
                }},
            },
        },
    }


def build_messages(queries: list[FaceQuery], detail: str = "low") -> list[dict[str, Any]]:
    top2 = any(q.options for q in queries)
    content: list[dict[str, Any]] = [{
        "type": "text", "text": f"{len(queries)} face image(s) follow, each after its id."}]
    for query in queries:
        text = f"id: {query.face_id}"
        if query.options:
            text += f" (choose {query.options[0]} or {query.options[1]})"
        content.append({"type": "text", "text": text})
        content.append({"type": "image_url",
                        "image_url": {"url": data_url(query.jpeg), "detail": detail}})
        if query.context_jpeg:
            content.append({"type": "text", "text": f"context frame for {query.face_id}:"})
            content.append({"type": "image_url",
                            "image_url": {"url": data_url(query.context_jpeg), "detail": "low"}})
    return [{"role": "system", "content": TOP2_SYSTEM_PROMPT if top2 else SYSTEM_PROMPT},
            {"role": "user", "content": content}]
