"""ferrolimit: rate limiting for FastAPI, Starlette and FastMCP with a Rust core."""

import importlib
from typing import TYPE_CHECKING, Any

from ferrolimit._core import (
    ConcurrencyLimiter,
    ConcurrencyLimitExceeded,
    CostExceedsLimitError,
    Decision,
    FakeClock,
    Lease,
    Limiter,
    Quota,
    Slot,
    parse_rates,
)
from ferrolimit.compat import (
    FixedWindowRateLimiter,
    GCRALimiter,
    LeakyBucketLimiter,
    QueueLimiter,
    RateLimiterStore,
    SlidingWindowLogRateLimiter,
    SlidingWindowRateLimiter,
    TokenBucket,
    TokenBucketLimiter,
)
from ferrolimit.keys import ClientIdentifier

if TYPE_CHECKING:
    from ferrolimit.fastapi import (
        FastLimit,
        FastLimitNotInitialized,
        MissingUserID,
        RateLimitRule,
        limit,
        rate_limit,
        rule,
    )
    from ferrolimit.starlette import (
        Algorithm,
        BucketConfig,
        HeaderConfig,
        RateLimitExceeded,
        RateLimitMiddleware,
        WebSocketRateLimit,
    )

__version__ = "0.1.0"

# The web layers import starlette/fastapi (the [fastapi] extra), so they load on first use.
_LAZY = {
    **dict.fromkeys(
        ["FastLimit", "FastLimitNotInitialized", "MissingUserID", "RateLimitRule", "limit", "rate_limit", "rule"],
        "ferrolimit.fastapi",
    ),
    **dict.fromkeys(
        [
            "Algorithm",
            "BucketConfig",
            "HeaderConfig",
            "RateLimitExceeded",
            "RateLimitMiddleware",
            "WebSocketRateLimit",
        ],
        "ferrolimit.starlette",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ferrolimit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Algorithm",
    "BucketConfig",
    "ClientIdentifier",
    "ConcurrencyLimitExceeded",
    "ConcurrencyLimiter",
    "CostExceedsLimitError",
    "Decision",
    "FakeClock",
    "FastLimit",
    "FastLimitNotInitialized",
    "FixedWindowRateLimiter",
    "GCRALimiter",
    "HeaderConfig",
    "LeakyBucketLimiter",
    "Lease",
    "Limiter",
    "MissingUserID",
    "QueueLimiter",
    "Quota",
    "RateLimitExceeded",
    "RateLimitMiddleware",
    "RateLimitRule",
    "RateLimiterStore",
    "SlidingWindowLogRateLimiter",
    "SlidingWindowRateLimiter",
    "Slot",
    "TokenBucket",
    "TokenBucketLimiter",
    "WebSocketRateLimit",
    "__version__",
    "limit",
    "parse_rates",
    "rate_limit",
    "rule",
]
