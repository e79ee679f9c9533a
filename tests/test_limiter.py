"""The general limiter through the Python API, every algorithm, on a fake clock.

Tests taking ``make_limiter`` run on every backend: memory, one Redis server and a Redis Cluster (the fake
clock's time is passed to the Redis scripts)."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ferrolimit import ConcurrencyLimiter, CostExceedsLimitError, FakeClock, Limiter, Quota, parse_rates
from ferrolimit.keys import ClientIdentifier, IPSet
from tests.conftest import TIME_ALGORITHMS
from tests.redis_server import MakeLimiter


@pytest.mark.parametrize("algorithm", TIME_ALGORITHMS)
def test_burst_then_denial_then_exactly_retry_after(
    algorithm: str, clock: FakeClock, make_limiter: MakeLimiter
) -> None:
    limiter = make_limiter("10/min", algorithm, clock=clock)
    remaining = [limiter.hit("k").remaining for _ in range(10)]
    assert remaining == list(range(9, -1, -1))
    denied = limiter.hit("k")
    assert (denied.allowed, denied.limit, denied.remaining) == (False, 10, 0)
    assert denied.retry_after > 0
    assert not bool(denied)
    assert limiter.hit("k").retry_after == denied.retry_after, "a denied request consumes nothing"
    clock.advance(denied.retry_after - 0.001)
    assert not limiter.hit("k").allowed
    clock.advance(0.001)
    assert limiter.hit("k").allowed


@pytest.mark.parametrize("algorithm", TIME_ALGORITHMS)
def test_cost_and_reset_and_peek(algorithm: str, clock: FakeClock, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter("10/min", algorithm, clock=clock)
    assert limiter.hit("k", cost=4).remaining == 6
    assert limiter.peek("k").remaining == 6
    assert limiter.test("k", cost=6).allowed
    assert limiter.peek("k").remaining == 6, "test() takes nothing"
    denied = limiter.hit("k", cost=7)
    assert not denied.allowed and denied.remaining == 6
    assert limiter.hit("k", cost=6).remaining == 0
    assert not limiter.peek("k").allowed
    limiter.reset("k")
    assert limiter.peek("k").remaining == 10
    with pytest.raises(CostExceedsLimitError, match="a cost of 11 can never pass a limit of 10 per 1 minute"):
        limiter.hit("k", cost=11)


@pytest.mark.parametrize("algorithm", TIME_ALGORITHMS)
def test_multiple_rates_are_charged_together(algorithm: str, clock: FakeClock, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter("3/s;5/min", algorithm, clock=clock)
    assert [limiter.hit("k").allowed for _ in range(4)] == [True, True, True, False]
    clock.advance(2)  # two whole windows: even the sliding counter has forgotten the first second
    second = [limiter.hit("k") for _ in range(3)]
    assert [d.allowed for d in second] == [True, True, False]
    assert (second[2].limit, second[2].window) == (5, 60.0), "the per-minute rate is the one that binds"
    clock.advance(2)
    assert not limiter.hit("k").allowed


@pytest.mark.parametrize("algorithm", TIME_ALGORITHMS)
def test_a_denial_by_one_key_takes_nothing_from_the_others(
    algorithm: str, clock: FakeClock, make_limiter: MakeLimiter
) -> None:
    limiter = make_limiter("1000/min", algorithm, clock=clock)
    ip, user = ("ip:198.51.100.1", "2/min"), ("user:7", "10/min")
    assert limiter.hit_many([ip, user]).remaining == 1
    assert limiter.hit_many([ip, user]).remaining == 0
    denied = limiter.hit_many([ip, user, ("global", None)])
    assert not denied.allowed and denied.limit == 2
    assert limiter.hit_many([user]).remaining == 7
    assert limiter.hit_many([("global", None)]).remaining == 999, "nor from the global limit"
    with pytest.raises(ValueError, match="at least one"):
        limiter.hit_many([])


@pytest.mark.parametrize("algorithm", TIME_ALGORITHMS)
def test_a_denial_by_one_limit_takes_nothing_from_a_limit_of_another_cost(
    algorithm: str, clock: FakeClock, make_limiter: MakeLimiter
) -> None:
    """An app-wide limit at cost 1 and an export limit at cost 60, in one call: all or nothing."""
    limiter = make_limiter("1000/min", algorithm, clock=clock)
    request = [("global", "10/min", 1), ("export", "100/min", 60)]
    first = limiter.hit_many(request)
    assert (first.allowed, first.limit, first.remaining) == (True, 10, 9)
    for _ in range(4):
        refused = limiter.hit_many(request)
        assert (refused.allowed, refused.limit, refused.remaining) == (False, 100, 40)
    assert limiter.peek("global", "10/min").remaining == 9, "the refusals took nothing from the global limit"
    assert limiter.peek("export", "100/min").remaining == 40
    # A (key, rate) item takes the call's cost; a (key, rate, cost) item its own.
    mixed = limiter.hit_many([("global", "10/min"), ("export", "100/min", 30), ("own", None)], cost=2)
    assert (mixed.allowed, mixed.limit, mixed.remaining) == (True, 10, 7), "global has 7 left, export 10"
    assert limiter.peek("global", "10/min").remaining == 7
    assert limiter.peek("own").remaining == 998

    async def in_a_loop() -> tuple[bool, int]:
        decision = await limiter.hit_many_async([("global", "10/min", 7), ("export", "100/min", 11)])
        return decision.allowed, decision.remaining

    assert asyncio.run(in_a_loop()) == (False, 10), "export has 10 left, not 11"
    assert limiter.peek("global", "10/min").remaining == 7


def test_each_limit_is_held_to_its_own_cost(clock: FakeClock, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter("1000/min", clock=clock)
    # 60 is more than 5/min could ever take, but the 5/min limit is charged 1.
    assert limiter.hit_many([("small", "5/min", 1), ("big", "100/min", 60)]).allowed
    with pytest.raises(
        CostExceedsLimitError,
        match=r"^a cost of 6 can never pass a limit of 5 per 1 minute: the most one request can take is 5$",
    ):
        limiter.hit_many([("big", "100/min", 1), ("small", "5/min", 6)])
    with pytest.raises(CostExceedsLimitError, match=r"^a cost of 61 can never pass a limit of 10 per 1 minute"):
        asyncio.run(_awaited(limiter.hit_many_async([("big", "100/min", 1), ("k", "10/min;100/hour", 61)])))
    assert limiter.peek("small", "5/min").remaining == 4 and limiter.peek("big", "100/min").remaining == 40
    # The same counter named twice is charged once, at the larger cost named for it.
    assert limiter.hit_many([("k", None, 2), ("k", "1000/min", 5), ("k", None)]).remaining == 995


@pytest.mark.parametrize("algorithm", TIME_ALGORITHMS)
def test_index_names_the_limit_that_bound_among_equal_rates(
    algorithm: str, clock: FakeClock, make_limiter: MakeLimiter
) -> None:
    limiter = make_limiter("1000/min", algorithm, clock=clock)
    assert limiter.hit("k").index == 0 and limiter.peek("k").index == 0 and limiter.test("k").index == 0
    for _ in range(3):
        assert limiter.hit_many([("search", "3/min")]).allowed
    request = [("own", "3/min"), ("other", "3/min"), ("search", "3/min"), ("last", "3/min")]
    refused = limiter.hit_many(request)
    assert (refused.allowed, refused.limit, refused.window, refused.index) == (False, 3, 60.0, 2)
    assert "index=2" in repr(refused)
    assert limiter.peek("own", "3/min").remaining == 3, "the refusal took nothing"
    assert asyncio.run(_awaited(limiter.hit_many_async(request[::-1]))).index == 1
    # Allowed: the limit left with the fewest units; of equally tight ones, the first named, whichever
    # cluster slot each key lands on.
    assert limiter.hit_many([("fresh", "3/min"), ("own", "3/min", 2)]).index == 1
    fresh = [(f"f{number}", "3/min") for number in range(6)]
    assert limiter.hit_many(fresh).index == 0
    assert limiter.hit_many(fresh[::-1]).index == 0
    assert limiter.hit_many([("x", "3/min"), ("y", "3/min;1/s")]).index == 1, "a rate of a later limit"


@pytest.mark.parametrize("algorithm", ["gcra", "fixed_window"])
def test_index_with_per_limit_costs_and_merged_duplicates(
    algorithm: str, clock: FakeClock, make_limiter: MakeLimiter
) -> None:
    limiter = make_limiter("1000/min", algorithm, clock=clock, deny_cache_size=100)
    request = [("global", "10/min", 1), ("export", "100/min", 60)]
    first = limiter.hit_many(request)
    assert (first.allowed, first.remaining, first.index) == (True, 9, 0)
    refused = limiter.hit_many(request)
    assert (refused.allowed, refused.limit, refused.index) == (False, 100, 1)
    assert limiter.hit_many(request).index == 1, "a cached denial keeps its index"
    # The same counters with global named twice: export is at position 2 now, the cache notwithstanding.
    twice: list[tuple[str, str] | tuple[str, str, int]] = [
        ("global", "10/min", 1),
        ("global", "10/min"),
        ("export", "100/min", 60),
    ]
    assert [limiter.hit_many(twice).index for _ in range(2)] == [2, 2]
    assert limiter.hit_many(request[::-1]).index == 0
    # A counter named twice is one counter, reported at the first position naming it.
    for _ in range(3):
        assert limiter.hit_many([("dup", "3/min")]).allowed
    merged = limiter.hit_many([("a", "3/min"), ("dup", "3/min"), ("b", "3/min"), ("dup", "3/min", 2)])
    assert (merged.allowed, merged.index) == (False, 1)
    charged = limiter.hit_many([("c", "5/min"), ("d", "5/min"), ("c", "5/min", 4)])
    assert (charged.allowed, charged.remaining, charged.index) == (True, 1, 0)


def test_a_cached_denial_is_kept_for_its_own_costs_only(clock: FakeClock, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter("1000/min", clock=clock, deny_cache_size=100)
    assert limiter.hit_many([("global", "10/min", 1), ("export", "100/min", 60)]).allowed
    assert not limiter.hit_many([("global", "10/min", 1), ("export", "100/min", 60)]).allowed
    assert limiter.hit_many([("global", "10/min", 1), ("export", "100/min", 40)]).allowed, "40 fit"
    assert limiter.peek("export", "100/min").remaining == 0


@pytest.mark.parametrize(
    ("item", "error", "message"),
    [
        (("k", None, "2"), TypeError, r"^the cost in \('k', None, '2'\) must be an int such as 1, not str$"),
        (("k", None, 1.5), TypeError, "must be an int such as 1, not float"),
        (("k", None, None), TypeError, "must be an int such as 1, not NoneType"),
        (("k", None, 0), ValueError, r"^the cost in \('k', None, 0\): cost must be a positive whole number, got 0$"),
        (("k", None, -3), ValueError, "cost must be a positive whole number, got -3"),
        (("k", None, 11), CostExceedsLimitError, "^a cost of 11 can never pass a limit of 10 per 1 minute"),
        (("k", None, 2**64), CostExceedsLimitError, f"^a cost of {2**64} can never pass a limit of 10 per 1 minute"),
        (("k",), TypeError, r"^a limit of hit_many is \(key, rate\) or \(key, rate, cost\), not a tuple of 1"),
        (("k", None, 1, 1), TypeError, "not a tuple of 4"),
        (["k", None], TypeError, "^hit_many takes \\(key, rate\\) or \\(key, rate, cost\\) tuples, not list$"),
    ],
)
def test_a_bad_limit_item_is_refused_clearly(item: Any, error: type[Exception], message: str) -> None:
    limiter = Limiter("10/min")
    with pytest.raises(error, match=message):
        limiter.hit_many([("other", None), item])
    with pytest.raises(error, match=message):
        asyncio.run(_awaited(limiter.hit_many_async([item])))
    assert limiter.peek("other").remaining == 10, "nothing was charged"


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def test_a_limit_named_twice_in_one_request_is_charged_once(clock: FakeClock, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter("10/min", clock=clock)
    assert limiter.hit_many([("k", None), ("k", "10/min"), ("k", None)], cost=2).remaining == 8


@pytest.mark.parametrize("algorithm", TIME_ALGORITHMS)
def test_a_repeated_pair_is_one_counter_on_every_backend(
    algorithm: str, clock: FakeClock, make_limiter: MakeLimiter
) -> None:
    limiter = make_limiter("5/10s", algorithm, clock=clock)
    twice = [limiter.hit_many([("k", None), ("k", None)]) for _ in range(6)]
    assert [(d.allowed, d.remaining) for d in twice] == [
        (True, 4),
        (True, 3),
        (True, 2),
        (True, 1),
        (True, 0),
        (False, 0),
    ]
    per_ip = Quota("3/10s")
    assert limiter.hit_many([("ip", per_ip), ("ip", "3/10s"), ("other", None)]).remaining == 2
    assert limiter.hit_many([("ip", per_ip)]).remaining == 1


def test_decision_times_and_reset_at(clock: FakeClock, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter("10/min", "gcra", clock=clock)
    first = limiter.hit("k")
    assert (first.reset_after, first.retry_after, first.window) == (6.0, 0.0, 60.0)
    assert first.reset_at == clock.now() + 6.0
    assert "Decision(allowed=True, limit=10, remaining=9" in repr(first)


def test_threads_share_one_key_exactly(backend: str, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter("1000/hour", "gcra", clock=FakeClock())
    allowed: list[int] = []
    per_thread = 10_000 if backend == "memory" else 160

    def worker() -> None:
        allowed.append(sum(limiter.allow("hot") for _ in range(per_thread)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 1000
    assert limiter.stats()["allowed"] == 1000 and limiter.stats()["denied"] == 8 * per_thread - 1000


@pytest.mark.parametrize("algorithm", ["gcra", "token_bucket", "fixed_window", "sliding_window_counter"])
def test_two_million_keys_stay_bounded_and_live_keys_survive(algorithm: str, clock: FakeClock) -> None:
    limiter = Limiter("3/hour", algorithm, clock=clock, max_keys=100_000)
    for _ in range(3):
        limiter.hit("victim")
    assert not limiter.hit("victim").allowed
    largest = 0
    for index in range(2_000_000):
        limiter.allow(f"client-{index}")
        if index % 250_000 == 0:
            largest = max(largest, len(limiter))
    assert max(largest, len(limiter)) <= 100_000
    assert limiter.stats()["store_full"] > 0
    assert not limiter.hit("victim").allowed, "a live key was never reset"
    clock.advance(2 * 3600)  # two windows, so that even the sliding counter has forgotten
    assert limiter.hit("victim").allowed
    assert limiter.sweep() > 0


def test_idle_keys_are_dropped_without_changing_decisions(clock: FakeClock) -> None:
    limiter = Limiter("2/min", "sliding_window_log", clock=clock)
    for index in range(1000):
        limiter.hit(f"k{index}")
    limiter.hit("busy")
    limiter.hit("busy")
    clock.advance(59)
    assert limiter.sweep() == 0
    clock.advance(1)
    assert limiter.sweep() == 1001
    assert len(limiter) == 0
    assert limiter.hit("busy").remaining == 1


@pytest.mark.parametrize("max_keys", [1, 999, 3_000, 65_535, 100_000])
def test_max_keys_is_the_number_given_and_the_number_held(max_keys: int, clock: FakeClock) -> None:
    limiter = Limiter("5/hour", clock=clock, max_keys=max_keys, on_full="deny")
    assert limiter.max_keys == max_keys
    # New keys spread over the shards until every one is full: together they hold max_keys exactly.
    admitted = sum(limiter.allow(f"k{index}") for index in range(3 * max_keys + 1_000))
    assert admitted == len(limiter) == max_keys
    assert limiter.stats()["store_full"] == 2 * max_keys + 1_000


def test_a_full_store_can_deny_new_keys(clock: FakeClock) -> None:
    limiter = Limiter("5/min", clock=clock, max_keys=2, on_full="deny")
    assert limiter.allow("a") and limiter.allow("b")
    refused = limiter.hit("c")
    assert not refused.allowed and refused.retry_after > 0
    assert limiter.allow("a")
    assert limiter.stats()["store_full"] == 1


@pytest.mark.parametrize("quota", ["100001/day", Quota("1000000000/day"), Quota.per(200_000, 1.0)])
def test_the_timestamp_log_refuses_limits_it_cannot_hold(quota: str | Quota, make_limiter: MakeLimiter) -> None:
    shown = str(quota if isinstance(quota, Quota) else Quota(quota))
    message = f"at most 100000 per period, and \"{shown}\" is more; use 'sliding_window_counter'"
    with pytest.raises(ValueError, match=message):
        make_limiter(quota, "sliding_window_log")
    limiter = make_limiter("10/min", "sliding_window_log")
    with pytest.raises(ValueError, match=message):
        limiter.hit_many([("k", quota)])
    with pytest.raises(ValueError, match=message):
        limiter.peek("k", quota)
    assert limiter.hit("k").remaining == 9, "the refused calls took nothing"
    assert make_limiter(quota, "sliding_window_counter").hit("k").allowed


def test_the_timestamp_log_takes_its_largest_limit_and_cost(clock: FakeClock, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter("100000/day", "sliding_window_log", clock=clock)
    assert limiter.hit("k", 100_000).remaining == 0
    denied = limiter.hit("k")
    assert not denied.allowed and denied.retry_after == 86_400.0
    clock.advance(86_400)
    assert limiter.hit("k", 100_000).allowed


@pytest.mark.parametrize("algorithm", ["gcra", "token_bucket", "leaky_bucket"])
def test_a_unit_per_microsecond_holds_everywhere_and_finer_rates_only_in_memory(
    algorithm: str, backend: str, clock: FakeClock, make_limiter: MakeLimiter
) -> None:
    limiter = make_limiter("1000000/s", algorithm, clock=clock)
    assert limiter.hit("g", 1_000_000).remaining == 0
    clock.advance(0.5)
    half = limiter.peek("g")
    assert (half.remaining, half.reset_after) == (500_000, 0.5)
    # Whole microseconds per unit on Redis: "1500/s" is kept to 666 µs a unit (0.1% faster), let be.
    assert make_limiter("1500/s", algorithm, clock=clock).hit("g", 1500).remaining == 0
    for rate in ["2000000/s", "600000/s", "1000000000/hour"]:
        if backend == "memory":
            fine = make_limiter(rate, algorithm, clock=clock)  # memory counts nanoseconds
            assert fine.hit("g", Quota(rate).limit).remaining == 0 and not fine.hit("g").allowed
            continue
        message = f'^on Redis, {algorithm} counts time in whole microseconds: "{Quota(rate)}" leaves'
        with pytest.raises(ValueError, match=message):
            make_limiter(rate, algorithm, clock=clock)
        with pytest.raises(ValueError, match=message):
            limiter.hit_many([("g", rate)])
    assert limiter.peek("g").remaining == 500_000, "the refused calls took nothing"
    assert make_limiter("2000000/s", "fixed_window", clock=clock).hit("g", 2_000_000).allowed


def test_a_charge_refuses_a_log_limit_it_cannot_hold(clock: FakeClock) -> None:
    from ferrolimit._core import Charge, Counts, HeaderRenderer

    limiter = Limiter("10/min", "sliding_window_log", clock=clock)
    with pytest.raises(ValueError, match="at most 100000 per period"):
        Charge(limiter, "p:", Quota("200000/hour"), 1, HeaderRenderer(), "p", Counts(), ClientIdentifier().native)


def test_concurrency_limiter_counts_requests_in_flight(clock: FakeClock) -> None:
    limiter = ConcurrencyLimiter(2, retry_after=0.5, clock=clock)
    assert limiter.acquire("k").remaining == 1
    assert limiter.acquire("k").remaining == 0
    denied = limiter.acquire("k")
    assert not denied.allowed and denied.retry_after == 0.5
    clock.advance(3600)
    assert not limiter.acquire("k").allowed
    limiter.release("k")
    assert limiter.acquire("k").allowed
    limiter.release("k")
    limiter.release("k")
    assert len(limiter) == 0 and limiter.peek("k").remaining == 2


def test_keys_charged_under_their_own_rate_can_be_peeked_and_reset(clock: FakeClock, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter("100/min", clock=clock)
    per_ip = Quota("2/min")
    assert [limiter.hit_many([("ip", per_ip)]).allowed for _ in range(3)] == [True, True, False]
    assert limiter.peek("ip", per_ip).remaining == 0 and limiter.peek("ip", "2/min").remaining == 0
    assert limiter.peek("ip").remaining == 100, "without a rate, the limiter's own counter of the key"
    limiter.reset("ip")
    assert not limiter.hit_many([("ip", per_ip)]).allowed, "reset(key) alone forgets only the own counter"
    limiter.reset("ip", per_ip)
    assert limiter.hit_many([("ip", per_ip)]).remaining == 1

    async def asynchronously() -> tuple[int, bool]:
        await limiter.hit_many_async([("ip", per_ip)])
        await limiter.reset_async("ip", "2/min")
        peeked = await limiter.peek_async("ip", per_ip)
        return peeked.remaining, (await limiter.hit_many_async([("ip", per_ip)])).allowed

    assert asyncio.run(asynchronously()) == (2, True)
    with pytest.raises(TypeError, match="a rate must be a str such as '10/min' or a Quota, not int"):
        limiter.reset("ip", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid rate"):
        limiter.peek("ip", "2 per fortnight")


def test_quota_and_parse_rates() -> None:
    assert parse_rates("10/s;1000/day") == [(10, 1.0), (1000, 86_400.0)]
    quota = Quota("10 per minute")
    assert str(quota) == "10 per 1 minute" and quota.limit == 10 and len(quota) == 1
    assert quota == Quota("10/min") and hash(quota) == hash(Quota("10/min"))
    assert Quota.per(5, 1.5).rates == [(5, 1.5)]
    assert str(Quota("3/5min;100/hour")) == "3 per 5 minutes; 100 per 1 hour"


BAD_RATES = [
    "", "   ", "10", "ten/min", "10/", "/min", "10/fortnight", "0/min", "-5/min", "1.5/min", "10/0s", "10//s",
    "10/min;", ";", "10/5", "10 per", "10 every minute", "99999999999999999999999/s", "10/999999999999999day",
]  # fmt: skip


@pytest.mark.parametrize("text", BAD_RATES)
def test_bad_rate_strings_name_the_text_and_a_valid_example(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        Limiter(text)
    message = str(raised.value)
    assert repr(text).replace("'", '"') in message or f'"{text}"' in message
    assert "'10/min'" in message


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"rate": 10}, TypeError, "a rate must be a str such as '10/min' or a Quota, not int"),
        ({"rate": "1/s", "algorithm": "bogus"}, ValueError, "unknown algorithm \"bogus\"; expected one of 'gcra'"),
        ({"rate": "1/s", "storage": "mongodb://x"}, ValueError, 'unknown storage "mongodb://x"'),
        ({"rate": "1/s", "storage": "redis://u:secret@localhost:port"}, ValueError, "not a usable Redis URL"),
        ({"rate": "1/s", "storage": "redis+cluster://"}, ValueError, "names no cluster node"),
        ({"rate": "1/s", "on_backend_error": "retry"}, ValueError, "on_backend_error must be 'allow', 'deny' or"),
        ({"rate": "1/s", "timeout_ms": 0}, ValueError, "timeout_ms must be a positive whole number, got 0"),
        ({"rate": "1/s", "max_keys": 0}, ValueError, "max_keys must be a positive whole number, got 0"),
        ({"rate": "1/s", "on_full": "maybe"}, ValueError, "on_full must be 'allow' or 'deny'"),
    ],
)
def test_bad_configuration_is_refused_clearly(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
        Limiter(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("cost", [0, -1, -(2**63) - 1, -(2**70)])
def test_non_positive_costs_are_refused(cost: int) -> None:
    limiter = Limiter("10/min")
    calls: list[Callable[[], object]] = [
        lambda: limiter.hit("k", cost=cost),
        lambda: limiter.allow("k", cost),
        lambda: limiter.test("k", cost),
        lambda: limiter.hit_many([("k", None)], cost),
        lambda: limiter.hit_async("k", cost),
        lambda: limiter.hit_many_async([("k", None)], cost),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=f"^cost must be a positive whole number, got {cost}(\n|$)"):
            call()


@pytest.mark.parametrize("cost", [2**63, 2**64, 10**30])
def test_costs_too_large_for_any_limit_are_refused_like_any_cost_above_the_limit(
    cost: int, make_limiter: MakeLimiter
) -> None:
    limiter = make_limiter("10/min;100/hour")
    message = f"^a cost of {cost} can never pass a limit of 10 per 1 minute: the most one request can take is 10$"
    calls: list[Callable[[], object]] = [
        lambda: limiter.hit("k", cost),
        lambda: limiter.allow("k", cost),
        lambda: limiter.test("k", cost),
        lambda: limiter.hit_many([("k", None), ("u", "5/s")], cost),
        lambda: limiter.hit_async("k", cost),
        lambda: limiter.allow_async("k", cost),
        lambda: limiter.test_async("k", cost),
    ]
    for call in calls:
        with pytest.raises(CostExceedsLimitError, match=message):
            call()
    with pytest.raises(CostExceedsLimitError, match=f"^a cost of {cost} can never pass a limit of 5 per 1 second"):
        limiter.hit_many([("u", "5/s"), ("k", None)], cost)
    concurrency = ConcurrencyLimiter(3)
    for acquire in (concurrency.acquire, concurrency.acquire_lease, concurrency.slot, concurrency.acquire_async):
        with pytest.raises(CostExceedsLimitError, match=f"^a cost of {cost} can never pass a limit of 3 concurrent"):
            acquire("k", cost)
    concurrency.release("k", cost)  # gives back at most what this limiter took: nothing here
    assert limiter.peek("k").remaining == 10 and concurrency.peek("k").remaining == 3


@pytest.mark.parametrize("bad", [1.5, "2", None, b"k"])
def test_wrong_types_raise_type_error(bad: object) -> None:
    limiter = Limiter("10/min")
    with pytest.raises(TypeError):
        limiter.hit("k", cost=bad)  # type: ignore[arg-type]
    if not isinstance(bad, str):
        with pytest.raises(TypeError):
            limiter.hit(bad)  # type: ignore[arg-type]


def test_fake_clock_never_goes_back() -> None:
    clock = FakeClock(100.0)
    clock.advance(0.5)
    assert clock.now() == 100.5
    with pytest.raises(ValueError, match="never goes back"):
        clock.set(50.0)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            clock.advance(bad)


def test_real_clock_is_wall_time() -> None:
    import time

    limiter = Limiter("1/s")
    assert abs(limiter.now() - time.time()) < 5


def _recorder() -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], Awaitable[None]]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return sent, send


def _deliver(send: Callable[[dict[str, Any]], Awaitable[None]], message: dict[str, Any]) -> None:
    async def deliver() -> None:
        await send(message)

    asyncio.run(deliver())


def test_charge_admits_by_peer_address_and_offers_the_tightest(clock: FakeClock) -> None:
    from ferrolimit._core import _SCOPE_PENDING, Charge, Counts, HeaderRenderer, Pending

    limiter = Limiter("3/min", "gcra", clock=clock)
    renderer, counts, resolver = HeaderRenderer(), Counts(), ClientIdentifier().native
    charge = Charge(limiter, "route:", None, 1, renderer, "route", counts, resolver)
    sent, send = _recorder()
    scope: dict[str, Any] = {"type": "http", "client": ("10.0.0.1", 5000)}
    wrapped = charge.admit(scope, send)
    assert callable(wrapped) and wrapped is not send, "a new pending cell comes with a send that writes it"
    pending = scope[_SCOPE_PENDING]
    assert isinstance(pending, Pending) and pending.decision is not None
    assert pending.decision.allowed and pending.decision.remaining == 2 and counts.allowed == 1
    assert dict(pending.fields)[b"x-ratelimit-remaining"] == b"2"
    # The same counter as the limiter's own key "route:10.0.0.1".
    assert limiter.hit("route:10.0.0.1").remaining == 1
    _deliver(wrapped, {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    assert sent[0]["headers"] == [(b"content-type", b"text/plain"), *pending.fields]

    # An outer layer made the pending cell (and writes it): send is handed back as it is. A looser decision
    # offered earlier gives way to this tighter one.
    outer = Pending()
    assert outer.decision is None and outer.fields == []
    assert renderer.offer(outer, Limiter("100/min", clock=clock).hit("x"), "loose")
    again = {"type": "http", "client": ["10.0.0.1", 5000], _SCOPE_PENDING: outer}
    assert charge.admit(again, send) is send
    held = outer.decision
    assert held is not None and held.remaining == 0 and counts.allowed == 2
    assert dict(outer.fields)[b"x-ratelimit-limit"] == b"3"
    refused = charge.admit(again, send)
    assert isinstance(refused, tuple)
    decision, same, client_key = refused
    assert not decision.allowed and same is send and counts.allowed == 2, "a refusal is not counted as allowed"
    assert client_key == "10.0.0.1"
    assert dict(outer.fields)[b"retry-after"] == b"20", "the refusal binds tighter than the allowed decision held"
    assert not renderer.offer(outer, Limiter("100/min", clock=clock).hit("x"), "loose"), "a looser one is not kept"

    # An IPv6 client is keyed by its /64, as ClientIdentifier keys it.
    assert callable(charge.admit({"type": "http", "client": ("2001:db8::1", 1)}, send))
    assert limiter.hit("route:2001:db8::/64").remaining == 1
    # No client that can be resolved: nothing is done (the Python side keys and logs it).
    for client in [None, ("", 1), (b"10.0.0.1", 1), (), 42]:
        untouched: dict[str, Any] = {"type": "http", "client": client}
        assert charge.admit(untouched, send) is None
        assert _SCOPE_PENDING not in untouched and counts.allowed == 3
    assert charge.admit({"type": "http"}, send) is None
    # Another client has its own counter; a charge's rate can differ from its limiter's.
    other = Charge(limiter, "route:", Quota("1/s"), 1, renderer, "other", Counts(), resolver)
    assert callable(other.admit({"client": ("10.0.0.2", 1)}, send))


def test_charges_let_exempt_clients_through_untouched(clock: FakeClock) -> None:
    """Exempt addresses and networks, matched on the client as resolved (behind the trusted proxy too): not
    charged, not counted, no fields; everyone else is charged as before."""
    from ferrolimit._core import _SCOPE_ENGINE, _SCOPE_PENDING, Charge, Counts, HeaderRenderer, Pending, RouteCharges

    limiter = Limiter("1/min", clock=clock)
    counts = Counts()
    resolver = ClientIdentifier(trusted_proxies=["10.0.0.0/8"]).native
    exempt = IPSet(["192.0.2.0/24", "2001:db8::7", "10.9.9.9"]).native()
    charge = Charge(limiter, "e:", None, 1, HeaderRenderer(), "e", counts, resolver, exempt)
    _, send = _recorder()
    proxied = [(b"x-forwarded-for", b"192.0.2.50")]
    for client, headers in [(("192.0.2.1", 1), []), (("2001:db8::7", 1), []), (("10.0.0.1", 1), proxied)]:
        for _ in range(3):
            scope: dict[str, Any] = {"type": "http", "client": client, "headers": headers}
            assert charge.admit(scope, send) is send and _SCOPE_PENDING not in scope

    # 10.9.9.9 is exempt, but as a trusted proxy it is never the client: the address it names is charged.
    def spoofed() -> dict[str, Any]:
        return {"type": "http", "client": ("10.9.9.9", 1), "headers": [(b"x-forwarded-for", b"203.0.113.1")]}

    assert charge.admit(spoofed(), send) is not send and counts.allowed == 1
    assert isinstance(charge.admit(spoofed(), send), tuple), "203.0.113.1 was charged, not let through"
    assert len(limiter) == 1 and counts.allowed == 1

    charges, route, engine = RouteCharges(), object(), object()
    charges.set(route, engine, charge, "")
    for peer in ["192.0.2.9", "2001:db8::7", "198.51.100.1"]:
        pending = Pending()
        assert charges.admit({"client": (peer, 1), "route": route, _SCOPE_ENGINE: engine, _SCOPE_PENDING: pending})
        assert (pending.decision is not None) == (peer == "198.51.100.1"), "no fields for an exempt client"
    assert counts.allowed == 2


def test_charge_refuses_what_it_cannot_decide(clock: FakeClock) -> None:
    from ferrolimit._core import Charge, Counts, HeaderRenderer

    with pytest.raises(CostExceedsLimitError, match="a cost of 5 can never pass a limit of 3"):
        Charge(Limiter("3/min", clock=clock), "p:", None, 5, HeaderRenderer(), "p", Counts(), ClientIdentifier().native)
    with pytest.raises(ValueError, match="cost must be"):
        Charge(Limiter("3/min", clock=clock), "p:", None, 0, HeaderRenderer(), "p", Counts(), ClientIdentifier().native)


def test_route_charges_admit_only_the_route_and_limiter_they_were_set_for(clock: FakeClock) -> None:
    from ferrolimit._core import (
        _SCOPE_ENGINE,
        _SCOPE_PENDING,
        Charge,
        Counts,
        Decision,
        HeaderRenderer,
        Pending,
        RouteCharges,
    )

    counts = Counts()
    resolver = ClientIdentifier(trusted_proxies=["10.0.0.0/8"]).native
    charge = Charge(Limiter("2/min", clock=clock), "r:", None, 1, HeaderRenderer(), "r", counts, resolver)
    charges = RouteCharges()
    route, engine = object(), object()
    charges.set(route, engine, charge, "")
    assert len(charges) == 1

    def scope(**changes: Any) -> dict[str, Any]:
        base = {"client": ("10.0.0.1", 1), "route": route, _SCOPE_ENGINE: engine, _SCOPE_PENDING: Pending()}
        return {key: value for key, value in {**base, **changes}.items() if value is not None}

    first = scope()
    assert charges.admit(first) is True and counts.allowed == 1
    assert dict(first[_SCOPE_PENDING].fields)[b"x-ratelimit-remaining"] == b"1"
    # Anything else goes the general way, untouched.
    for other in [
        scope(route=object()),
        scope(**{_SCOPE_ENGINE: object()}),
        scope(**{_SCOPE_PENDING: None}),
        scope(client=("", 1)),
        scope(client=("10.0.0.9", 1), headers=[(b"x-forwarded-for", b"not an address")]),
        scope(client=("10.0.0.9", 1), headers={"x-forwarded-for": "192.0.2.1"}),
        scope(fastapi={"effective_route_context": None}),
    ]:
        assert charges.admit(other) is None
    assert counts.allowed == 1
    assert charges.admit(scope()) is True
    # Behind the trusted proxy, the client it names is charged: 192.0.2.1 has a quota of its own.
    proxied = scope(client=("10.0.0.9", 1), headers=[(b"X-Forwarded-For", b"192.0.2.1")])
    assert charges.admit(proxied) is True and counts.allowed == 3
    refused = charges.admit(scope())
    assert isinstance(refused, tuple)
    decision, client_key = refused
    assert isinstance(decision, Decision) and not decision.allowed and client_key == "10.0.0.1"
    assert counts.allowed == 3
    charges.set(route, engine, None, "")
    assert len(charges) == 0 and charges.admit(scope()) is None
    counts.add(limited=1, dry_run_limited=2)
    assert counts.as_dict() == {"allowed": 3, "limited": 1, "dry_run_limited": 2}


def test_send_with_headers_writes_the_fields_on_the_start_message_only(clock: FakeClock) -> None:
    from ferrolimit._core import HeaderRenderer, Pending, send_with_headers

    limiter = Limiter("10/min", clock=clock)
    for _ in range(10):
        limiter.hit("k")
    pending = Pending()
    HeaderRenderer(remaining=None, reset=None).offer(pending, limiter.hit("k"))
    fields = pending.fields
    assert fields == [(b"x-ratelimit-limit", b"10"), (b"retry-after", b"6")]
    sent, send = _recorder()
    wrapped = send_with_headers(send, pending)
    body = {"type": "http.response.body", "body": b"x"}
    _deliver(wrapped, {"type": "http.response.start", "status": 200})
    _deliver(wrapped, body)
    assert sent == [{"type": "http.response.start", "status": 200, "headers": fields}, body]
    # An error response that already names a field keeps its own; the others are added. Any iterable of pairs.
    sent.clear()
    _deliver(wrapped, {"type": "http.response.start", "status": 429, "headers": ((b"Retry-After", b"9"),)})
    assert sent[0]["headers"] == [(b"Retry-After", b"9"), (b"x-ratelimit-limit", b"10")]
    sent.clear()
    _deliver(wrapped, {"type": "websocket.accept", "headers": [(b"a", b"b")]})
    assert sent[0]["headers"] == [(b"a", b"b"), *fields]
    # Nothing pending yet: the message goes as it is.
    sent.clear()
    _deliver(send_with_headers(send, Pending()), {"type": "http.response.start", "status": 200})
    assert sent == [{"type": "http.response.start", "status": 200}]
    # What send raises, and a message with no type, reach the caller.
    with pytest.raises(KeyError):
        wrapped({"status": 200})

    async def broken(message: dict[str, Any]) -> None:
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        _deliver(send_with_headers(broken, pending), {"type": "http.response.start", "status": 200})


def test_rendered_numbers_follow_every_change(clock: FakeClock) -> None:
    """The renderer reuses a field's last (name, value) pair while the number holds: it must never serve a
    stale one when the number moves, up or down, and across limiters sharing the renderer."""
    from ferrolimit._core import HeaderRenderer

    renderer = HeaderRenderer()
    small, large = Limiter("2/min", clock=clock), Limiter("1000/hour", clock=clock)
    for step in range(6):
        for limiter in (small, large):
            decision = limiter.hit(f"k{step % 2}")
            fields = dict(renderer.render(decision))
            assert fields[b"x-ratelimit-limit"] == str(decision.limit).encode()
            assert fields[b"x-ratelimit-remaining"] == str(decision.remaining).encode()
            assert fields[b"x-ratelimit-reset"] == str(math.ceil(decision.reset_at)).encode()
        clock.advance(7.5)
