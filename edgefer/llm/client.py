"""The network side: batched chat-completion requests with retries, budgets and a breaker.

Retry discipline follows openai-python's own: only 408/409/429/5xx and connection errors are
retried, with capped exponential backoff (the exponent is this request's attempt number),
jitter and the server's ``Retry-After``. The openai client's built-in retries are off so every
attempt is counted and budgeted here. A reply that is invalid (wrong ids, bad labels, malformed
JSON, an oversized, undecodable or mis-shaped body) or a refusal is asked once more; then the
batch is split in two, recursively, down to single faces. Every request has a total deadline
(``timeout_s``), so a server trickling its reply cannot hold a slot for long.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any

from edgefer.errors import require
from edgefer.llm import constants as c
from edgefer.llm.budget import Budget, CircuitBreaker, Spent
from edgefer.llm.cache import AnswerCache
from edgefer.llm.config import LlmConfig
from edgefer.llm.parse import Answer, Parsed, parse_reply
from edgefer.llm.prompt import FaceQuery, build_messages, response_schema
from edgefer.llm.transport import ReplyTooLarge, capped_transport

log = logging.getLogger(__name__)


@dataclass
class LlmStats:
    """Counters exported to the metrics endpoint and the eval report."""

    requests: int = 0
    failed_requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    refusals: int = 0
    invalid_replies: int = 0
    invalid_labels: int = 0  # answers outside the seven classes ("contempt", "unknown")
    splits: int = 0
    cache_hits: int = 0
    requests_today: int = 0  # sent today (UTC) by every run sharing the answer cache: the daily
    # budget's count, read when the client starts and after each request, not per frame
    faces_asked: int = 0
    faces_answered: int = 0
    faces_unanswered: int = 0
    dropped: int = 0
    circuit_rejections: int = 0
    budget_rejections: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["cost_usd"] = round(self.cost_usd, 6)
        return out


UNANSWERED_CAUSES = (("failed_requests", "requests failed after their retries"),
                     ("timeouts", "timeouts"), ("invalid_replies", "invalid replies"),
                     ("refusals", "refusals"),
                     ("invalid_labels", "answers outside the seven classes"),
                     ("budget_rejections", "requests over the budget"),
                     ("circuit_rejections", "requests held back by the open breaker"))


def why_unanswered(stats: dict[str, Any]) -> str:
    """The counters that explain faces asked and never answered, in words: an endpoint that is
    down, one that replies nonsense and one that is merely slow need different fixes."""
    causes = [f"{stats[key]} {what}" for key, what in UNANSWERED_CAUSES if stats.get(key)]
    return ", ".join(causes) or "no reply had come when the run ended: a slow endpoint?"


GAUGES = ("requests_today",)  # readings, not counts: the latest reading stands


def counts_since(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What one client counted between two ``LlmStats.to_dict`` readings (a Ray worker reports
    each input's share, so the driver's totals survive a worker that dies)."""
    return {k: v if k in GAUGES else v - before.get(k, 0) for k, v in now.items()}


def add_counts(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``total`` with ``part`` (another client's or another input's counters) added in."""
    merged = {k: max(total.get(k, 0), v) if k in GAUGES else total.get(k, 0) + v
              for k, v in part.items()}
    merged["cost_usd"] = round(merged.get("cost_usd", 0.0), 6)
    return {**total, **merged}


class Unavailable(Exception):
    """The endpoint cannot be asked now (circuit open, budget spent, retries exhausted)."""


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempt + 1`` of one request: 0.5, 1, 2, 4, 8, 8, ... s,
    each scaled by a random factor in [0.5, 1] so clients do not retry in step."""
    jitter = (rng or random).uniform(0.5, 1.0)
    return min(c.MAX_BACKOFF_S, c.INITIAL_BACKOFF_S * 2 ** min(attempt, 16)) * jitter


def retry_after_s(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), capped."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return min(c.MAX_RETRY_AFTER_S, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(c.MAX_RETRY_AFTER_S, max(0.0, seconds))


def is_policy_rejection(error: Any) -> bool:
    text = f"{getattr(error, 'code', '')} {getattr(error, 'message', '')}".lower()
    return any(word in text for word in ("content_policy", "content policy", "safety", "moderation"))


class LlmClient:
    """Answers face queries, from the cache when possible; must run inside one event loop."""

    def __init__(self, config: LlmConfig, cache: AnswerCache, stats: LlmStats) -> None:
        self.config = config
        self.cache = cache
        self.stats = stats
        self.budget = Budget(config.requests_per_minute, config.tokens_per_minute,
                             config.requests_per_day, cache)
        self.stats.requests_today = self.budget.requests_today()
        self.breaker = CircuitBreaker()
        self._structured = config.structured != "off"
        self._openai = require("openai", "llm")
        self._client = self._openai.AsyncOpenAI(
            base_url=config.resolved_base_url(), api_key=config.resolved_api_key(),
            timeout=config.timeout_s, max_retries=0,
            http_client=self._openai.DefaultAsyncHttpxClient(
                transport=capped_transport(self._openai, c.MAX_BODY_BYTES)))
        self.sleep = asyncio.sleep  # every wait between attempts goes through here

    async def answer(self, queries: list[FaceQuery]) -> dict[str, Answer | None]:
        """An answer (or None when none could be had) for every query id."""
        results: dict[str, Answer | None] = {}
        misses = []
        for query in queries:
            cached = self.cache.get(query.key)
            if cached is not None:
                self.stats.cache_hits += 1
                results[query.face_id] = cached
            else:
                misses.append(query)
        self.stats.faces_asked += len(misses)
        size = self.config.batch_size
        for start in range(0, len(misses), size):
            results.update(await self._ask(misses[start:start + size], retried=False))
        return results

    async def _ask(self, batch: list[FaceQuery], retried: bool) -> dict[str, Answer | None]:
        try:
            parsed = await self._request(batch)
        except Unavailable:
            self.stats.faces_unanswered += len(batch)
            return {q.face_id: None for q in batch}
        if parsed.ok:
            share = [tokens / len(batch) for tokens in parsed.usage]
            parsed.answers = {face_id: replace(answer, prompt_tokens=share[0],
                                               completion_tokens=share[1])
                              for face_id, answer in parsed.answers.items()}
            for query in batch:
                if query.face_id in parsed.answers:
                    self.cache.put(query.key, parsed.answers[query.face_id])
            self.stats.faces_answered += len(parsed.answers)
            self.stats.invalid_labels += len(parsed.invalid_ids)
            self.stats.faces_unanswered += len(parsed.invalid_ids)
            return {q.face_id: parsed.answers.get(q.face_id) for q in batch}
        if parsed.refusal:
            self.stats.refusals += 1
        else:
            self.stats.invalid_replies += 1
        log.debug("LLM reply unusable (%s) for %d faces", parsed.error, len(batch))
        if not retried:
            self.stats.retries += 1
            return await self._ask(batch, retried=True)
        if len(batch) == 1:
            self.stats.faces_unanswered += 1
            return {batch[0].face_id: None}
        self.stats.splits += 1
        half = len(batch) // 2
        first = await self._ask(batch[:half], retried=False)
        return first | await self._ask(batch[half:], retried=False)

    async def _request(self, batch: list[FaceQuery]) -> Parsed:
        if self.budget.day_exhausted():
            self.stats.budget_rejections += 1
            raise Unavailable("daily request budget spent")
        estimate = c.TOKENS_PER_IMAGE_ESTIMATE * len(batch) + 300
        wait = self.budget.wait_s(estimate)
        if wait > 0:
            await self.sleep(wait)
        for attempt in range(self.config.max_retries + 1):
            if not self.breaker.allow():
                self.stats.circuit_rejections += 1
                self.stats.failed_requests += attempt > 0  # sent, failed, then held back
                raise Unavailable("circuit open")
            spent = self.budget.spend(estimate)
            self.stats.requests += 1
            self.stats.requests_today = self.budget.requests_today()
            outcome = await self._attempt(batch, spent, attempt)
            if isinstance(outcome, Parsed):
                return outcome
            if outcome is None or attempt == self.config.max_retries:
                break
            self.stats.retries += 1
            await self.sleep(outcome)
        self.stats.failed_requests += 1
        raise Unavailable("request failed")

    async def _attempt(self, batch: list[FaceQuery], spent: Spent, attempt: int
                       ) -> Parsed | float | None:
        """A parsed reply; or seconds to wait before retrying; or None when retrying is futile."""
        errors = self._openai
        ids = [q.face_id for q in batch]
        try:
            response = await asyncio.wait_for(self._create(batch, ids), self.config.timeout_s)
        except errors.APIStatusError as err:
            return self._status_error(err, attempt)
        except ReplyTooLarge as err:
            return self._unreadable(err)
        except (errors.APITimeoutError, errors.APIConnectionError, TimeoutError) as err:
            if isinstance(err.__cause__, ReplyTooLarge):
                return self._unreadable(err.__cause__)
            self.stats.timeouts += isinstance(err, (errors.APITimeoutError, TimeoutError))
            log.debug("LLM request failed: %s: %s", type(err).__name__, err)
            self._failed(type(err).__name__)
            return backoff_s(attempt)
        except (errors.APIError, ValueError, RecursionError, TypeError) as err:
            return self._unreadable(err)  # a body the client could not decode
        self.breaker.record_success()
        usage = self._count_usage(response, spent)
        try:
            choice = response.choices[0]
            text, finish, refusal = choice.message.content, choice.finish_reason, \
                getattr(choice.message, "refusal", None)
        except (AttributeError, IndexError, TypeError, KeyError) as err:
            return self._unreadable(err)
        if finish == "content_filter" or refusal:
            return Parsed(error="refusal", refusal=True)
        parsed = parse_reply(text, ids)
        parsed.usage = usage
        return parsed

    def _unreadable(self, err: BaseException) -> Parsed:
        """An invalid reply: one log line (the traceback only at debug level)."""
        self.breaker.record_success()  # the server answered; its answer is just unusable
        reason = f"{type(err).__name__}: {str(err)[:200]}"
        log.warning("LLM reply unusable: %s", reason,
                    exc_info=err if log.isEnabledFor(logging.DEBUG) else None)
        return Parsed(error=f"unreadable response ({type(err).__name__})")

    async def _create(self, batch: list[FaceQuery], ids: list[str]) -> Any:
        kwargs: dict[str, Any] = {"model": self.config.model, "temperature": 0,
                                  "messages": build_messages(batch, self.config.detail)}
        if self._structured:
            kwargs["response_format"] = response_schema(ids, self.config.top2)
        try:
            return await self._client.chat.completions.create(**kwargs)
        except self._openai.BadRequestError as err:
            if not (self._structured and self.config.structured == "auto"
                    and "response_format" in str(err)):
                raise
            log.info("server rejects JSON-schema output; falling back to plain JSON prompts")
            self._structured = False
            kwargs.pop("response_format")
            return await self._client.chat.completions.create(**kwargs)

    def _status_error(self, err: Any, attempt: int) -> Parsed | float | None:
        status = err.status_code
        if status in (400, 403) and is_policy_rejection(err):
            self.breaker.record_success()
            return Parsed(error="refusal", refusal=True)
        if status in c.RETRYABLE_STATUS:
            self.stats.rate_limited += status == 429
            self.stats.server_errors += status >= 500
            if status >= 500:
                self._failed(f"HTTP {status}")
            headers = getattr(err.response, "headers", None)
            return retry_after_s(headers) or backoff_s(attempt)
        log.warning("LLM request rejected with HTTP %s: %s", status, getattr(err, "message", ""))
        self._failed(f"HTTP {status}")
        return None

    def _failed(self, reason: str) -> None:
        """A request the endpoint did not answer: counted by the breaker, and said once each
        time the breaker opens, so a kiosk's log shows when the LLM went away, not each retry."""
        opened = self.breaker.times_opened
        self.breaker.record_failure()
        if self.breaker.times_opened > opened:
            log.warning("LLM endpoint %s not answering (%s, %d times in a row); no requests for "
                        "%.0f s", self.config.resolved_base_url() or "api.openai.com", reason,
                        self.breaker.failures, self.breaker.open_s)

    def _count_usage(self, response: Any, spent: Spent) -> tuple[int, int]:
        """The reply's (prompt, completion) tokens, counted, priced and put in the token window
        in place of the request's estimate; (0, 0) when absent."""
        usage = getattr(response, "usage", None)
        prompt = getattr(usage, "prompt_tokens", 0)
        completion = getattr(usage, "completion_tokens", 0)
        if not all(isinstance(x, int) and x >= 0 for x in (prompt, completion)):
            return 0, 0
        self.stats.prompt_tokens += prompt
        self.stats.completion_tokens += completion
        price_in, price_out = self.config.prices_per_million()
        self.stats.cost_usd += (prompt * price_in + completion * price_out) / 1e6
        spent.tokens = prompt + completion
        return prompt, completion

    async def close(self) -> None:
        await self._client.close()
