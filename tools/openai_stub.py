"""A real HTTP server on 127.0.0.1 speaking OpenAI chat completions, with failure modes.

Used by the test suite and the benchmarks; also handy to try ``--llm`` without a key:

    python tools/openai_stub.py --port 8089 --mode normal --delay 2
    edgefer score clip.mp4 -o out.csv --llm --llm-base-url http://127.0.0.1:8089/v1

Modes: normal, slow (``delay`` seconds), rate_limit (429 with Retry-After for the first
``failures`` requests), error (500 for the first ``failures`` requests, or always with
failures=-1), refuse (a safety refusal for batches larger than ``refuse_above`` faces),
policy_error (HTTP 400 content-policy error for batches larger than ``refuse_above``),
malformed (reply text that is not JSON), wrong_count (one face missing from every answer to a
batch of two or more), bad_body (a response body that is not JSON), hang (never answers),
no_schema (rejects ``response_format`` with HTTP 400 like servers without structured output),
flaky (each request at random: normal, slow 1-3 s, 500, 429, refusal or malformed; for soak tests),
prose (plain prose naming one label, as small local models answer single faces).
Hostile modes: huge (20 MB of message content), deep (a body that is a 200,000-deep JSON
array), no_choices (a JSON body without ``choices``), bad_utf8 (a body that is not UTF-8),
trickle (a valid body sent one byte per second).

``StubState.answer`` returns a label, or a ranking (a list of labels, best first), per face.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER_LABEL = "happy"


@dataclass
class FaceRequest:
    face_id: str
    jpeg: bytes
    options: tuple[str, str] | None


@dataclass
class StubState:
    mode: str = "normal"
    delay_s: float = 0.0
    failures: int = 1
    refuse_above: int = 1
    answer: Callable[[FaceRequest], str | list[str]] = lambda face: ANSWER_LABEL
    gate: threading.Event | None = None  # when set up, answers wait until it is set
    requests: list[dict[str, Any]] = field(default_factory=list)
    images_per_request: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, body: dict[str, Any], faces: list[FaceRequest]) -> int:
        with self.lock:
            self.requests.append({"faces": len(faces), "schema": "response_format" in body,
                                  "ids": [f.face_id for f in faces]})
            return len(self.requests)


def parse_faces(body: dict[str, Any]) -> list[FaceRequest]:
    """Face ids and JPEG bytes from the user message: text "id: X" followed by an image part."""
    faces: list[FaceRequest] = []
    pending: tuple[str, tuple[str, str] | None] | None = None
    for message in body.get("messages", []):
        if message.get("role") != "user" or not isinstance(message.get("content"), list):
            continue
        for part in message["content"]:
            if part.get("type") == "text":
                match = re.match(r"id: (\S+)(?: \(choose (\w+) or (\w+)\))?", part["text"])
                if match:
                    options = (match.group(2), match.group(3)) if match.group(2) else None
                    pending = (match.group(1), options)
            elif part.get("type") == "image_url" and pending is not None:
                url = part["image_url"]["url"]
                faces.append(FaceRequest(pending[0], base64.b64decode(url.split(",", 1)[1]),
                                         pending[1]))
                pending = None
    return faces


def completion(content: str, finish_reason: str = "stop", faces: int = 1) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()),
        "model": "stub", "choices": [{"index": 0, "finish_reason": finish_reason,
                                      "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 100 + 85 * faces, "completion_tokens": 12 * faces,
                  "total_tokens": 100 + 97 * faces},
    }


HOSTILE = ("huge", "deep", "no_choices", "bad_utf8", "trickle")
MODES = ("normal", "slow", "rate_limit", "error", "refuse", "policy_error", "malformed",
         "wrong_count", "bad_body", "hang", "no_schema", "flaky", "prose", *HOSTILE)  # docstring


def face_entry(face: FaceRequest, answer: str | list[str]) -> dict[str, Any]:
    """One face of a reply: a ranking when the answer is a list, else a label and confidence."""
    if isinstance(answer, list):
        return {"id": face.face_id, "ranking": answer}
    return {"id": face.face_id, "label": answer, "confidence": 0.9}


def make_handler(state: StubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if not self.path.rstrip("/").endswith("chat/completions"):
                return self._send(404, {"error": {"message": "not found"}})
            faces = parse_faces(body)
            number = state.record(body, faces)
            state.images_per_request.append(sum(
                1 for m in body.get("messages", []) if isinstance(m.get("content"), list)
                for part in m["content"] if part.get("type") == "image_url"))
            self._respond(state, body, faces, number)

        def _respond(self, state: StubState, body: dict[str, Any], faces: list[FaceRequest],
                     number: int) -> None:
            mode = state.mode
            if mode == "flaky":
                mode = random.choice(["normal", "normal", "slow", "error", "rate_limit",
                                      "refuse", "malformed"])
                if mode == "slow":
                    time.sleep(random.uniform(1, 3))
            failing = state.failures < 0 or number <= state.failures or state.mode == "flaky"
            if mode == "hang":
                time.sleep(3600)
            if state.gate is not None:
                state.gate.wait(timeout=60)
            if mode in ("slow", "normal") and state.delay_s:
                time.sleep(state.delay_s)
            if mode == "rate_limit" and failing:
                return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                                  {"Retry-After": "1"})
            if mode == "error" and failing:
                return self._send(500, {"error": {"message": "internal error"}})
            if mode == "no_schema" and "response_format" in body:
                return self._send(400, {"error": {"message": "response_format is not supported"}})
            if mode == "policy_error" and len(faces) > state.refuse_above:
                return self._send(400, {"error": {"message": "flagged by content policy",
                                                  "code": "content_policy_violation"}})
            if mode == "refuse" and len(faces) > state.refuse_above:
                return self._send(200, completion("I'm sorry, I can't help with that request."))
            if mode == "malformed":
                return self._send(200, completion('here you go: {"faces": [{"id": '))
            if mode == "bad_body":
                return self._send_raw(200, b"{not json")
            if mode in HOSTILE:
                return self._hostile(mode, faces)
            if mode == "prose":
                return self._send(200, completion(f"The person looks {state.answer(faces[0])}."))
            answered = faces[:-1] if mode == "wrong_count" and len(faces) > 1 else faces
            reply = {"faces": [face_entry(f, state.answer(f)) for f in answered]}
            return self._send(200, completion(json.dumps(reply), faces=len(faces)))

        def _hostile(self, mode: str, faces: list[FaceRequest]) -> None:
            if mode == "huge":
                return self._send(200, completion("x" * 20_000_000, faces=len(faces)))
            if mode == "deep":
                return self._send_raw(200, b"[" * 200_000 + b"]" * 200_000)
            if mode == "no_choices":
                return self._send(200, {"id": "chatcmpl-stub", "object": "chat.completion"})
            if mode == "bad_utf8":
                return self._send_raw(200, b'{"choices": [{"message": {"content": "\xff\xfe\xc3"}}]}')
            data = json.dumps(completion(json.dumps({"faces": [face_entry(f, ANSWER_LABEL)
                                                               for f in faces]}))).encode()
            self._send_raw(200, data, trickle=True)

        def _send(self, status: int, payload: dict[str, Any],
                  headers: dict[str, str] | None = None) -> None:
            self._send_raw(status, json.dumps(payload).encode(), headers)

        def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None,
                      trickle: bool = False) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may hang up on a hostile reply
                if not trickle:
                    self.wfile.write(data)
                for byte in data if trickle else b"":
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(1.0)

    return Handler


class StubServer:
    """Start with ``with StubServer() as server:``; ``server.base_url`` ends in /v1."""

    def __init__(self, state: StubState | None = None, port: int = 0) -> None:
        self.state = state or StubState()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(self.state))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--mode", default="normal", choices=MODES,
                        help="how it answers (described at the top of this file)")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--failures", type=int, default=1)
    parser.add_argument("--refuse-above", type=int, default=1,
                        help="refuse/policy_error: batches with more faces than this")
    args = parser.parse_args()
    state = StubState(mode=args.mode, delay_s=args.delay, failures=args.failures,
                      refuse_above=args.refuse_above)
    with StubServer(state, args.port) as server:
        print(f"OpenAI-compatible stub on {server.base_url} (mode {args.mode}); Ctrl-C stops")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
