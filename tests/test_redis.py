"""The Redis store against real redis-server processes: server time, one EVALSHA per decision, key expiry,
exactness across processes, a free event loop, the redis-py client of the compat classes, the deny cache.

The algorithm suite itself runs on Redis and on a cluster through ``make_limiter`` in test_limiter.py."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from ferrolimit import (
    ConcurrencyLimiter,
    CostExceedsLimitError,
    Decision,
    FakeClock,
    Lease,
    Limiter,
    Quota,
    TokenBucketLimiter,
)
from ferrolimit._core import decision_from
from tests.conftest import TIME_ALGORITHMS
from tests.redis_server import RedisCluster, RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


# Commands the scripts run inside Redis; INFO commandstats counts them too.
INSIDE_SCRIPTS = {"time", "get", "set", "del", "hmget", "hset", "pexpire", "llen", "lindex", "ltrim", "rpush"}


def client_commands(server: RedisServer) -> dict[str, int]:
    """Commands clients sent since the last CONFIG RESETSTAT (the test's own INFO and RESETSTAT aside)."""
    calls = server.command_calls()
    return {name: count for name, count in calls.items() if name not in INSIDE_SCRIPTS | {"info", "config|resetstat"}}


def prefix() -> str:
    return f"r-{uuid.uuid4().hex[:12]}:"


@pytest.mark.parametrize("algorithm", TIME_ALGORITHMS)
def test_decisions_run_on_redis_server_time(algorithm: str, redis_server: RedisServer) -> None:
    limiter = Limiter("10/min", algorithm, redis_server.url, key_prefix=prefix())
    assert limiter.is_remote and not Limiter("10/min").is_remote
    decisions = [limiter.hit("k") for _ in range(11)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    denied = decisions[-1]
    # The sliding counter's wait runs past the current window: 10 hits made e s into a window free a slot once
    # the next window is 6 s old (the previous 10 then weigh 9), i.e. after (60 - e) + 6 s.
    longest_wait = 66 if algorithm == "sliding_window_counter" else 60
    assert 0 < denied.retry_after <= longest_wait and 0 < denied.reset_after <= 120
    server_now = int(redis_server.command("TIME")[0])
    assert abs(denied.reset_at - denied.reset_after - server_now) < 2, "times are on the server's clock"
    stats = limiter.stats()
    assert (stats["allowed"], stats["denied"], stats["backend_errors"], stats["fallbacks"]) == (10, 1, 0, 0)


def test_time_moves_on_the_server_without_a_fake_clock(redis_server: RedisServer) -> None:
    limiter = Limiter(Quota.per(2, 0.2), "sliding_window_log", redis_server.url, key_prefix=prefix())
    assert limiter.allow("k") and limiter.allow("k")
    denied = limiter.hit("k")
    assert not denied.allowed and 0 < denied.retry_after <= 0.2
    time.sleep(denied.retry_after + 0.01)
    assert limiter.allow("k")


def test_one_evalsha_per_decision_whatever_the_number_of_limits(redis_server: RedisServer) -> None:
    limiter = Limiter("10/s;1000/day", "gcra", redis_server.url, key_prefix=prefix())
    limits: list[tuple[str, str | Quota | None]] = [
        ("ip:192.0.2.1", "5/min;50/hour"),
        ("user:7", None),
        ("global", "100/s"),
    ]
    limiter.hit_many(limits)  # loads the script (NOSCRIPT, SCRIPT LOAD) outside the count
    limiter.peek("warm")
    redis_server.command("CONFIG", "RESETSTAT")
    for _ in range(20):
        limiter.hit_many(limits)
    for _ in range(5):
        limiter.hit("ip:192.0.2.1")
        limiter.peek("user:7")
        limiter.test("user:7")
    assert client_commands(redis_server) == {"evalsha": 35}, "six rates over three keys, still one round trip"
    assert redis_server.command_calls()["time"] == 35, "each decision read the server's clock once"


def test_every_key_expires_once_idle(redis_server: RedisServer) -> None:
    for algorithm in TIME_ALGORITHMS:
        key_prefix = prefix()
        limiter = Limiter("3/min;100/day", algorithm, redis_server.url, key_prefix=key_prefix)
        limiter.hit("user:1", cost=2)
        keys = sorted(redis_server.command("KEYS", key_prefix + "*"))
        assert keys == [
            f"{key_prefix}{algorithm}:{{user:1}}:100:86400000000",
            f"{key_prefix}{algorithm}:{{user:1}}:3:60000000",
        ]
        for key in keys:
            ttl_ms = redis_server.command("PTTL", key)
            assert 0 < ttl_ms <= 2 * 86_400_000, (algorithm, key, ttl_ms)
        limiter.reset("user:1")
        assert redis_server.command("KEYS", key_prefix + "*") == []
        assert limiter.peek("user:1").remaining == 3


def test_scripts_come_back_after_script_flush(redis_server: RedisServer) -> None:
    limiter = Limiter("5/min", "token_bucket", redis_server.url, key_prefix=prefix())
    assert limiter.hit("k").remaining == 4
    redis_server.command("SCRIPT", "FLUSH")
    assert limiter.hit("k").remaining == 3
    assert limiter.stats()["backend_errors"] == 0


def test_keys_from_clients_cannot_grow_redis_keys(redis_server: RedisServer) -> None:
    key_prefix = prefix()
    limiter = Limiter("5/min", "gcra", redis_server.url, key_prefix=key_prefix)
    huge = "x" * 1_000_000
    assert limiter.hit(huge).remaining == 4
    assert limiter.hit(huge).remaining == 3
    for odd in ["", "{", "}", "{}", "a}b{c", "\x00\n", "ключ", "*"]:
        assert limiter.hit(odd).remaining == 4, odd
    assert max(len(key) for key in redis_server.command("KEYS", key_prefix + "*")) < 100


WORKER = """
import sys
from ferrolimit import Limiter
url, key_prefix, algorithm, tries = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
limiter = Limiter("1000/hour", algorithm, url, key_prefix=key_prefix, timeout_ms=5000)
print(sum(limiter.allow("hot") for _ in range(tries)), limiter.stats()["fallbacks"])
"""


@pytest.mark.parametrize("algorithm", ["gcra", "sliding_window_log"])
def test_four_processes_share_one_key_exactly(algorithm: str, redis_server: RedisServer) -> None:
    key_prefix = prefix()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_server.url, key_prefix, algorithm, "400"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [worker.communicate(timeout=60)[0].split() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert [fallbacks for _, fallbacks in results] == ["0"] * 4
    assert sum(int(allowed) for allowed, _ in results) == 1000, results


def test_the_event_loop_runs_while_redis_is_slow(redis_server: RedisServer) -> None:
    limiter = Limiter("100000/min", "gcra", redis_server.url, key_prefix=prefix(), timeout_ms=5_000)
    limiter.hit("warm")

    async def main() -> tuple[int, list[bool], float]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        redis_server.command("CLIENT", "PAUSE", "400", "ALL")
        started = time.monotonic()
        ticks = 0
        results = await asyncio.gather(*(limiter.allow_async(f"k{index % 50}") for index in range(1000)))
        elapsed = time.monotonic() - started
        stop.set()
        await ticking
        return ticks, results, elapsed

    ticks, results, elapsed = asyncio.run(main())
    assert elapsed >= 0.3, "Redis was paused"
    assert all(results) and len(results) == 1000
    assert ticks >= 10, f"the ticker ticked {ticks} times in {elapsed:.2f} s"
    assert limiter.stats()["fallbacks"] == 0


def test_async_methods_on_redis_and_in_memory(redis_server: RedisServer) -> None:
    async def main(limiter: Limiter) -> None:
        first = await limiter.hit_async("k", cost=2)
        assert first.allowed and first.remaining == 3
        assert (await limiter.peek_async("k")).remaining == 3
        assert (await limiter.test_async("k", cost=3)).allowed
        assert await limiter.allow_async("k", 3)
        assert not await limiter.allow_async("k")
        many = await limiter.hit_many_async([("a", "1/min"), ("b", None)])
        assert many.allowed and many.limit == 1
        await limiter.reset_async("k")
        assert (await limiter.peek_async("k")).remaining == 5
        with pytest.raises(ValueError, match="cost must be a positive whole number"):
            await limiter.hit_async("k", cost=0)

    asyncio.run(main(Limiter("5/min", "token_bucket", redis_server.url, key_prefix=prefix())))
    asyncio.run(main(Limiter("5/min", "token_bucket", clock=FakeClock())))


def test_a_unix_socket_url(redis_server: RedisServer) -> None:
    assert redis_server.unix_socket is not None
    limiter = Limiter("2/min", "fixed_window", f"redis+unix://{redis_server.unix_socket}?db=0", key_prefix=prefix())
    assert [limiter.allow("k") for _ in range(3)] == [True, True, False]
    assert limiter.stats()["backend_errors"] == 0


@pytest.mark.parametrize(
    ("database", "message"),
    [
        ("/-1", 'names the database "-1", but a database is a whole number from 0'),
        ("/abc", 'names the database "abc"'),
        ("?db=-2", 'names the database "-2"'),
        ("/?db=x", 'names the database "x"'),
        ("/1?db=2", "names two databases, 1 and 2"),
    ],
)
def test_database_numbers_are_checked_when_the_limiter_is_made(database: str, message: str) -> None:
    url = f"redis://127.0.0.1:1{database}"  # nothing is asked of it: the URL is refused first
    with pytest.raises(ValueError, match=message):
        Limiter("5/min", "gcra", url)
    with pytest.raises(ValueError, match=message):
        ConcurrencyLimiter(2, url)
    with pytest.raises(ValueError, match="a database other than 0, which a Redis Cluster does not have"):
        Limiter("5/min", "gcra", "redis+cluster://127.0.0.1:1,127.0.0.1:2/3")


@pytest.mark.parametrize("key_prefix", ["{}", "app:{}:", "a{}{b}:"])
def test_a_key_prefix_with_an_empty_hash_tag_is_refused_on_a_cluster(key_prefix: str) -> None:
    # Redis Cluster reads "{}" as no tag and hashes whole keys: a decision's keys would land in different slots.
    url = "redis+cluster://127.0.0.1:1,127.0.0.1:2"  # nothing is asked of it: the prefix is refused first
    message = "an empty hash tag"
    with pytest.raises(ValueError, match=message):
        Limiter("5/min", "gcra", url, key_prefix=key_prefix)
    with pytest.raises(ValueError, match=message):
        ConcurrencyLimiter(2, url, key_prefix=key_prefix)
    for fine in ("{app}:", "app:", "a{b:", "}{x}"):
        Limiter("5/min", "gcra", url, key_prefix=fine)
    Limiter("5/min", "gcra", "redis://127.0.0.1:1", key_prefix=key_prefix)  # one node: no slots to split


def test_the_database_is_the_urls_path_or_query_and_the_scheme_any_case(redis_server: RedisServer) -> None:
    redis = pytest.importorskip("redis")
    key_prefix = prefix()
    port = redis_server.port
    for url, database in [
        (f"redis://127.0.0.1:{port}?db=2", 2),
        (f"REDIS://127.0.0.1:{port}/3", 3),
        (f"Redis://127.0.0.1:{port}/?db=4", 4),
        (f"redis://127.0.0.1:{port}/5?db=5", 5),
    ]:
        limiter = Limiter("5/min", "gcra", url, key_prefix=key_prefix)
        assert limiter.hit(f"k{database}").remaining == 4 and limiter.stats()["backend_errors"] == 0, url
        keys = redis.Redis(port=port, db=database).keys(f"{key_prefix}*")
        assert keys == [f"{key_prefix}gcra:{{k{database}}}:5:60000000".encode()], url
    assert redis.Redis(port=port, db=0).keys(f"{key_prefix}*") == []
    assert ConcurrencyLimiter(2, "MEMORY://").acquire("k").allowed


def test_a_database_the_server_lacks_is_logged_and_decided_by_the_policy(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = Limiter("5/min", "gcra", f"redis://127.0.0.1:{redis_server.port}/99", on_backend_error="deny")
    with caplog.at_level("WARNING", logger="ferrolimit"):
        assert not limiter.hit("k").allowed
    assert limiter.stats()["backend_errors"] == 1
    assert any("DB index is out of range" in record.getMessage() for record in caplog.records), caplog.records


def test_the_deny_cache_keeps_a_blocked_flood_off_redis(redis_server: RedisServer) -> None:
    limiter = Limiter("3/min", "gcra", redis_server.url, key_prefix=prefix(), deny_cache_size=1_000)
    assert [limiter.allow("flood") for _ in range(3)] == [True] * 3
    redis_server.command("CONFIG", "RESETSTAT")
    decisions = [limiter.hit("flood") for _ in range(500)]
    assert not any(decision.allowed for decision in decisions)
    assert all(0 < decision.retry_after <= 20 for decision in decisions)
    assert client_commands(redis_server) == {"evalsha": 1}, "only the first denial reached Redis"
    assert limiter.stats()["deny_cache_hits"] == 499 and limiter.stats()["denied"] == 500
    assert limiter.allow("other"), "other keys are not affected"


def test_compat_classes_take_a_redis_py_client(redis_server: RedisServer) -> None:
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=0)
    key = f"user-{uuid.uuid4().hex}"
    worker_a = TokenBucketLimiter(3, 1.0, "user", "redis", redis_client=client)
    worker_b = TokenBucketLimiter(3, 1.0, "user", "redis", redis_client=client)
    assert worker_a.is_remote
    redis_server.command("CONFIG", "RESETSTAT")
    assert [worker_a.allow_request(key), worker_b.allow_request(key), worker_a.allow_request(key)] == [True] * 3
    assert not worker_b.allow_request(key), "two workers share one bucket"
    assert 0 < worker_a.get_wait_time(key) <= 1.0
    assert client_commands(redis_server) == {"evalsha": 5}, "ferrolimit's own client; redis-py sent nothing"
    worker_b.reset(key)
    assert worker_a.allow_request(key)


def test_cluster_keeps_a_keys_rates_in_one_slot_and_spans_slots_safely(redis_cluster: RedisCluster) -> None:
    limiter = Limiter("2/min;5/hour", "gcra", redis_cluster.url, key_prefix=prefix())
    users = [f"user:{index}" for index in range(20)]
    for user in users:
        assert limiter.hit(user).allowed
    # ip and user keys land on different nodes: checked everywhere, charged only if all pass.
    limits: list[tuple[str, str | Quota | None]] = [("ip:1", "1/min"), ("user:a", None), ("user:b", None)]
    assert limiter.hit_many(limits).allowed
    denied = limiter.hit_many(limits)
    assert not denied.allowed and denied.limit == 1
    assert limiter.hit("user:a").remaining == 0, "the denial took nothing from user:a"
    assert limiter.stats()["backend_errors"] == 0


def test_readme_redis_block_runs_against_a_server(redis_server: RedisServer) -> None:
    text = (ROOT / "README.md").read_text()
    start = text.find("```py\n# redis example")
    if start < 0:
        pytest.skip("README has no Redis example")
    block = text[start + len("```py\n") : text.index("```", start + 6)]
    exec(compile(block.replace("redis://localhost:6379/0", redis_server.url), "README.md", "exec"), {})


def test_rediss_urls_speak_tls(tls_redis: RedisServer) -> None:
    # The self-signed test certificate: "#insecure" skips verification, as redis-py's ssl_cert_reqs="none".
    url = f"rediss://127.0.0.1:{tls_redis.port}/0#insecure"
    limiter = Limiter("2/min", "gcra", url, key_prefix=prefix(), on_backend_error="deny")
    assert [limiter.allow("k") for _ in range(3)] == [True, True, False]
    assert limiter.stats()["backend_errors"] == 0
    strict = Limiter("2/min", "gcra", f"rediss://127.0.0.1:{tls_redis.port}/0", key_prefix=prefix())
    assert strict.allow("k") and strict.stats()["backend_errors"] == 1, "an unknown certificate is refused"


def test_thousands_of_concurrent_awaits_decide_exactly(redis_server: RedisServer) -> None:
    limiter = Limiter("1000/hour", "gcra", redis_server.url, key_prefix=prefix(), timeout_ms=5_000)
    many = Limiter("1000/hour", "sliding_window_log", redis_server.url, key_prefix=prefix(), timeout_ms=5_000)

    async def main() -> tuple[list[bool], list[Decision], list[Decision]]:
        allowed = await asyncio.gather(*(limiter.allow_async("hot") for _ in range(2_000)))
        decisions = await asyncio.gather(*(limiter.hit_async(f"k{index}") for index in range(300)))
        combined = await asyncio.gather(*(many.hit_many_async([("a", None), ("b", "10/min")]) for _ in range(25)))
        return allowed, decisions, combined

    allowed, decisions, combined = asyncio.run(main())
    assert allowed.count(True) == 1_000 and allowed.count(False) == 1_000
    assert all(type(decision) is Decision and decision.remaining == 999 for decision in decisions)
    assert [decision.allowed for decision in combined].count(True) == 10
    assert sorted(decision.remaining for decision in combined if decision.allowed) == list(range(10))
    assert limiter.stats()["fallbacks"] == 0 and many.stats()["fallbacks"] == 0


def test_a_cancelled_await_does_not_disturb_the_next_ones(redis_server: RedisServer) -> None:
    limiter = Limiter("100/hour", "fixed_window", redis_server.url, key_prefix=prefix(), timeout_ms=5_000)

    async def main() -> tuple[list[bool], Decision]:
        redis_server.command("CLIENT", "PAUSE", "150", "WRITE")
        doomed = [asyncio.ensure_future(limiter.hit_async("k")) for _ in range(5)]
        await asyncio.sleep(0.01)
        for task in doomed:
            task.cancel()
        await asyncio.gather(*doomed, return_exceptions=True)
        cancelled = [task.cancelled() for task in doomed]
        with pytest.raises(asyncio.CancelledError):
            await doomed[0]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(limiter.hit_async("k"), 0.01)
        later = await asyncio.gather(*(limiter.allow_async("k") for _ in range(10)))
        return [*cancelled, *later], await limiter.peek_async("k")

    results, peeked = asyncio.run(main())
    assert all(results)
    # The cancelled calls still ran on Redis (their results were dropped): 5 + 1 + 10 hits.
    assert peeked.remaining == 100 - 16


def test_the_async_methods_work_on_one_event_loop_after_another(redis_server: RedisServer) -> None:
    limiter = Limiter("10/min", "token_bucket", redis_server.url, key_prefix=prefix())

    async def main() -> list[int]:
        decisions = await asyncio.gather(limiter.hit_async("k"), limiter.hit_async("k"))
        assert await limiter._ping_async()
        with pytest.raises(CostExceedsLimitError):
            await limiter.hit_async("k", cost=11)
        return sorted(decision.remaining for decision in decisions)

    assert asyncio.run(main()) == [8, 9]
    assert asyncio.run(main()) == [6, 7]
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == [4, 5]
        assert asyncio.run(main()) == [2, 3], "another loop while the first is still open"
        assert loop.run_until_complete(main()) == [0, 1]
    finally:
        loop.close()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files through /proc")
def test_event_loops_that_are_gone_leave_no_open_files(redis_server: RedisServer) -> None:
    limiter = Limiter("1000/min", "gcra", redis_server.url, key_prefix=prefix())

    async def main() -> bool:
        return await limiter.allow_async("k")

    assert asyncio.run(main())
    gc.collect()
    before = len(list(Path("/proc/self/fd").iterdir()))
    for _ in range(30):
        assert asyncio.run(main())
    gc.collect()
    assert len(list(Path("/proc/self/fd").iterdir())) <= before + 2


def _in_a_forked_child(work: Callable[[], object], seconds: float = 20) -> object:
    """`work()` run in a child forked from this process, its result sent back as JSON; fails if the child
    does not answer within `seconds` (it is killed then)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.write(writer, json.dumps(work()).encode())
        except BaseException as error:  # anything goes back to the parent, as text
            os.write(writer, json.dumps(f"raised {error!r}").encode())
        finally:
            os._exit(0)
    os.close(writer)
    try:
        ready, _, _ = select.select([reader], [], [], seconds)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the forked child did not answer within {seconds} s")
        with os.fdopen(reader, "rb") as pipe:
            return json.loads(pipe.read())
    finally:
        os.waitpid(pid, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_process_forked_after_using_redis_decides_on_its_own_connection(redis_server: RedisServer) -> None:
    """gunicorn --preload, Celery's prefork pool, multiprocessing's fork: the child inherits a runtime with no
    threads and a connection that is the parent's. It must decide all the same, and leave the parent's
    connection and leases alone."""
    limiter = Limiter("10/min", "gcra", redis_server.url, key_prefix=prefix())
    slots = ConcurrencyLimiter(2, redis_server.url, key_prefix=prefix())
    assert limiter.hit("k").remaining == 9
    assert asyncio.run(limiter.peek_async("k")).remaining == 9
    held = slots.acquire_lease("job")
    assert held.allowed

    def child() -> object:
        nonlocal held
        del held  # the child's copy of the parent's lease: collecting it must not free the parent's slot
        gc.collect()

        async def main() -> int:
            return (await limiter.hit_async("k")).remaining

        kept.append(slots.acquire_lease("job"))  # held until the child exits: it leaves without releasing it
        return [limiter.hit("k").remaining, asyncio.run(main()), kept[0].allowed]

    kept: list[Lease] = []
    assert _in_a_forked_child(child) == [8, 7, True]
    assert limiter.hit("k").remaining == 6, "the parent's connection still works"
    assert not slots.acquire_lease("job").allowed, "the parent's lease and the child's hold both slots"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_workers_forked_from_one_limiter_never_free_each_others_leases(redis_server: RedisServer) -> None:
    """gunicorn --preload: the limiter is made before the fork, and every worker takes its first lease after
    it. Each names its leases apart, so one worker's release never frees another's slot."""
    slots = ConcurrencyLimiter(2, redis_server.url, key_prefix=prefix())

    def holds() -> object:
        kept.append(slots.acquire_lease("job"))  # still held when this worker exits
        return kept[0].allowed

    def takes_and_gives_back() -> object:
        lease = slots.acquire_lease("job")
        lease.release()
        return [lease.allowed, slots.peek("job").remaining]

    kept: list[Lease] = []
    assert _in_a_forked_child(holds) is True
    assert _in_a_forked_child(takes_and_gives_back) == [True, 1], "the first worker's lease still holds its slot"
    assert slots.peek("job").remaining == 1


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_the_async_methods_return_coroutines(store: str, redis_server: RedisServer) -> None:
    """As an `async def` method's would be: asyncio.run and create_task take them, and one made outside any
    event loop runs on the loop that awaits it."""
    url = redis_server.url if store == "redis" else "memory://"
    limiter = Limiter("10/min", "gcra", url, key_prefix=prefix())
    slots = ConcurrencyLimiter(2, url, key_prefix=prefix())
    made_outside_a_loop = limiter.hit_async("k")  # in memory it is decided already; on Redis when awaited
    assert asyncio.run(limiter.hit_async("k")).allowed

    async def main() -> list[bool]:
        task = asyncio.create_task(limiter.hit_async("k"))
        peeked = asyncio.create_task(limiter.peek_async("k"))
        lease = asyncio.create_task(slots.acquire_lease_async("job"))
        await asyncio.wait([peeked, lease])
        held = lease.result().allowed
        await lease.result().release_async()
        return [(await task).allowed, peeked.result().limit == 10, held, (await made_outside_a_loop).allowed]

    assert asyncio.run(main()) == [True] * 4
    assert limiter.peek("k").remaining == 7, "three hits, each counted once"
    assert slots.peek("job").remaining == 2


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_an_async_call_never_awaited_warns_as_a_coroutine_does(store: str, redis_server: RedisServer) -> None:
    """A forgotten `await` is the usual async mistake: a collected coroutine warns, and so do these. On Redis a
    call made outside any event loop never ran at all: without the warning it would pass silently."""
    url = redis_server.url if store == "redis" else "memory://"
    limiter = Limiter("10/min", "gcra", url, key_prefix=prefix())
    slots = ConcurrencyLimiter(2, url, key_prefix=prefix())
    expected = "never ran" if store == "redis" else "its result was dropped"
    for forgotten in (limiter.hit_async, slots.acquire_async, limiter.peek_async):
        with pytest.warns(RuntimeWarning, match=f"ferrolimit: an \\*_async call was never awaited: .*{expected}"):
            forgotten("k")  # type: ignore[unused-coroutine]  # the mistake under test
            gc.collect()

    async def main() -> None:
        with pytest.warns(RuntimeWarning, match="its result was dropped"):
            limiter.hit_async("in a loop")  # type: ignore[unused-coroutine]  # started at once
            gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert (await limiter.hit_async("k")).allowed
            task = asyncio.create_task(limiter.hit_async("k"))
            await task
            limiter.hit_async("closed").close()  # as coroutine.close(): handled, no warning
            gc.collect()

    asyncio.run(main())
    assert limiter.peek("k").remaining == (8 if store == "redis" else 7), "memory decided the forgotten call too"


@pytest.mark.parametrize("policy", ["allow", "deny", "memory"])
def test_a_fallback_decision_names_the_limit_a_request_leaves_least_of(policy: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}"  # nobody listens
    limiter = Limiter("10/min", "gcra", url, on_backend_error=policy, connect_timeout_ms=100, breaker_failures=1)
    request: list[tuple[str, str | Quota | None] | tuple[str, str | Quota | None, int]] = [
        ("a", "10/min"),
        ("b", "3/min", 2),
        ("c", "3/min", 2),
        ("d", "10/min", 9),
    ]
    decision = limiter.hit_many(request)
    assert (decision.allowed, decision.remaining) == (policy != "deny", 0 if policy == "deny" else 1)
    # allow and deny: of b, c and d (1 left each, the same period) the first; memory: d, whose reset is latest.
    assert decision.index == (3 if policy == "memory" else 1)
    assert limiter.hit("k").index == 0
    assert limiter.stats()["fallbacks"] == 2


def test_a_custom_decision_names_its_limit() -> None:
    def refusal(**index: int) -> Decision:
        return decision_from(
            allowed=False, limit=3, remaining=0, reset_after=20, retry_after=20, window=60, now=1_700_000_000, **index
        )

    assert refusal().index == 0
    assert refusal(index=4).index == 4
