"""A persistent answer cache (SQLite) keyed by crop, model and prompt, plus the daily budget.

Re-scoring a video asks nothing twice. SQLite is in the standard library, handles concurrent
readers, and survives crashes; the worker thread is its only writer.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

from edgefer.llm.constants import PROMPT_VERSION
from edgefer.llm.parse import Answer


def cache_key(jpeg: bytes, model: str, variant: str = "") -> str:
    digest = hashlib.sha256()
    for part in (jpeg, model.encode(), PROMPT_VERSION.encode(), variant.encode()):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


class AnswerCache:
    """``get``/``put`` answers by key; ``path=None`` keeps them in memory for this process."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL" if path else "PRAGMA journal_mode=MEMORY")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers "
                         "(key TEXT PRIMARY KEY, label TEXT, confidence REAL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS daily (day TEXT PRIMARY KEY, requests INTEGER)")
        self._db.commit()

    def get(self, key: str) -> Answer | None:
        with self._lock:
            row = self._db.execute("SELECT label, confidence FROM answers WHERE key = ?",
                                   (key,)).fetchone()
        return Answer(row[0], row[1]) if row else None

    def put(self, key: str, answer: Answer) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)",
                             (key, answer.label, answer.confidence))
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
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
