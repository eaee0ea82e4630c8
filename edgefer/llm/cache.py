"""A persistent answer cache (SQLite) keyed by everything that makes the question, plus the
daily budget.

Re-scoring a video asks nothing twice. SQLite is in the standard library, handles concurrent
readers, and survives crashes; the worker thread is its only writer.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

from edgefer.errors import OutputError
from edgefer.llm.config import LlmConfig
from edgefer.llm.constants import PROMPT_VERSION
from edgefer.llm.parse import Answer


def cache_key(jpeg: bytes, config: LlmConfig, options: tuple[str, str] | None = None,
              context_jpeg: bytes | None = None) -> str:
    """A digest of every setting that changes the question: the crop, the context frame, the
    model, the prompt (version, open or top-2, the two options offered) and the image detail."""
    digest = hashlib.sha256()
    parts = (jpeg, context_jpeg or b"", config.model, PROMPT_VERSION, config.prompt,
             repr(options), config.detail)
    for part in parts:
        data = part if isinstance(part, bytes) else part.encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class AnswerCache:
    """``get``/``put`` answers by key; ``path=None`` keeps them in memory for this process."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._lock = threading.Lock()
        try:
            if path:  # its folder is made if missing, as the other outputs' are
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL" if path else "PRAGMA journal_mode=MEMORY")
            self._db.execute("CREATE TABLE IF NOT EXISTS answer_distributions "
                             "(key TEXT PRIMARY KEY, label TEXT, confidence REAL, probs TEXT, "
                             "prompt_tokens REAL, completion_tokens REAL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS daily "
                             "(day TEXT PRIMARY KEY, requests INTEGER)")
            self._db.commit()
        except (OSError, sqlite3.Error) as err:
            raise OutputError(f"cannot open the LLM answer cache {path}: {err}") from err

    def get(self, key: str) -> Answer | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM answer_distributions WHERE key = ?",
                                   (key,)).fetchone()
        if row is None:
            return None
        return Answer(row[1], row[2], tuple(json.loads(row[3])) if row[3] else None,
                      row[4] or 0.0, row[5] or 0.0)

    def put(self, key: str, answer: Answer) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answer_distributions "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (key, answer.label, answer.confidence,
                              json.dumps(answer.probs) if answer.probs else None,
                              answer.prompt_tokens, answer.completion_tokens))
            self._db.commit()

    def requests_on(self, day: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT requests FROM daily WHERE day = ?", (day,)).fetchone()
        return int(row[0]) if row else 0

    def count_request(self, day: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO daily VALUES (?, 1) ON CONFLICT(day) "
                             "DO UPDATE SET requests = requests + 1", (day,))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answer_distributions").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
