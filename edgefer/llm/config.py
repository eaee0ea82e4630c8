"""LLM settings: endpoint, model, budgets, when to ask and how to merge."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edgefer.decide import POLICIES
from edgefer.errors import ConfigError
from edgefer.llm import constants as c


@dataclass(frozen=True)
class LlmConfig:
    """``api_key`` and ``base_url`` default to ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``.

    The key never appears in ``repr`` or logs.
    """

    model: str = c.DEFAULT_MODEL
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    batch_size: int = c.DEFAULT_BATCH_SIZE
    timeout_s: float = c.DEFAULT_TIMEOUT_S
    max_retries: int = c.DEFAULT_MAX_RETRIES
    structured: str = "auto"  # "auto": JSON schema first, plain JSON if the server rejects it
    detail: str = "low"  # image detail for OpenAI: "low" is 85 tokens per image
    context_frame: bool = False  # also send a downscaled frame for context
    top2: bool = True  # ask the LLM to choose between the CNN's two best labels (README:
    # on FER2013 PrivateTest this prompt improved the cascade under both label sets; the open
    # prompt helped only on FER+ labels)
    requests_per_minute: int = 60
    tokens_per_minute: int = 200_000
    requests_per_day: int = 5_000
    # USD per million tokens for the cost estimate; None: constants.PRICES_PER_MILLION[model]
    price_input_per_million: float | None = None
    price_output_per_million: float | None = None
    cache_path: str | None = None  # SQLite answer cache; None = in memory only
    # when to ask
    threshold: float = 0.5  # calibrated confidence below which a face is uncertain
    margin: float = 0.0  # or: top-1 minus top-2 probability below this (0 disables)
    cooldown_s: float = c.DEFAULT_COOLDOWN_S
    answer_ttl_s: float = c.DEFAULT_ANSWER_TTL_S
    queue_size: int = c.DEFAULT_QUEUE_SIZE
    batch_wait_s: float = c.DEFAULT_BATCH_WAIT_S
    # how to merge
    policy: str = "override"  # "learned": the fusion model fitted by `edgefer llm calibrate`
    fuse_weight: float = 0.5
    fusion_path: str | None = None  # the learned policy's file; None: the default location

    def __post_init__(self) -> None:
        checks = {  # what must hold, and how the error says it
            "batch_size": (self.batch_size >= 1, ">= 1"), "timeout_s": (self.timeout_s > 0, "> 0"),
            "max_retries": (self.max_retries >= 0, ">= 0"),
            "threshold": (0 <= self.threshold <= 1, "in [0, 1]"),
            "margin": (0 <= self.margin <= 1, "in [0, 1]"),
            "fuse_weight": (0 <= self.fuse_weight <= 1, "in [0, 1]"),
            "policy": (self.policy in POLICIES, f"one of {', '.join(POLICIES)}"),
            "structured": (self.structured in ("auto", "on", "off"), "auto, on or off"),
            "detail": (self.detail in ("low", "high", "auto"), "low, high or auto"),
            "queue_size": (self.queue_size >= 1, ">= 1"),
            "requests_per_minute": (self.requests_per_minute >= 1, ">= 1"),
            "tokens_per_minute": (self.tokens_per_minute >= 1, ">= 1"),
            "requests_per_day": (self.requests_per_day >= 1, ">= 1"),
            "price_input_per_million": ((self.price_input_per_million or 0) >= 0, ">= 0"),
            "price_output_per_million": ((self.price_output_per_million or 0) >= 0, ">= 0"),
        }
        for key, (ok, must) in checks.items():
            if not ok:
                raise ConfigError(f"invalid llm setting {key}={getattr(self, key)!r}: must be {must}")

    def prices_per_million(self) -> tuple[float, float]:
        """(input, output) USD per million tokens: configured, else the table, else 0."""
        listed = c.PRICES_PER_MILLION.get(self.model, (0.0, 0.0))
        return (listed[0] if self.price_input_per_million is None else self.price_input_per_million,
                listed[1] if self.price_output_per_million is None else self.price_output_per_million)

    @property
    def prompt(self) -> str:
        return "top2" if self.top2 else "open"

    def resolved_base_url(self) -> str | None:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or None

    def resolved_api_key(self) -> str:
        """The key from config or ``OPENAI_API_KEY``; local servers accept any placeholder."""
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if key:
            return key
        if self.resolved_base_url():
            return "not-needed"
        raise ConfigError("no API key: set OPENAI_API_KEY, or point OPENAI_BASE_URL (--llm-base-url, "
                          "llm.base_url) at an OpenAI-compatible server that needs none")
