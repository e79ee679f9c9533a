"""Redis failures under each ``on_backend_error`` policy: a killed, paused, restarted or unreachable server.
Nothing raises, nothing waits past the timeout, the breaker stops waiting altogether, each incident is
logged once, and service resumes by itself when Redis is back."""

from __future__ import annotations

import asyncio
import functools
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from ferrolimit import ConcurrencyLimiter, Decision, Limiter, Quota
from ferrolimit._core import HeaderRenderer
from tests.redis_server import RedisCluster, RedisServer, free_port

T = TypeVar("T")

POLICIES = ["allow", "deny", "memory"]
TIMEOUT_S = 0.15
COOLDOWN_S = 0.2
# Generous: the box running the tests may be busy. The bound that matters is "not the OS TCP timeout".
SLACK_S = 0.5


def make(url: str, policy: str, cooldown_s: float = COOLDOWN_S) -> Limiter:
    return Limiter(
        "3/min",
        "gcra",
        url,
        key_prefix=f"f-{uuid.uuid4().hex[:12]}:",
        timeout_ms=int(TIMEOUT_S * 1000),
        connect_timeout_ms=int(TIMEOUT_S * 1000),
        on_backend_error=policy,
        breaker_failures=2,
        breaker_cooldown_ms=int(cooldown_s * 1000),
    )


def timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def timed_for(duration_s: float, call: Callable[[], Decision]) -> list[tuple[Decision, float]]:
    """`call` over and over (10 ms apart) for `duration_s`, each with the seconds it took."""
    outcomes = []
    started = time.monotonic()
    while time.monotonic() - started < duration_s:
        outcomes.append(timed(call))
        time.sleep(0.01)
    return outcomes


def assert_policy(policy: str, decisions: list[Decision]) -> None:
    allowed = [decision.allowed for decision in decisions]
    if policy == "allow":
        assert all(allowed)
        assert all(decision.limit == 3 for decision in decisions)
    elif policy == "deny":
        assert not any(allowed)
        assert all(decision.retry_after >= 1 for decision in decisions)
    else:
        assert allowed == [True] * 3 + [False] * (len(decisions) - 3), "the local limiter applies the same rules"


def wait_until_redis_answers(limiter: Limiter, key: str) -> Decision:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        fallbacks = limiter.stats()["fallbacks"]
        decision = limiter.hit(key)
        if limiter.stats()["fallbacks"] == fallbacks:
            return decision
        time.sleep(0.02)
    raise AssertionError(f"Redis did not come back: {limiter.stats()}")


@pytest.mark.parametrize("policy", POLICIES)
def test_killed_then_restarted(policy: str, fresh_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    limiter = make(fresh_redis.url, policy)
    assert [limiter.allow("before") for _ in range(4)] == [True, True, True, False]
    fresh_redis.kill()
    with caplog.at_level(logging.INFO, logger="ferrolimit"):
        outcomes = [timed(lambda: limiter.hit("during")) for _ in range(6)]
        assert max(elapsed for _, elapsed in outcomes) < TIMEOUT_S * 2 + SLACK_S
        assert_policy(policy, [decision for decision, _ in outcomes])
        stats = limiter.stats()
        assert (stats["incidents"], stats["fallbacks"], stats["breaker_open"]) == (1, 6, 1)

        async def flood() -> list[bool]:
            return await asyncio.gather(*(limiter.allow_async(f"async-{index}") for index in range(200)))

        allowed = asyncio.run(flood())
        assert len(allowed) == 200 and all(allowed) == (policy != "deny")

        fresh_redis.start()
        after = wait_until_redis_answers(limiter, "after")
        assert after.allowed and after.remaining == 2, "Redis decides again (and lost its state with the restart)"
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"127.0.0.1:{fresh_redis.port}" in warnings[0] and f'on_backend_error="{policy}"' in warnings[0]
    assert any("answers again" in record.getMessage() for record in caplog.records if record.levelno == logging.INFO)
    assert limiter.stats()["breaker_open"] == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_paused_then_resumed(policy: str, fresh_redis: RedisServer) -> None:
    limiter = make(fresh_redis.url, policy, cooldown_s=1.0)  # long enough that no probe runs mid-test
    assert limiter.allow("before")
    fresh_redis.pause()
    try:
        outcomes = [timed(lambda: limiter.hit("during")) for _ in range(6)]
    finally:
        fresh_redis.resume()
    times = [elapsed for _, elapsed in outcomes]
    assert max(times[:2]) < TIMEOUT_S + SLACK_S, "no call waits past the timeout"
    assert min(times[:2]) >= TIMEOUT_S * 0.9, "the first calls did wait for Redis"
    assert max(times[2:]) < 0.1, "once the breaker is open no call waits"
    assert_policy(policy, [decision for decision, _ in outcomes])
    assert limiter.stats()["timeouts"] >= 2
    wait_until_redis_answers(limiter, "after")
    assert limiter.stats()["breaker_open"] == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_nothing_listening(policy: str) -> None:
    limiter = make(f"redis://127.0.0.1:{free_port()}/0", policy)
    outcomes = [timed(lambda: limiter.hit("k")) for _ in range(5)]
    assert max(elapsed for _, elapsed in outcomes) < TIMEOUT_S * 2 + SLACK_S
    assert_policy(policy, [decision for decision, _ in outcomes])
    limiter.reset("k")  # does not raise either
    assert limiter.peek("k").limit == 3


def test_a_denial_by_policy_never_resets_before_its_retry() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    limiter = make(url, "deny")
    concurrency = ConcurrencyLimiter(2, url, timeout_ms=150, connect_timeout_ms=150, on_backend_error="deny")
    renderer = HeaderRenderer()
    denials = [
        limiter.hit("k"),
        limiter.hit_many([("k", None), ("u", "5/min")]),
        limiter.test("k"),
        concurrency.acquire("k"),
    ]
    for denied in denials:
        assert not denied.allowed and denied.retry_after >= 1
        assert denied.reset_after >= denied.retry_after, denied
        now = denied.reset_at - denied.reset_after
        fields = dict(renderer.render(denied))
        assert int(fields[b"x-ratelimit-reset"]) >= now + int(fields[b"retry-after"]), fields


def test_a_slow_command_times_out_in_async_code_too(fresh_redis: RedisServer) -> None:
    limiter = make(fresh_redis.url, "deny")
    assert limiter.allow("k")

    async def main() -> tuple[list[Decision], float]:
        fresh_redis.command("CLIENT", "PAUSE", "700", "ALL")
        started = time.monotonic()
        decisions = await asyncio.gather(*(limiter.hit_async(f"k{index}") for index in range(100)))
        return decisions, time.monotonic() - started

    decisions, elapsed = asyncio.run(main())
    assert elapsed < TIMEOUT_S * 2 + SLACK_S
    assert not any(decision.allowed for decision in decisions)
    wait_until_redis_answers(limiter, "after")


@pytest.mark.parametrize("policy", POLICIES)
def test_the_middleware_answers_every_request_while_redis_is_down(policy: str, fresh_redis: RedisServer) -> None:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from ferrolimit.starlette import RateLimitMiddleware

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", home)])
    limiter = make(fresh_redis.url, policy)
    app.add_middleware(RateLimitMiddleware, limit="3/min", backend=limiter)
    client = TestClient(app)
    assert [client.get("/").status_code for _ in range(4)] == [200, 200, 200, 429]
    fresh_redis.kill()
    statuses = [client.get("/").status_code for _ in range(5)]
    expected = {"allow": [200] * 5, "deny": [429] * 5, "memory": [200, 200, 200, 429, 429]}[policy]
    assert statuses == expected
    fresh_redis.start()
    deadline = time.monotonic() + 5
    while True:
        fallbacks = limiter.stats()["fallbacks"]
        status = client.get("/").status_code
        if limiter.stats()["fallbacks"] == fallbacks:
            break
        assert time.monotonic() < deadline, "service did not resume"
        time.sleep(0.02)
    assert status == 200, "Redis decides again, with the fresh state of a restarted server"


def _slot_owner(cluster: RedisCluster) -> Callable[[str], RedisServer]:
    """Which node serves a key's hash tag, from the cluster's own slot table."""
    ranges = []
    for start, end, master, *_ in cluster.nodes[0].command("CLUSTER", "SLOTS"):
        port = int(master[1])
        ranges.append((int(start), int(end), next(node for node in cluster.nodes if node.port == port)))

    def owner(tag: str) -> RedisServer:
        slot = int(cluster.nodes[0].command("CLUSTER", "KEYSLOT", tag))
        return next(node for start, end, node in ranges if start <= slot <= end)

    return owner


def test_a_decision_spanning_a_dead_node_counts_its_failures_against_that_node(redis_dir: Path) -> None:
    """ip + user limits on a cluster: one decision, keys on two nodes. With one of them dead the decision is
    the policy's, and its failures count against the dead node's breaker zone, never the live key's: that
    key's own decisions stay with Redis, however often the spanning decision fails first."""
    cluster = RedisCluster(redis_dir, full_coverage=False).start()
    try:
        limiter = make(cluster.url, "allow")
        owner = _slot_owner(cluster)
        victim = cluster.nodes[0]
        keys = [f"client-{n}" for n in range(200)]
        dead = next(key for key in keys if owner(key) is victim)
        live = next(key for key in keys if owner(key) is not victim)
        assert limiter.hit(live).remaining == 2
        victim.kill()
        quota = Quota("3/min")
        for _ in range(4):  # twice the failures that open a breaker (breaker_failures=2)
            assert limiter.hit_many([(live, quota), (dead, quota)]).allowed, "the policy: allow"
        fallbacks = limiter.stats()["fallbacks"]
        assert fallbacks == 4
        # Redis still decides the live key: its count goes on from before the kill, and it runs out.
        assert [limiter.hit(live).remaining for _ in range(2)] == [1, 0]
        assert not limiter.hit(live).allowed
        assert limiter.stats()["fallbacks"] == fallbacks
    finally:
        cluster.kill()


@pytest.mark.parametrize("policy", ["allow", "deny"])
def test_a_dead_cluster_node_takes_only_its_own_slots_out(
    policy: str, redis_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With one of three masters dead, keys on the other two are still limited by Redis, exactly; keys on
    the dead one are decided by the policy, quickly, and nothing raises. The breaker must not let the dead
    node's failures switch the live nodes' keys over to the policy."""
    cluster = RedisCluster(redis_dir, full_coverage=False).start()
    try:
        limiter = make(cluster.url, policy)
        owner = _slot_owner(cluster)
        victim = cluster.nodes[0]
        # The limiter's keys hash-tag the client key (escaped only for '{', '}' and '%'), so the tag is the key.
        dead_keys = [key for key in (f"client-{n}" for n in range(200)) if owner(key) is victim][:3]
        live_keys = [key for key in (f"client-{n}" for n in range(200)) if owner(key) is not victim][:6]
        assert len(dead_keys) == 3 and len(live_keys) == 6
        assert all(limiter.hit(key).allowed for key in live_keys + dead_keys)  # every node answers
        victim.kill()
        for round_number in range(3):  # the dead node's failures come first, again and again
            for key in dead_keys:
                decision, took = timed(functools.partial(limiter.hit, key))
                assert decision.allowed is (policy == "allow")
                assert took < 2 * TIMEOUT_S + SLACK_S
            for key in live_keys:
                # 3/min: the first hit was before the kill, so rounds 0 and 1 pass and round 2 is refused
                # whatever the policy: Redis, not the policy, decides these keys.
                decision, took = timed(functools.partial(limiter.hit, key))
                assert decision.allowed is (round_number < 2), (key, round_number, policy)
                assert took < 2 * TIMEOUT_S + SLACK_S
        stats = limiter.stats()
        assert stats["fallbacks"] == len(dead_keys) * 3 and stats["incidents"] == 1
        with caplog.at_level(logging.INFO, logger="ferrolimit"):
            victim.start()  # back on its port with its cluster config: its slots again, but no data
            after = wait_until_redis_answers(limiter, dead_keys[0])
            assert after.allowed and after.remaining == 2, "Redis decides the dead node's keys again"
            for key in dead_keys[1:]:
                wait_until_redis_answers(limiter, key)
            assert limiter.stats()["breaker_open"] == 0
        warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        assert len(warnings) == 1, "one incident, one line, however many zones it opened"
        assert any("answers again" in record.getMessage() for record in caplog.records)
    finally:
        cluster.kill()


def test_a_lease_whose_release_fails_as_python_exits_leaves_a_clean_exit(fresh_redis: RedisServer) -> None:
    """The release runs on a tokio thread while the interpreter shuts down, fails, and has nobody to log to."""
    script = (
        "import sys\n"
        "from ferrolimit import ConcurrencyLimiter\n"
        f"lease = ConcurrencyLimiter(3, {fresh_redis.url!r}, timeout_ms=100).acquire_lease('k')\n"
        "print(lease.allowed, flush=True)\n"
        "sys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "True\n"
    fresh_redis.kill()
    _, stderr = child.communicate("\n", timeout=30)
    assert child.returncode == 0
    assert "panicked" not in stderr, stderr


# A reconnect after an incident must not cost a request `connect_timeout_ms`: with these settings a probe that
# waited for its connection would take about 1 s, one bounded by the timeout about 0.1 s.
PROBE_TIMEOUT_MS = 100
PROBE_CONNECT_TIMEOUT_MS = 1_000
# Generous, as SLACK_S: the point is to tell 0.1 s from 1 s on a busy machine.
PROBE_BOUND_S = 0.6


def make_probing(url: str, policy: str, key_prefix: str, cooldown_s: float = 0.2) -> Limiter:
    """A `fixed_window` limiter, so that what Redis counted can be read back from its hash."""
    return Limiter(
        "3/day",
        "fixed_window",
        url,
        key_prefix=key_prefix,
        timeout_ms=PROBE_TIMEOUT_MS,
        connect_timeout_ms=PROBE_CONNECT_TIMEOUT_MS,
        on_backend_error=policy,
        breaker_failures=2,
        breaker_cooldown_ms=int(cooldown_s * 1000),
    )


def allowed_first(decisions: list[Decision]) -> list[Decision]:
    """Decisions made concurrently in no set order, put in the order `assert_policy` expects."""
    return sorted(decisions, key=lambda decision: not decision.allowed)


@pytest.mark.parametrize("policy", POLICIES)
def test_no_call_waits_past_the_timeout_through_breaker_cooldowns_and_probes(
    policy: str, fresh_redis: RedisServer
) -> None:
    prefix = f"p-{uuid.uuid4().hex[:12]}:"
    limiter = make_probing(fresh_redis.url, policy, prefix)
    assert limiter.allow("before"), "connected once: from now on no call may wait for connect_timeout_ms"
    fresh_redis.pause()
    try:
        # Two cycles of cooldown, probe and a connection attempt that runs into connect_timeout_ms.
        outcomes = timed_for(2.5, lambda: limiter.hit("during"))
        ping_s = timed(limiter._ping)[1]
        reset_s = timed(lambda: limiter.reset("during"))[1]
        stats = limiter.stats()
    finally:
        fresh_redis.resume()
    slowest = max(elapsed for _, elapsed in outcomes)
    assert slowest < PROBE_BOUND_S, f"a call waited {slowest:.2f} s with timeout_ms={PROBE_TIMEOUT_MS}"
    assert ping_s < PROBE_BOUND_S and reset_s < PROBE_BOUND_S, (ping_s, reset_s)
    assert_policy(policy, [decision for decision, _ in outcomes])
    assert stats["incidents"] == 1
    assert stats["timeouts"] >= 3, "the breaker opened, then at least one probe waited for Redis"
    assert stats["fallbacks"] == len(outcomes)

    wait_until_redis_answers(limiter, "after-stall")
    fallbacks = limiter.stats()["fallbacks"]
    assert [limiter.allow("after") for _ in range(5)] == [True, True, True, False, False]
    assert limiter.stats()["fallbacks"] == fallbacks, "Redis decided every one"
    key = f"{prefix}fixed_window:{{after}}:3:86400000000"
    assert fresh_redis.command("HGET", key, "c") == "3", "and counted exactly the three it admitted"
    assert limiter.stats()["breaker_open"] == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_the_connection_a_probe_started_serves_the_next_request(policy: str, fresh_redis: RedisServer) -> None:
    cooldown_s = 0.5
    limiter = make_probing(fresh_redis.url, policy, f"p-{uuid.uuid4().hex[:12]}:", cooldown_s=cooldown_s)
    assert limiter.allow("before")
    fresh_redis.pause()
    try:
        opening = [limiter.hit("during") for _ in range(2)]
        assert limiter.stats()["breaker_open"] == 1
        time.sleep(cooldown_s + 0.05)

        async def flood() -> tuple[list[Decision], float]:
            started = time.monotonic()
            decisions = await asyncio.gather(*(limiter.hit_async("during") for _ in range(50)))
            return list(decisions), time.monotonic() - started

        # One of these probes and waits for the timeout; the others fall back at once, none waits on the connection.
        decisions, elapsed = asyncio.run(flood())
    finally:
        fresh_redis.resume()
    assert elapsed < PROBE_BOUND_S, f"50 concurrent calls took {elapsed:.2f} s with timeout_ms={PROBE_TIMEOUT_MS}"
    assert_policy(policy, opening + allowed_first(decisions))
    assert limiter.stats()["timeouts"] == 3, "two timeouts opened the breaker, one probe waited"
    # Redis answers the connection the probe started (it has until connect_timeout_ms); well within the
    # cooldown a failed probe would have started, the next request goes to Redis on that connection.
    time.sleep(0.25)
    fallbacks = limiter.stats()["fallbacks"]
    connections = int(fresh_redis.info("stats")["total_connections_received"])
    after = limiter.hit("after")
    assert limiter.stats()["fallbacks"] == fallbacks, "no second fallback once Redis answers"
    # The one new connection is the one INFO opens: the limiter connected no more.
    assert int(fresh_redis.info("stats")["total_connections_received"]) == connections + 1
    assert after.allowed and after.remaining == 2
    assert limiter.stats()["breaker_open"] == 0


def test_a_concurrency_limiter_waits_no_longer_than_the_timeout_either(fresh_redis: RedisServer) -> None:
    limiter = ConcurrencyLimiter(
        2,
        fresh_redis.url,
        key_prefix=f"p-{uuid.uuid4().hex[:12]}:",
        timeout_ms=PROBE_TIMEOUT_MS,
        connect_timeout_ms=PROBE_CONNECT_TIMEOUT_MS,
        on_backend_error="deny",
        breaker_failures=2,
        breaker_cooldown_ms=200,
    )
    assert limiter.acquire("k").allowed
    fresh_redis.pause()
    try:
        outcomes = timed_for(1.5, lambda: limiter.acquire("k"))
    finally:
        fresh_redis.resume()
    slowest = max(elapsed for _, elapsed in outcomes)
    assert slowest < PROBE_BOUND_S, f"an acquire waited {slowest:.2f} s with timeout_ms={PROBE_TIMEOUT_MS}"
    assert not any(decision.allowed for decision, _ in outcomes)
    assert limiter.stats()["timeouts"] >= 3
    deadline = time.monotonic() + 5
    while not limiter.acquire("k2").allowed:
        assert time.monotonic() < deadline, f"Redis did not come back: {limiter.stats()}"
        time.sleep(0.02)


def test_an_acquisition_that_never_reached_redis_leaves_nothing_there(fresh_redis: RedisServer) -> None:
    # Only an acquisition Redis may have run is cancelled: one made while no connection could be made (the
    # probes after each cooldown, to a server that is down) never left, and must leave no tombstone lease in
    # Redis once it is back.
    prefix = f"p-{uuid.uuid4().hex[:12]}:"
    limiter = ConcurrencyLimiter(
        2,
        fresh_redis.url,
        key_prefix=prefix,
        timeout_ms=400,  # longer than a refused connection takes to fail (one retry after up to 100 ms)
        connect_timeout_ms=300,
        on_backend_error="deny",
        breaker_failures=1,
        breaker_cooldown_ms=50,
        lease_ms=30_000,
    )
    assert limiter.acquire("k").allowed
    limiter.release("k")
    fresh_redis.kill()
    decisions = []
    for _ in range(5):
        time.sleep(0.1)  # past the cooldown: each acquisition probes, on a connection of its own
        decisions.append(limiter.acquire("k"))
    assert not any(decision.allowed for decision in decisions)
    assert limiter.stats()["backend_errors"] == 5
    fresh_redis.start()
    assert wait_for_acquire(limiter, "other"), "a request probes and closes the breaker: cancels may go out"
    time.sleep(1.5)  # longer than a cancel task takes to retry (50 ms, doubling up to 1 s)
    # The first one went out on the connection Redis dropped: the only one that may be cancelled.
    tombstones = fresh_redis.command("HGETALL", f"{prefix}concurrency:{{k}}:2:costs")
    assert len(tombstones) <= 2, f"leases Redis never saw: {tombstones}"
    assert limiter.acquire("k").allowed and limiter.acquire("k").allowed


def wait_for_acquire(limiter: ConcurrencyLimiter, key: str) -> bool:
    deadline = time.monotonic() + 5
    while not limiter.acquire(key).allowed:
        assert time.monotonic() < deadline, f"Redis did not come back: {limiter.stats()}"
        time.sleep(0.02)
    return True
