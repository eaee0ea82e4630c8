"""The LLM client's protocol constants and network defaults (timeouts, retries, the breaker,
prompt sizes, prices); the user-facing settings' defaults are ``LlmConfig``'s fields."""

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_BATCH_SIZE = 20  # faces per request: what the seed study found reliable
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 3  # for 408/409/429/5xx and connection errors
INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
MAX_RETRY_AFTER_S = 60.0  # never sleep longer than this on a server's Retry-After
CIRCUIT_FAILURES = 5  # consecutive failed requests that open the circuit
CIRCUIT_OPEN_S = 30.0  # how long an open circuit refuses requests before one trial
DEFAULT_QUEUE_SIZE = 256
DEFAULT_BATCH_WAIT_S = 0.25  # how long a partial batch waits for more faces
DEFAULT_COOLDOWN_S = 5.0  # per track, between questions about an unchanged label
DEFAULT_ANSWER_TTL_S = 10.0  # an answer applies to its track this long, or until the label changes
CROP_SIZE = 160  # side of the aligned colour crop sent to the LLM
CONTEXT_SIZE = 384  # longest side of the optional downscaled context frame
JPEG_QUALITY = 85
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
TOKENS_PER_IMAGE_ESTIMATE = 300  # for local TPM budgeting before the server reports usage
PROMPT_VERSION = "3"  # part of the cache key: change it when the prompt changes
MAX_BODY_BYTES = 512 * 1024  # a reply body larger than this is cut off and counted invalid
MAX_REPLY_CHARS = 64 * 1024  # message text longer than this is not parsed (20 faces need < 4 KB)
# USD per million (input, output) tokens, for the cost estimate; override with --llm-price.
# Public list prices when written; a model not listed costs 0 unless a price is given.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00), "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00), "gpt-4.1-nano": (0.10, 0.40),
}
