"""ferrolimit: rate limiting for FastAPI, Starlette and FastMCP with a Rust core."""

from ferrolimit._core import (
    ConcurrencyLimiter,
    CostExceedsLimitError,
    Decision,
    FakeClock,
    Limiter,
    Quota,
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

__version__ = "0.1.0"

__all__ = [
    "ConcurrencyLimiter",
    "CostExceedsLimitError",
    "Decision",
    "FakeClock",
    "FixedWindowRateLimiter",
    "GCRALimiter",
    "LeakyBucketLimiter",
    "Limiter",
    "QueueLimiter",
    "Quota",
    "RateLimiterStore",
    "SlidingWindowLogRateLimiter",
    "SlidingWindowRateLimiter",
    "TokenBucket",
    "TokenBucketLimiter",
    "__version__",
    "parse_rates",
]
