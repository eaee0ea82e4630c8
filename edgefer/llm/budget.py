"""Local rate limits (requests/minute, tokens/minute, requests/day) and a circuit breaker."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from edgefer.llm.cache import AnswerCache
from edgefer.llm.constants import CIRCUIT_FAILURES, CIRCUIT_OPEN_S

log = logging.getLogger(__name__)


def utc_day() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


@dataclass
class Spent:
    """One request's entry in the token window: its estimate until the server reports usage."""

    at: float
    tokens: int


class Budget:
    """Sliding one-minute windows for requests and tokens; a per-UTC-day request count that
    persists in the answer cache, so restarts do not reset it."""

    def __init__(self, requests_per_minute: int, tokens_per_minute: int, requests_per_day: int,
                 store: AnswerCache, clock: Callable[[], float] = time.monotonic) -> None:
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.per_day = requests_per_day
        self._store = store
        self._clock = clock
        self._requests: deque[float] = deque()
        self._tokens: deque[Spent] = deque()
        self._reported_day = ""

    def requests_today(self) -> int:
        return self._store.requests_on(utc_day())

    def day_exhausted(self) -> bool:
        """Whether today's requests are spent; said once a day in the log, since from then on
        faces go unasked until midnight UTC (counted in ``budget_rejections``)."""
        day = utc_day()
        exhausted = self._store.requests_on(day) >= self.per_day
        if exhausted and self._reported_day != day:
            self._reported_day = day
            log.warning("LLM: today's %d requests are spent (requests_per_day); no face is asked "
                        "until midnight UTC", self.per_day)
        return exhausted

    def wait_s(self, tokens: int) -> float:
        """Seconds until a request of ``tokens`` fits both minute windows (0 if it fits now)."""
        now = self._clock()
        self._expire(now)
        waits = [0.0]
        if len(self._requests) >= self.rpm:
            waits.append(self._requests[0] + 60.0 - now)
        used = sum(spent.tokens for spent in self._tokens)
        if self._tokens and used + tokens > self.tpm:
            waits.append(self._tokens[0].at + 60.0 - now)
        return max(waits)

    def spend(self, tokens: int) -> Spent:
        """Count a request of ``tokens`` (estimated) now; correct its entry when the reply says
        what it used: requests overlap, so the entry, not the window's last, is corrected."""
        now = self._clock()
        spent = Spent(now, tokens)
        self._requests.append(now)
        self._tokens.append(spent)
        self._store.count_request(utc_day())
        return spent

    def _expire(self, now: float) -> None:
        while self._requests and self._requests[0] <= now - 60.0:
            self._requests.popleft()
        while self._tokens and self._tokens[0].at <= now - 60.0:
            self._tokens.popleft()


class CircuitBreaker:
    """Opens after ``failures`` consecutive failed requests; after ``open_s`` lets one trial in."""

    def __init__(self, failures: int = CIRCUIT_FAILURES, open_s: float = CIRCUIT_OPEN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.open_s = open_s
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self.times_opened = 0

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self._opened_at >= self.open_s else "open"

    def allow(self) -> bool:
        return self.state != "open"

    def record_success(self) -> None:
        self._consecutive = 0
        self._opened_at = None

    def record_failure(self) -> None:
        self._consecutive += 1
        if self.state == "half-open" or self._consecutive >= self.failures:
            if self._opened_at is None or self.state == "half-open":
                self.times_opened += 1
            self._opened_at = self._clock()
