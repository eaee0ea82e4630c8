"""The LLM client and worker with the real openai client against a real HTTP server."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time

import numpy as np
import pytest

pytest.importorskip("openai")

from edgefer.errors import ConfigError
from edgefer.images import encode_jpeg
from edgefer.llm.cache import AnswerCache, cache_key
from edgefer.llm.client import LlmClient, LlmStats, backoff_s, retry_after_s
from edgefer.llm.config import LlmConfig
from edgefer.llm.prompt import FaceQuery
from edgefer.llm.worker import MAX_IN_FLIGHT, SecondOpinion
from edgefer.types import EMOTIONS
from tools.openai_stub import StubServer, StubState


def queries(n: int, offset: int = 0) -> list[FaceQuery]:
    rng = np.random.default_rng(offset)
    out = []
    for i in range(offset, offset + n):
        jpeg = encode_jpeg(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), 85)
        out.append(FaceQuery(f"f{i}", jpeg, cache_key(jpeg, LlmConfig(model="stub"))))
    return out


def ask(server: StubServer | str, items: list[FaceQuery], cache: AnswerCache | None = None,
        sleeps: list[float] | None = None, **config) -> tuple[dict, LlmStats]:
    """Ask through a real client; with ``sleeps``, the waits between attempts are recorded
    there instead of slept."""
    stats = LlmStats()
    base_url = server if isinstance(server, str) else server.base_url
    settings = {"model": "stub", "base_url": base_url, "timeout_s": 2.0, "max_retries": 2, **config}

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    async def run():
        client = LlmClient(LlmConfig(**settings), cache if cache is not None else AnswerCache(), stats)
        if sleeps is not None:
            client.sleep = record
        try:
            return await client.answer(items)
        finally:
            await client.close()

    return asyncio.run(run()), stats


@pytest.fixture
def server():
    with StubServer(StubState()) as stub:
        yield stub


def test_batches_of_twenty(server):
    answers, stats = ask(server, queries(45))
    assert [r["faces"] for r in server.state.requests] == [20, 20, 5]
    assert all(a.label == "happy" for a in answers.values()) and len(answers) == 45
    assert stats.faces_answered == 45 and stats.prompt_tokens > 0
    assert all(r["schema"] for r in server.state.requests)


def test_cache_hits_cost_nothing(server, tmp_path):
    cache = AnswerCache(tmp_path / "answers.sqlite")
    items = queries(5)
    ask(server, items, cache)
    cache.close()
    reopened = AnswerCache(tmp_path / "answers.sqlite")
    answers, stats = ask(server, items, reopened)
    assert len(server.state.requests) == 1 and stats.cache_hits == 5 and len(answers) == 5


@pytest.mark.parametrize("mode", ["refuse", "policy_error"])
def test_refused_batches_split_down_to_single_faces(server, mode):
    server.state.mode = mode
    answers, stats = ask(server, queries(4))
    assert all(a is not None for a in answers.values())
    sizes = [r["faces"] for r in server.state.requests]
    # 4 refused twice, split: each 2 refused twice, split: four singles answered
    assert sizes == [4, 4, 2, 2, 1, 1, 2, 2, 1, 1]
    assert stats.refusals == 6 and stats.splits == 3


def test_wrong_count_is_retried_then_split(server):
    server.state.mode = "wrong_count"
    answers, stats = ask(server, queries(2))
    assert [r["faces"] for r in server.state.requests] == [2, 2, 1, 1]
    assert all(a is not None for a in answers.values()) and stats.invalid_replies == 2


def test_malformed_reply_ends_unanswered_without_raising(server):
    server.state.mode = "malformed"
    answers, stats = ask(server, queries(2))
    assert answers == {"f0": None, "f1": None}
    assert stats.faces_unanswered == 2 and stats.invalid_replies == 6


def test_bad_body_is_survived(server):
    server.state.mode = "bad_body"
    answers, _ = ask(server, queries(1))
    assert answers == {"f0": None}


def test_rate_limit_honours_retry_after(server):
    server.state.mode, server.state.failures = "rate_limit", 1
    start = time.monotonic()
    answers, stats = ask(server, queries(1))
    assert answers["f0"] is not None and stats.rate_limited == 1
    assert time.monotonic() - start >= 0.9  # Retry-After: 1


def test_server_errors_retry_then_give_up_and_open_the_circuit(server, caplog):
    server.state.mode, server.state.failures = "error", -1
    answers, stats = ask(server, queries(3), max_retries=1, batch_size=1)
    assert answers == {"f0": None, "f1": None, "f2": None}
    # two faces fail after one retry each; the third face's request is the fifth failure in a
    # row, which opens the circuit: its retry is held back locally, and the request counts as
    # failed (it was sent and never answered)
    assert stats.server_errors == 5 and stats.failed_requests == 3
    assert stats.circuit_rejections == 1
    (opened,) = [r.getMessage() for r in caplog.records if "not answering" in r.getMessage()]
    assert server.base_url in opened and "HTTP 500" in opened  # said once, when it opened


def test_hang_times_out(server):
    server.state.mode = "hang"
    start = time.monotonic()
    answers, stats = ask(server, queries(1), timeout_s=0.5, max_retries=0)
    assert answers == {"f0": None} and stats.timeouts == 1
    assert time.monotonic() - start < 5


def test_servers_without_json_schema(server):
    server.state.mode = "no_schema"
    answers, _ = ask(server, queries(2))
    assert all(a is not None for a in answers.values())
    assert [r["schema"] for r in server.state.requests] == [True, False]


def test_daily_budget_is_enforced_and_persists(server, tmp_path, caplog):
    cache = AnswerCache(tmp_path / "a.sqlite")
    ask(server, queries(2), cache, requests_per_day=1, batch_size=1)
    assert len(server.state.requests) == 1
    answers, stats = ask(server, queries(1, offset=10), cache, requests_per_day=1)
    assert answers == {"f10": None} and stats.budget_rejections == 1
    assert "today's 1 requests are spent" in caplog.text  # the operator is told


def test_requests_per_minute_throttles_locally(server):
    from edgefer.llm.budget import Budget

    now = [0.0]
    budget = Budget(2, 10_000, 100, AnswerCache(), clock=lambda: now[0])
    budget.spend(10)
    budget.spend(10)
    assert budget.wait_s(10) == pytest.approx(60.0)
    now[0] = 61.0
    assert budget.wait_s(10) == 0.0


def test_each_reply_corrects_its_own_requests_tokens():
    """Two requests in flight at once: the first to be answered is corrected in the token
    window, not whichever was sent last."""
    from edgefer.llm.budget import Budget

    budget = Budget(100, 1_000, 100, AnswerCache(), clock=lambda: 0.0)
    first, second = budget.spend(600), budget.spend(300)
    first.tokens = 100  # the first reply says it used 100 tokens, while the second is in flight
    assert budget.wait_s(600) == 0.0  # 100 + 300 + 600 fit in 1,000
    assert budget.wait_s(601) == pytest.approx(60.0)
    assert second.tokens == 300


def test_circuit_breaker_states():
    from edgefer.llm.budget import CircuitBreaker

    now = [0.0]
    breaker = CircuitBreaker(failures=2, open_s=10, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 11
    assert breaker.state == "half-open" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and breaker.times_opened == 2
    now[0] = 22
    breaker.record_success()
    assert breaker.state == "closed"


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after": "2"}, 2.0), ({"retry-after-ms": "1500"}, 1.5), ({"retry-after": "600"}, 60.0),
    ({}, None), ({"retry-after": "soon"}, None),
])
def test_retry_after_parsing(headers, expected):
    assert retry_after_s(headers) == expected


def test_api_key_from_environment_and_never_in_repr(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    config = LlmConfig()
    assert config.resolved_api_key() == "sk-secret"
    assert "sk-secret" not in repr(LlmConfig(api_key="sk-secret"))
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        config.resolved_api_key()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    assert config.resolved_api_key() == "not-needed"


def test_worker_never_blocks_and_drops_least_useful(server):
    server.state.delay_s = 0.5
    config = LlmConfig(model="stub", base_url=server.base_url, queue_size=3, batch_wait_s=0.05,
                       batch_size=1)
    with SecondOpinion(config) as worker:
        start = time.monotonic()
        accepted = [i for i, q in enumerate(queries(8))
                    if worker.submit(q, priority=i / 10, meta={"i": i})]
        # A submit that waited on the network would take at least one reply's delay.
        assert time.monotonic() - start < server.state.delay_s
        assert worker.drain(10)
        results = worker.poll()
    assert worker.stats.dropped >= 3
    answered = sorted(r.meta["i"] for r in results if r.answer is not None)
    assert answered[:2] == [0, 1]  # the least confident faces were kept
    # Each accepted face comes back once, answered or dropped later: nobody waits for it forever.
    assert sorted(r.meta["i"] for r in results) == accepted


def test_closing_cancels_what_a_hanging_endpoint_holds(server):
    """An endpoint that never replies does not hold the end of a run for its timeout: close()
    cancels the requests in flight instead of waiting for a free slot."""
    server.state.mode = "hang"
    config = LlmConfig(model="stub", base_url=server.base_url, batch_size=1, batch_wait_s=0.01,
                       timeout_s=60)
    worker = SecondOpinion(config)
    for i, query in enumerate(queries(4)):
        worker.submit(query, priority=i, meta={"i": i})
    deadline = time.monotonic() + 10
    while len(server.state.requests) < MAX_IN_FLIGHT and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(server.state.requests) == MAX_IN_FLIGHT  # every slot held by the endpoint
    start = time.monotonic()
    worker.close()
    assert time.monotonic() - start < 3  # was the 10 s join timeout, with the thread still alive
    assert worker.stats.faces_answered == 0


def bounds(attempt: int) -> tuple[float, float]:
    """Backoff before retry ``attempt + 1``: 0.5 s doubling, capped at 8 s, times [0.5, 1]."""
    full = min(8.0, 0.5 * 2 ** attempt)
    return full / 2, full


def test_backoff_grows_per_attempt_of_each_request_and_is_capped():
    rng = random.Random(1)
    for attempt in range(8):
        low, high = bounds(attempt)
        assert all(low <= backoff_s(attempt, rng) <= high for _ in range(50))


@pytest.mark.parametrize("failure", ["server_error", "connection_refused"])
def test_retry_delays_follow_the_attempts_of_one_request(server, failure):
    server.state.mode, server.state.failures = "error", -1
    target = server if failure == "server_error" else closed_port_url()
    sleeps: list[float] = []
    for _ in range(2):  # a second request starts again at the first step
        answers, stats = ask(target, queries(1), sleeps=sleeps, max_retries=3)
        assert answers == {"f0": None} and stats.failed_requests == 1
    assert len(sleeps) == 6
    for attempt, seconds in enumerate(sleeps[:3] + sleeps[3:]):
        low, high = bounds(attempt % 3)
        assert low <= seconds <= high, (attempt, sleeps)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("mode", ["huge", "deep", "no_choices", "bad_utf8"])
def test_hostile_replies_are_invalid_replies_with_one_log_line_each(server, mode, caplog):
    server.state.mode = mode
    caplog.set_level(logging.WARNING)
    answers, stats = ask(server, queries(2), max_retries=0, timeout_s=20.0)  # a busy machine
    assert answers == {"f0": None, "f1": None}
    # asked once more, then split into single faces, each asked twice: 6 replies, 6 lines
    assert stats.invalid_replies == len(server.state.requests) == 6
    lines = [r for r in caplog.records if r.name.startswith("edgefer")]
    assert len(lines) == 6 and all(r.exc_info is None and "\n" not in r.getMessage()
                                   for r in lines)


def test_a_reply_trickling_one_byte_a_second_is_cut_by_the_total_deadline(server):
    server.state.mode = "trickle"
    start = time.monotonic()
    answers, stats = ask(server, queries(1), timeout_s=1.0, max_retries=0)
    assert answers == {"f0": None} and stats.timeouts == 1
    assert time.monotonic() - start < 30  # the body alone would take minutes


def test_cache_key_changes_with_every_setting_that_changes_the_question():
    jpeg, other = queries(2)[0].jpeg, queries(2)[1].jpeg
    base = LlmConfig(model="m")
    keys = {cache_key(jpeg, base),
            cache_key(other, base),
            cache_key(jpeg, LlmConfig(model="m2")),
            cache_key(jpeg, LlmConfig(model="m", detail="high")),
            cache_key(jpeg, LlmConfig(model="m", top2=False)),
            cache_key(jpeg, base, ("happy", "sad")),
            cache_key(jpeg, base, ("sad", "happy")),
            cache_key(jpeg, base, None, other)}
    assert len(keys) == 8
    assert cache_key(jpeg, base) == cache_key(jpeg, LlmConfig(model="m", threshold=0.2))


def test_distributions_and_usage_survive_the_cache(server, tmp_path):
    server.state.answer = lambda face: ["sad", "fear", "neutral"]
    cache = AnswerCache(tmp_path / "c.sqlite")
    first, _ = ask(server, queries(2), cache=cache)
    again, stats = ask(server, queries(2), cache=cache)
    assert stats.requests == 0 and again == first
    answer = again["f0"]
    assert answer.label == "sad" and answer.distribution()[EMOTIONS.index("fear")] > 0.2
    assert answer.prompt_tokens > 0 and answer.completion_tokens > 0


def test_single_face_prose_replies_are_answers(server):
    server.state.mode = "prose"
    answers, stats = ask(server, queries(3), batch_size=1, structured="off")
    assert all(a is not None and a.label == "happy" for a in answers.values())
    assert stats.invalid_replies == 0


def test_the_answer_cache_makes_its_folder_and_names_a_path_it_cannot_open(tmp_path):
    from edgefer.errors import OutputError

    AnswerCache(tmp_path / "new" / "folder" / "answers.sqlite")
    assert (tmp_path / "new" / "folder" / "answers.sqlite").is_file()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutputError, match="cannot open the LLM answer cache"):
        AnswerCache(tmp_path / "a-file" / "answers.sqlite")
