"""ConcurrencyLimiter in memory, on one Redis server and on a 3-master cluster (the ``storage`` fixture), held
to the same assertions; then what only Redis has: leases that outlive a dead worker, key layout and TTLs,
exactness across processes, a free event loop, and the failure policies with a killed server."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ferrolimit import (
    ConcurrencyLimiter,
    ConcurrencyLimitExceeded,
    CostExceedsLimitError,
    FakeClock,
    Lease,
)
from tests.redis_server import RedisCluster, RedisServer

MakeConcurrency = Callable[..., ConcurrencyLimiter]


def prefix() -> str:
    return f"c-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def make(storage: str) -> MakeConcurrency:
    """``ConcurrencyLimiter(...)`` on the backend under test, with a key prefix of this test's own."""
    key_prefix = prefix()

    def build(limit: int, **kwargs: Any) -> ConcurrencyLimiter:
        if storage != "memory://":
            kwargs.setdefault("key_prefix", key_prefix)
            kwargs.setdefault("timeout_ms", 2_000)
        return ConcurrencyLimiter(limit, storage, **kwargs)

    return build


def assert_no_backend_errors(limiter: ConcurrencyLimiter) -> None:
    stats = limiter.stats()
    assert stats.get("backend_errors", 0) == 0 and stats.get("fallbacks", 0) == 0, stats


def test_slots_are_taken_refused_and_given_back(make: MakeConcurrency) -> None:
    limiter = make(2, retry_after=0.5)
    assert limiter.is_remote == (limiter.lease_ms is not None)
    first = limiter.acquire_lease("k")
    assert first and first.allowed and first.decision.remaining == 1 and not first.released
    with limiter.slot("k") as second:
        assert isinstance(second, Lease) and second.decision.remaining == 0
        denied = limiter.acquire_lease("k")
        assert not denied and denied.released and denied.decision.retry_after == 0.5
        denied.release()  # a denied lease holds nothing: releasing it frees nobody's slot
        assert limiter.peek("k").remaining == 0
        with pytest.raises(ConcurrencyLimitExceeded) as raised:
            with limiter.slot("k"):
                pytest.fail("the block ran without a slot")
        assert raised.value.decision.allowed is False and raised.value.retry_after == 0.5
        assert "2 concurrency slots" in str(raised.value)
    assert second.released and limiter.peek("k").remaining == 1, "the with block gave its slot back"
    assert limiter.acquire("other").remaining == 1, "keys are counted apart"
    first.release()
    peek = limiter.peek("k")
    assert peek.allowed and peek.remaining == 2 and peek.limit == 2
    stats = limiter.stats()
    assert (stats["allowed"], stats["denied"]) == (3, 2)
    assert_no_backend_errors(limiter)


def test_a_block_that_raises_still_gives_its_slot_back(make: MakeConcurrency) -> None:
    limiter = make(1)
    slot = limiter.slot("k")
    with pytest.raises(KeyError):
        with slot:
            raise KeyError("boom")
    with slot:  # a Slot can be entered again once left
        with pytest.raises(RuntimeError, match="held already"):
            slot.__enter__()
    assert limiter.peek("k").remaining == 1


def test_one_slot_entered_by_two_at_once_refuses_the_second(make: MakeConcurrency) -> None:
    """A Slot shared by two tasks or threads: the second entry is refused while the first one's acquisition is
    on its way to Redis, instead of replacing the first one's lease (which then went back while its block ran)."""
    limiter = make(5)
    slot = limiter.slot("k")
    held_already = "this slot is held already: use one limiter.slot(...) per with block"

    async def enter() -> str:
        try:
            async with slot:
                await asyncio.sleep(0.05)
                return f"ran with {(await limiter.peek_async('k')).remaining} free"
        except RuntimeError as error:
            return str(error)

    async def main() -> list[str]:
        return list(await asyncio.gather(enter(), enter()))

    assert asyncio.run(main()) == ["ran with 4 free", held_already]

    def enter_sync() -> str:
        try:
            with slot:
                time.sleep(0.1)
                return f"ran with {limiter.peek('k').remaining} free"
        except RuntimeError as error:
            return str(error)

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(lambda _: enter_sync(), range(2)))
    assert outcomes == ["ran with 4 free", held_already]
    assert limiter.peek("k").remaining == 5
    with slot:  # free again once left
        assert limiter.peek("k").remaining == 4


def test_costs_and_a_cost_above_the_limit(make: MakeConcurrency) -> None:
    limiter = make(5)
    big = limiter.acquire_lease("k", cost=3)
    assert big.allowed and big.cost == 3 and big.decision.remaining == 2
    refused = limiter.acquire("k", cost=3)
    assert not refused.allowed and refused.remaining == 2, "a refused request takes nothing"
    assert limiter.acquire("k", cost=2).remaining == 0
    big.release()
    assert limiter.peek("k").remaining == 3
    for call in (limiter.acquire, limiter.acquire_lease, limiter.slot):
        message = "^a cost of 6 can never pass a limit of 5 concurrent slots: the most one request can take is 5$"
        with pytest.raises(CostExceedsLimitError, match=message):
            call("k", 6)
        with pytest.raises(ValueError, match="cost must be a positive whole number, got 0"):
            call("k", 0)
    limiter.release("k", 2)
    assert limiter.peek("k").remaining == 5


@pytest.mark.parametrize(("limit", "retry_after"), [(3, 2.5), (2_000_000, 0.001), (1, 1e-9)])
def test_the_wait_is_the_one_given(make: MakeConcurrency, limit: int, retry_after: float) -> None:
    limiter = make(limit, retry_after=retry_after)
    assert limiter.acquire("k", limit).allowed
    for denied in (limiter.acquire("k"), limiter.peek("k"), limiter.acquire_lease("k").decision):
        assert not denied.allowed and denied.retry_after == retry_after
        assert denied.reset_after == retry_after, "a denial never resets before its retry"
    limiter.release("k", limit)
    assert limiter.peek("k").remaining == limit


def test_releasing_twice_or_late_never_frees_another_lease(make: MakeConcurrency) -> None:
    limiter = make(2)
    mine, theirs = limiter.acquire_lease("k"), limiter.acquire_lease("k")
    mine.release()
    mine.release()
    with mine:  # exiting a released lease's block releases nothing more
        pass
    assert limiter.peek("k").remaining == 1, "theirs still holds its slot"
    assert limiter.acquire("k").allowed
    limiter.release("k")
    limiter.release("k")  # one more than this process took by acquire(): nothing
    limiter.release("k", 2)
    assert limiter.peek("k").remaining == 1 and not theirs.released


def test_an_expired_lease_frees_its_slot_and_only_its_own(make: MakeConcurrency, clock: FakeClock) -> None:
    # On Redis a FakeClock's time is passed to the script instead of TIME: expiry is exact, without sleeping.
    limiter = make(2, lease_ms=10_000, clock=clock)
    assert limiter.lease_ms == 10_000
    crashed = limiter.acquire_lease("k")  # a worker that dies without releasing
    clock.advance(5)
    alive = limiter.acquire_lease("k")
    assert not limiter.acquire("k").allowed
    clock.advance(4.999)
    assert not limiter.acquire("k").allowed, "a lease holds its slot until its expiry"
    clock.advance(0.001)
    assert limiter.peek("k").remaining == 1, "the crashed worker's lease expired"
    crashed.release()  # too late: frees nothing, certainly not the live lease's slot
    assert limiter.peek("k").remaining == 1
    late = limiter.acquire_lease("k")
    assert late.allowed and not limiter.acquire("k").allowed
    alive.release()
    late.release()
    assert limiter.peek("k").remaining == 2
    assert_no_backend_errors(limiter)


def test_in_memory_slots_are_held_until_released_by_default(clock: FakeClock) -> None:
    limiter = ConcurrencyLimiter(1, clock=clock)
    assert limiter.lease_ms is None and not limiter.is_remote
    assert limiter.acquire("k").allowed
    clock.advance(10 * 365 * 86_400)
    assert not limiter.acquire("k").allowed
    assert ConcurrencyLimiter(1, "redis://127.0.0.1:1/0").lease_ms == 60_000, "on Redis leases expire by default"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be a positive whole number, got 0"),
        ({"limit": 1, "lease_ms": 0}, "lease_ms must be a positive whole number, got 0"),
        ({"limit": 1, "retry_after": -1.0}, "retry_after must be a number of seconds"),
        ({"limit": 3, "retry_after": 0}, "retry_after must be a number of seconds above 0 and at most ten years"),
        ({"limit": 3, "retry_after": 1e-10}, r"above 0 and at most ten years \(the wait .*\), got 0.0000000001$"),
        ({"limit": 3, "retry_after": 3651 * 86_400.0}, "above 0 and at most ten years"),
        ({"limit": 1, "storage": "mongodb://x"}, 'unknown storage "mongodb://x"'),
        ({"limit": 1, "on_backend_error": "retry"}, "on_backend_error must be 'allow', 'deny' or 'memory'"),
        ({"limit": 1, "timeout_ms": 0}, "timeout_ms must be a positive whole number"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConcurrencyLimiter(**kwargs)


def test_async_methods(make: MakeConcurrency) -> None:
    limiter = make(3)

    async def main() -> None:
        first = await limiter.acquire_async("k", cost=2)
        assert first.allowed and first.remaining == 1
        async with limiter.slot("k") as lease:
            assert lease.allowed and (await limiter.peek_async("k")).remaining == 0
            with pytest.raises(ConcurrencyLimitExceeded):
                async with limiter.slot("k"):
                    pytest.fail("the block ran without a slot")
        assert lease.released
        held = await limiter.acquire_lease_async("k")
        assert held.allowed and not (await limiter.acquire_lease_async("k")).allowed
        await held.release_async()
        await held.release_async()
        async with await limiter.acquire_lease_async("k") as scoped:
            assert scoped.allowed
        assert scoped.released
        await limiter.release_async("k", 2)
        assert (await limiter.peek_async("k")).remaining == 3
        with pytest.raises(CostExceedsLimitError):
            await limiter.acquire_async("k", 4)

    asyncio.run(main())
    assert_no_backend_errors(limiter)


def test_concurrent_tasks_never_exceed_the_limit(make: MakeConcurrency) -> None:
    limiter = make(5)
    in_flight = peak = entered = 0

    async def request() -> None:
        nonlocal in_flight, peak, entered
        for _ in range(20):
            try:
                async with limiter.slot("hot"):
                    entered += 1
                    in_flight += 1
                    peak = max(peak, in_flight)
                    await asyncio.sleep(0.001)
                    in_flight -= 1
            except ConcurrencyLimitExceeded:
                await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(request() for _ in range(20)))

    asyncio.run(main())
    assert peak == 5 and entered >= 5
    assert limiter.peek("hot").remaining == 5
    assert_no_backend_errors(limiter)


# Redis only ---------------------------------------------------------------------------------------------


def test_key_layout_ttls_and_one_evalsha_per_call(redis_server: RedisServer) -> None:
    key_prefix = prefix()
    limiter = ConcurrencyLimiter(3, redis_server.url, key_prefix=key_prefix, lease_ms=30_000)
    limiter.peek("warm")  # loads the script outside the count
    redis_server.command("CONFIG", "RESETSTAT")
    lease = limiter.acquire_lease("GET /users/{id}", cost=2)
    limiter.acquire("GET /users/{id}")
    limiter.peek("GET /users/{id}")
    keys = sorted(redis_server.command("KEYS", key_prefix + "*"))
    assert keys == [
        f"{key_prefix}concurrency:{{GET /users/%7Bid%7D}}:3:costs",
        f"{key_prefix}concurrency:{{GET /users/%7Bid%7D}}:3:leases",
    ]
    for key in keys:
        assert 29_000 < redis_server.command("PTTL", key) <= 30_000, "keys expire with their last lease"
    assert redis_server.command("HGET", keys[0], "n") == "3"
    assert redis_server.command("ZCARD", keys[1]) == 2
    lease.release()
    redis_server.command("HSET", keys[0], "n", "-7")  # a total spoilt by hand (or eviction) is counted again
    assert limiter.peek("GET /users/{id}").remaining == 2
    limiter.release("GET /users/{id}")
    assert redis_server.command("KEYS", key_prefix + "*") == [], "a key without live leases is gone"
    calls = redis_server.command_calls()
    assert calls.get("evalsha") == 6 and "eval" not in calls
    assert calls["time"] == 6, "each call read the server's clock once"
    redis_server.command("SCRIPT", "FLUSH")
    assert limiter.acquire("k").allowed and limiter.stats()["backend_errors"] == 0, "the script is loaded again"


def test_leases_of_a_dead_worker_expire_on_the_server_clock(redis_server: RedisServer) -> None:
    key_prefix = prefix()
    dead = ConcurrencyLimiter(1, redis_server.url, key_prefix=key_prefix, lease_ms=200)
    assert dead.acquire("k").allowed
    del dead  # its process is gone: nothing will release the lease
    survivor = ConcurrencyLimiter(1, redis_server.url, key_prefix=key_prefix, lease_ms=200)
    survivor.release("k")  # names no lease of its own: frees nothing
    denied = survivor.acquire("k")
    assert not denied.allowed
    deadline = time.monotonic() + 2
    while not survivor.acquire("k").allowed:
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.02)
    assert survivor.stats()["backend_errors"] == 0


def test_the_cluster_holds_both_keys_of_a_key_in_one_slot(redis_cluster: RedisCluster) -> None:
    limiter = ConcurrencyLimiter(2, redis_cluster.url, key_prefix=prefix())
    leases = [limiter.acquire_lease(f"user:{index}") for index in range(30)]  # spread over the three masters
    assert all(leases)
    assert limiter.peek("user:7").remaining == 1
    for lease in leases:
        lease.release()
    assert all(limiter.peek(f"user:{index}").remaining == 2 for index in range(30))
    assert limiter.stats()["backend_errors"] == 0


def test_the_empty_key_is_limited_on_a_cluster_like_any_other(redis_cluster: RedisCluster) -> None:
    """A key read from a missing header or user id can be "": its two Redis keys still share one slot, so the
    cluster runs the script instead of refusing it (CROSSSLOT) as a backend error."""
    limiter = ConcurrencyLimiter(1, redis_cluster.url, key_prefix=prefix(), on_backend_error="deny")
    lease = limiter.acquire_lease("")
    assert lease.allowed and not limiter.acquire_lease("").allowed
    lease.release()
    assert limiter.peek("").remaining == 1 and limiter.acquire_lease("%").allowed, "'' and '%' are two keys"
    assert limiter.stats()["backend_errors"] == 0


WORKER = """
import sys
import redis
from ferrolimit import ConcurrencyLimiter
url, port, key_prefix, tries = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
limiter = ConcurrencyLimiter(5, url, key_prefix=key_prefix, timeout_ms=5000)
counter = redis.Redis(host="127.0.0.1", port=port)
entered = denied = peak = 0
for _ in range(tries):
    held = []
    for _ in range(3):  # four processes holding up to three leases each: twelve wanted, five slots
        lease = limiter.acquire_lease("hot")
        if lease:
            held.append(lease)
            entered += 1
            peak = max(peak, counter.incr(key_prefix + "in-flight"))
        else:
            denied += 1
    for lease in held:
        counter.decr(key_prefix + "in-flight")
        lease.release()
print(entered, denied, peak, limiter.stats()["fallbacks"])
"""


def test_four_processes_racing_for_five_slots_never_hold_more(redis_server: RedisServer) -> None:
    pytest.importorskip("redis")
    key_prefix = prefix()
    args = [redis_server.url, str(redis_server.port), key_prefix, "100"]
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, *args], stdout=subprocess.PIPE, text=True) for _ in range(4)
    ]
    results = [[int(field) for field in worker.communicate(timeout=60)[0].split()] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), results
    assert [fallbacks for *_, fallbacks in results] == [0] * 4
    assert max(peak for _, _, peak, _ in results) <= 5, results
    assert sum(denied for _, denied, _, _ in results) > 0, f"the processes never contended: {results}"
    assert sum(entered for entered, _, _, _ in results) >= 500, results
    assert ConcurrencyLimiter(5, redis_server.url, key_prefix=key_prefix).peek("hot").remaining == 5


def test_an_async_release_made_outside_an_event_loop_releases_when_awaited(redis_server: RedisServer) -> None:
    limiter = ConcurrencyLimiter(1, redis_server.url, key_prefix=prefix())
    lease = limiter.acquire_lease("k")
    release = lease.release_async()  # a coroutine: nothing happens until it runs
    assert not lease.released and limiter.peek("k").remaining == 0
    asyncio.run(release)
    assert lease.released and limiter.peek("k").remaining == 1
    assert limiter.acquire("k").allowed
    release = limiter.release_async("k")
    assert limiter.peek("k").remaining == 0
    asyncio.run(release)
    assert lease.released and limiter.peek("k").remaining == 1


def test_a_lease_nobody_can_release_gives_its_slots_back(make: MakeConcurrency) -> None:
    limiter = make(2)
    limiter.acquire_lease("k")  # dropped at once: garbage, not a slot held until it expires
    kept = limiter.acquire_lease("k")
    gc.collect()
    assert wait_for(lambda: limiter.peek("k").remaining == 1), "the dropped lease was given back"
    assert not kept.released


def wait_for(condition: Callable[[], bool], seconds: float = 2.0) -> bool:
    """For releases that run on a tokio task: polls until `condition` holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_cancelled_entry_does_not_keep_its_slot(redis_server: RedisServer) -> None:
    limiter = ConcurrencyLimiter(1, redis_server.url, key_prefix=prefix(), timeout_ms=5_000)
    limiter.peek("warm")

    async def main() -> None:
        async def enter() -> None:
            async with limiter.slot("k"):
                pytest.fail("the cancelled entry ran its block")

        redis_server.command("CLIENT", "PAUSE", "300", "WRITE")
        entering = asyncio.create_task(enter())
        await asyncio.sleep(0.1)
        entering.cancel()
        with pytest.raises(asyncio.CancelledError):
            await entering
        for _ in range(200):  # the loop runs on, as a server's does, and drops the late lease
            await asyncio.sleep(0.01)
            if (await limiter.peek_async("k")).remaining == 1:
                return
        pytest.fail("the slot taken after the cancel was never given back")

    asyncio.run(main())
    assert limiter.stats()["fallbacks"] == 0


def test_the_event_loop_runs_while_redis_is_slow(redis_server: RedisServer) -> None:
    limiter = ConcurrencyLimiter(1_000, redis_server.url, key_prefix=prefix(), timeout_ms=5_000)
    limiter.peek("warm")

    async def main() -> tuple[int, int, float]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        async def request(index: int) -> bool:
            async with limiter.slot(f"k{index % 10}") as lease:
                return lease.allowed

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        redis_server.command("CLIENT", "PAUSE", "400", "ALL")
        started = time.monotonic()
        ticks = 0
        results = await asyncio.gather(*(request(index) for index in range(300)))
        elapsed = time.monotonic() - started
        stop.set()
        await ticking
        return ticks, sum(results), elapsed

    ticks, passed, elapsed = asyncio.run(main())
    assert elapsed >= 0.3, "Redis was paused"
    assert passed == 300
    assert ticks >= 10, f"the ticker ticked {ticks} times in {elapsed:.2f} s"
    assert limiter.stats()["fallbacks"] == 0
    assert limiter.peek("k3").remaining == 1_000


TIMEOUT_S = 0.15


def two_slots_failing_fast(policy: str, server: RedisServer) -> ConcurrencyLimiter:
    """Two slots on `server`, giving up on it after TIMEOUT_S and opening the breaker after two failures."""
    return ConcurrencyLimiter(
        2,
        server.url,
        key_prefix=prefix(),
        timeout_ms=int(TIMEOUT_S * 1000),
        connect_timeout_ms=int(TIMEOUT_S * 1000),
        on_backend_error=policy,
        breaker_failures=2,
        breaker_cooldown_ms=200,
    )


@pytest.mark.parametrize("policy", ["allow", "deny", "memory"])
def test_failure_policies_with_a_killed_server(policy: str, fresh_redis: RedisServer) -> None:
    limiter = two_slots_failing_fast(policy, fresh_redis)
    before = limiter.acquire_lease("k")
    assert before.allowed
    fresh_redis.kill()

    started = time.monotonic()
    leases = [limiter.acquire_lease("k") for _ in range(3)]
    decisions = [lease.allowed for lease in leases]
    anonymous = limiter.acquire("k")
    for lease in leases:
        lease.release()  # a lease taken during the outage: released where it was taken, never raises
    before.release()  # Redis is gone: dropped, the lease will expire there
    limiter.release("k")

    async def during() -> list[bool]:
        async with limiter.slot("k") as lease:
            assert lease.allowed
        return [(await limiter.acquire_async("a")).allowed, (await limiter.acquire_lease_async("b")).allowed]

    if policy == "deny":
        with pytest.raises(ConcurrencyLimitExceeded) as raised:
            asyncio.run(during())
        assert raised.value.retry_after >= 1
    else:
        assert asyncio.run(during()) == [True, True]
    assert time.monotonic() - started < 2 * TIMEOUT_S + 1.0, "no call waited past the timeout"
    expected = {"allow": [True] * 3, "deny": [False] * 3, "memory": [True, True, False]}[policy]
    assert decisions == expected
    assert anonymous.allowed == (policy == "allow")
    if policy == "memory":
        assert limiter.peek("k").remaining == 2, "the local leases were released locally"
    stats = limiter.stats()
    assert stats["incidents"] == 1 and stats["fallbacks"] >= 4

    fresh_redis.start()
    deadline = time.monotonic() + 5
    while True:
        fallbacks = limiter.stats()["fallbacks"]
        lease = limiter.acquire_lease("after")
        if limiter.stats()["fallbacks"] == fallbacks:
            break
        lease.release()
        assert time.monotonic() < deadline, "Redis did not come back"
        time.sleep(0.02)
    assert lease.allowed and lease.decision.remaining == 1
    lease.release()
    assert limiter.peek("after").remaining == 2


@pytest.mark.parametrize("policy", ["allow", "deny", "memory"])
def test_leases_lost_in_a_stall_give_their_slots_back_once_redis_answers(policy: str, fresh_redis: RedisServer) -> None:
    """A paused Redis runs the acquisitions it was sent when it resumes, though their callers timed out and went
    on without them; a release made while the breaker is open never reaches it. Neither may hold a slot until its
    lease expires (a minute by default): the key would be full with nothing running."""
    limiter = two_slots_failing_fast(policy, fresh_redis)
    held = limiter.acquire_lease("k")
    assert held.allowed
    fresh_redis.pause()
    stalled = [limiter.acquire_lease("k") for _ in range(2)]  # time out, then open the breaker
    assert [lease.allowed for lease in stalled] == [policy != "deny"] * 2
    for lease in stalled:
        lease.release()
    held.release()  # the breaker is open: not sent now
    fresh_redis.resume()

    def redis_says_all_free() -> bool:
        fallbacks = limiter.stats()["fallbacks"]
        remaining = limiter.peek("k").remaining
        return limiter.stats()["fallbacks"] == fallbacks and remaining == 2

    assert wait_for(redis_says_all_free, seconds=5), f"still held: {limiter.peek('k')}"
    after = [limiter.acquire_lease("k") for _ in range(3)]
    assert [lease.allowed for lease in after] == [True, True, False]


def test_readme_concurrency_block_runs_against_a_server(redis_server: RedisServer) -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = text.find("```py\n# redis concurrency example")
    assert start >= 0, "README has no Redis concurrency example"
    block = text[start + len("```py\n") : text.index("```", start + 6)]
    exec(compile(block.replace("redis://localhost:6379/0", redis_server.url), "README.md", "exec"), {})
