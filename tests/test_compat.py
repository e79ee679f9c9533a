"""fastapi-advanced-rate-limiter's and the token-bucket tutorial's APIs, unchanged."""

from __future__ import annotations

from typing import Any

import pytest

import ferrolimit
from ferrolimit import (
    FakeClock,
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

ADVANCED = [
    TokenBucketLimiter,
    LeakyBucketLimiter,
    FixedWindowRateLimiter,
    SlidingWindowRateLimiter,
    SlidingWindowLogRateLimiter,
    QueueLimiter,
    GCRALimiter,
]


@pytest.mark.parametrize("cls", ADVANCED)
def test_capacity_per_capacity_over_fill_rate_seconds(cls: Any, clock: FakeClock) -> None:
    limiter = cls(capacity=3, fill_rate=0.1, clock=clock)  # 3 per 30 s
    assert [limiter.allow_request("alice") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow_request("bob"), "each identifier has its own limit"
    wait = limiter.get_wait_time("alice")
    assert wait > 0 and wait == limiter.get_retry_after("alice")
    clock.advance(wait)
    assert limiter.get_wait_time("alice") == 0.0
    assert limiter.allow_request("alice")
    limiter.reset("alice")
    assert limiter.allow_request("alice") and limiter.allow_request("alice")
    assert limiter.get_config() == {"capacity": 3, "fill_rate": 0.1, "scope": "user", "backend": "memory"}
    assert isinstance(limiter.get_status("alice"), dict)


@pytest.mark.parametrize("cls", ADVANCED)
def test_scopes(cls: Any, clock: FakeClock) -> None:
    shared = cls(2, 1.0, scope="global", clock=clock)
    assert shared.allow_request("a") and shared.allow_request("b")
    assert not shared.allow_request(None), "global scope ignores the identifier"
    per_ip = cls(1, 1.0, "ip", clock=clock)
    with pytest.raises(ValueError, match="identifier is required for 'ip' scope"):
        per_ip.allow_request()
    assert per_ip.allow_request(1) and not per_ip.allow_request("1"), "identifiers are compared as text"


@pytest.mark.parametrize("cls", ADVANCED)
@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0, 1.0), ValueError, "Capacity must be positive"),
        ((-3, 1.0), ValueError, "Capacity must be positive"),
        ((5, 0), ValueError, "Fill rate must be positive"),
        ((5, -1.0), ValueError, "Fill rate must be positive"),
        ((5, 1.0, "team"), ValueError, "Scope must be 'user', 'ip', or 'global'"),
        ((5, 1.0, "user", "disk"), ValueError, "Backend must be 'memory' or 'redis'"),
        ((5, 1.0, "user", "redis"), ValueError, "redis_client is required when backend='redis'"),
        ((2.5, 1.0), ValueError, "capacity must be a whole number of requests, got 2.5"),
        (("5", 1.0), TypeError, "capacity must be a number, got str"),
        ((5, "fast"), TypeError, "fill rate must be a number, got str"),
    ],
)
def test_bad_arguments(cls: Any, args: tuple[Any, ...], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        cls(*args)


def test_token_bucket_status(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(capacity=10, fill_rate=1.0, scope="user", backend="memory", clock=clock)
    for _ in range(3):
        limiter.allow_request("u")
    assert limiter.get_status("u") == {
        "tokens_remaining": 7.0,
        "capacity": 10,
        "fill_rate": 1.0,
        "utilization_pct": 30.0,
    }
    clock.advance(2)
    assert limiter.get_status("u")["tokens_remaining"] == 9.0


def test_bucket_status_counts_fractions_as_they_refill(clock: FakeClock) -> None:
    """fastapi-advanced's README shows ``{"tokens_remaining": 7.5, ..., "utilization_pct": 25.0}``: the bucket
    refills continuously, and its status says so between whole tokens."""
    tokens = TokenBucketLimiter(capacity=10, fill_rate=1.0, clock=clock)
    leaky = LeakyBucketLimiter(capacity=10, fill_rate=1.0, clock=clock)
    for _ in range(3):
        assert tokens.allow_request("u") and leaky.allow_request("u")
    clock.advance(0.5)
    assert tokens.get_status("u") == {
        "tokens_remaining": 7.5,
        "capacity": 10,
        "fill_rate": 1.0,
        "utilization_pct": 25.0,
    }
    assert leaky.get_status("u") == {
        "water_level": 2.5,
        "capacity": 10,
        "fill_rate": 1.0,
        "available": 7.5,
        "utilization_pct": 25.0,
    }
    clock.advance(0.25)
    assert tokens.get_status("u")["tokens_remaining"] == 7.75 and leaky.get_status("u")["water_level"] == 2.25
    assert tokens.get_wait_time("u") == 0.0 and leaky.get_wait_time("u") == 0.0


def test_leaky_bucket_status(clock: FakeClock) -> None:
    limiter = LeakyBucketLimiter(5, 1.0, clock=clock)
    for _ in range(4):
        limiter.allow_request("u")
    assert limiter.get_status("u") == {
        "water_level": 4.0,
        "capacity": 5,
        "fill_rate": 1.0,
        "available": 1.0,
        "utilization_pct": 80.0,
    }


def test_fixed_window_status_and_boundary(clock: FakeClock) -> None:
    limiter = FixedWindowRateLimiter(capacity=3, fill_rate=0.1, clock=clock)  # windows of 30 s
    for _ in range(4):
        limiter.allow_request("u")
    status = limiter.get_status("u")
    assert status == {
        "count": 3,
        "capacity": 3,
        "available": 0,
        "window_size": 30.0,
        "window": int(clock.now() // 30),
    }
    assert limiter.get_wait_time("u") == 30.0
    clock.advance(29.999)
    assert not limiter.allow_request("u")
    clock.advance(0.001)
    assert limiter.allow_request("u")


def test_sliding_window_weighs_the_previous_window(clock: FakeClock) -> None:
    limiter = SlidingWindowRateLimiter(capacity=4, fill_rate=0.4, clock=clock)  # 4 per 10 s
    assert sum(limiter.allow_request("u") for _ in range(6)) == 4
    clock.advance(12.5)  # 25% into the next window: the previous 4 still weigh 3
    assert [limiter.allow_request("u") for _ in range(2)] == [True, False]


def test_queue_limiter_usage_and_retry_after(clock: FakeClock) -> None:
    limiter = QueueLimiter(3, 1.0, clock=clock)  # 3 per 3 s, exact
    assert [limiter.allow_request("u") for _ in range(4)] == [True, True, True, False]
    assert limiter.get_retry_after("u") == 3.0
    usage = limiter.get_current_usage("u")
    assert usage == limiter.get_status("u")
    assert usage == {
        "current_requests": 3,
        "capacity": 3,
        "available_slots": 0,
        "fill_rate": 1.0,
        "window_seconds": 3.0,
        "utilization_pct": 100.0,
    }
    clock.advance(3)
    assert limiter.allow_request("u")


def test_sliding_log_status(clock: FakeClock) -> None:
    limiter = SlidingWindowLogRateLimiter(capacity=10, fill_rate=10 / 300, clock=clock)  # 10 per 5 minutes
    for _ in range(10):
        limiter.allow_request("u")
    assert limiter.get_status("u") == {"count": 10, "capacity": 10, "available": 0, "window_size": 300.0}
    assert limiter.get_wait_time("u") == 300.0


def test_redis_backend_needs_a_redis_py_client() -> None:
    # A real client against a real server: tests/test_redis_compat.py.
    with pytest.raises(TypeError, match="redis_client must be a redis-py client"):
        TokenBucketLimiter(5, 1.0, "user", "redis", redis_client=object())


def test_tutorial_token_bucket(clock: FakeClock) -> None:
    bucket = TokenBucket(max_tokens=10, refill_rate=2, interval=1.0, clock=clock)
    assert bucket.get_remaining() == 10
    assert bucket.get_reset_time() == clock.now(), "a full bucket has nothing to wait for"
    assert bucket.allow_request(tokens=4)
    assert bucket.get_remaining() == 6
    assert not bucket.allow_request(tokens=7)
    assert bucket.get_remaining() == 6, "a refused request takes nothing"
    assert not bucket.allow_request(tokens=11), "more than the bucket holds is refused, not an error"
    assert bucket.get_reset_time() == clock.now() + 0.5
    assert bucket.allow_request(6)
    assert not bucket.allow_request()
    clock.advance(1.0)
    assert bucket.get_remaining() == 2, "refill_rate tokens per interval"
    with pytest.raises(ValueError):
        bucket.allow_request(tokens=-3)


def test_tutorial_store_keeps_one_bucket_per_key(clock: FakeClock) -> None:
    store = RateLimiterStore(max_tokens=2, refill_rate=1, interval=1.0, clock=clock)
    assert store.get_bucket("1.2.3.4").allow_request()
    assert store.get_bucket("1.2.3.4").allow_request()
    assert not store.get_bucket("1.2.3.4").allow_request()
    assert store.get_bucket("5.6.7.8").allow_request()
    with pytest.raises(ValueError, match="Max_tokens must be positive"):
        RateLimiterStore(0, 1, 1.0)
    with pytest.raises(ValueError, match="Interval must be positive"):
        RateLimiterStore(1, 1, 0)


def test_public_names() -> None:
    for name in ferrolimit.__all__:
        assert hasattr(ferrolimit, name), name
