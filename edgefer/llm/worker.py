"""The background worker: a bounded priority queue feeding an asyncio loop in its own thread.

``submit`` and ``poll`` are the only calls the frame loop makes; neither blocks on the network.
When the queue is full the least useful request (the highest priority value: the most
confident face, or under the learned policy the least expected benefit) is dropped, counted
and reported by ``poll`` as unanswered, so that nobody waits for it. Up to ``MAX_IN_FLIGHT``
requests run concurrently.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from edgefer.llm.cache import AnswerCache
from edgefer.llm.client import LlmClient, LlmStats
from edgefer.llm.config import LlmConfig
from edgefer.llm.parse import Answer
from edgefer.llm.prompt import FaceQuery

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2


@dataclass(order=True)
class Request:
    """A face to ask about; lower ``priority`` is asked first (the CNN's confidence, or minus
    the learned policy's expected benefit)."""

    priority: float
    seq: int
    query: FaceQuery = field(compare=False)
    meta: dict[str, Any] = field(compare=False, default_factory=dict)


@dataclass(frozen=True)
class Result:
    meta: dict[str, Any]
    answer: Answer | None
    latency_s: float


class SecondOpinion:
    """Owns the worker thread, its event loop, the client and the cache; a context manager."""

    def __init__(self, config: LlmConfig, stats: LlmStats | None = None) -> None:
        self.config = config
        self.stats = stats or LlmStats()
        self.cache = AnswerCache(config.cache_path)
        self._heap: list[tuple[float, int, Request]] = []
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._results: deque[Result] = deque()
        self._in_flight = 0
        self._closing = False
        self._wake: asyncio.Event | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._loop = asyncio.new_event_loop()
        self._client = LlmClient(config, self.cache, self.stats)  # raises on a missing key
        self._thread = threading.Thread(target=self._run_loop, name="edgefer-llm", daemon=True)
        self._thread.start()

    # -- frame-loop side -------------------------------------------------------------------
    def submit(self, query: FaceQuery, priority: float, meta: dict[str, Any]) -> bool:
        """Queue a face; False if it was dropped because the queue is full of more useful ones."""
        request = Request(priority, next(self._seq), query, meta)
        with self._lock:
            if len(self._heap) >= self.config.queue_size:
                least_useful = max(self._heap)
                if request >= least_useful[2]:
                    self.stats.dropped += 1
                    return False
                self._heap.remove(least_useful)
                heapq.heapify(self._heap)
                self.stats.dropped += 1
                self._results.append(Result(least_useful[2].meta, None, 0.0))  # never answered
            heapq.heappush(self._heap, (request.priority, request.seq, request))
        self._loop.call_soon_threadsafe(self._notify)
        return True

    def poll(self) -> list[Result]:
        """Answers that arrived since the last call."""
        out = []
        while self._results:
            out.append(self._results.popleft())
        return out

    def pending(self) -> int:
        with self._lock:
            return len(self._heap) + self._in_flight

    def queued(self) -> int:
        with self._lock:
            return len(self._heap)

    def drain(self, timeout_s: float) -> bool:
        """Wait (this is for the end of offline runs) until nothing is pending; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.pending() == 0

    def close(self) -> None:
        """Stop now: requests still in flight are cancelled, not awaited (an endpoint that
        hangs would hold the end of a run for its whole timeout)."""
        if self._closing:
            return
        self._closing = True
        self._loop.call_soon_threadsafe(self._cancel)
        self._thread.join(timeout=10)
        self.cache.close()

    def __enter__(self) -> SecondOpinion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- worker-thread side ----------------------------------------------------------------
    def _notify(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _cancel(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._consumer = self._loop.create_task(self._consume())
        try:
            self._loop.run_until_complete(self._consumer)
        except asyncio.CancelledError:  # close()
            pass
        finally:
            self._loop.run_until_complete(self._client.close())
            self._loop.close()

    async def _consume(self) -> None:
        self._wake = asyncio.Event()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not self._closing:
                if not self.queued():
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self.queued() < self.config.batch_size:
                    await asyncio.sleep(self.config.batch_wait_s)  # let a batch fill up
                await slots.acquire()
                batch = self._take(self.config.batch_size)
                if not batch:
                    slots.release()
                    continue
                task = asyncio.create_task(self._ask(batch, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:  # closing (cancelled wherever it waited): the requests in flight go too
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _take(self, count: int) -> list[Request]:
        with self._lock:
            batch = [heapq.heappop(self._heap)[2] for _ in range(min(count, len(self._heap)))]
            self._in_flight += len(batch)
        return batch

    async def _ask(self, batch: list[Request], slots: asyncio.Semaphore) -> None:
        start = time.monotonic()
        try:
            answers = await self._client.answer([r.query for r in batch])
        except Exception as err:  # never let a bug in one batch kill the worker
            log.error("LLM batch failed: %s: %s", type(err).__name__, err,
                      exc_info=err if log.isEnabledFor(logging.DEBUG) else None)
            answers = {}
        finally:
            slots.release()
        latency = time.monotonic() - start
        for request in batch:
            self._results.append(Result(request.meta, answers.get(request.query.face_id), latency))
        with self._lock:
            self._in_flight -= len(batch)
