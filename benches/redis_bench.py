"""Redis figures, all measured in one run against a redis-server this script starts on a free port:

- sequential latency per decision (p50/p99) against a bare PING from the same client (the two alternate,
  so both see the same conditions), and
- decisions per second with 64 concurrent asyncio tasks,

for ferrolimit and for limits' async Redis storage, fastlimit's Redis backend and fastapi-limiter (its
pyrate-limiter RedisBucket), each only if it imports. Every limit is high enough that all requests pass,
so each library does its full check-and-commit. Not a test: `make bench` runs it (release build).

    python benches/redis_bench.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench_redis_server import redis_server

from ferrolimit import Limiter, Quota

TASKS = 64
Decide = Callable[[str], Awaitable[Any]]


@dataclass
class Row:
    name: str
    ping_p50_us: float
    p50_us: float
    p99_us: float
    per_second: float


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def sequential(
    ping: Callable[[], Awaitable[Any]], call: Callable[[], Awaitable[Any]], seconds: float
) -> tuple[list[float], list[float]]:
    """Latencies in µs of ``ping`` and ``call``, one after the other in turn, so that both see the same
    conditions (a busy machine slows whatever runs while it is busy; alternating shares that out)."""
    for _ in range(200):
        await ping()
        await call()
    pings, calls = [], []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        await ping()
        pinged = time.perf_counter()
        await call()
        done = time.perf_counter()
        pings.append((pinged - started) * 1e6)
        calls.append((done - pinged) * 1e6)
    return pings, calls


async def concurrent(decide: Decide, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def task(index: int) -> None:
        nonlocal done
        key = f"bench-task-{index}"
        while time.perf_counter() < deadline:
            await decide(key)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(task(index) for index in range(TASKS)))
    return done / (time.perf_counter() - started)


async def measure(name: str, ping: Callable[[], Awaitable[Any]], decide: Decide, seconds: float) -> Row:
    pings, latencies = await sequential(ping, lambda: decide("bench-seq"), seconds)
    per_second = await concurrent(decide, seconds)
    return Row(name, statistics.median(pings), statistics.median(latencies), percentile(latencies, 0.99), per_second)


# Never reached in a run. A unit per microsecond is as fine as Redis keeps GCRA exact; the timestamp log takes at
# most 100,000 per period, so its period is short instead.
NEVER_REACHED: dict[str, str | Quota] = {
    "gcra": "1000000/s",
    "fixed_window": "1000000/s",
    "sliding_window_log": Quota.per(100_000, 0.01),
}


async def ferrolimit_rows(url: str, seconds: float) -> list[Row]:
    rows = []
    for algorithm, rate in NEVER_REACHED.items():
        limiter = Limiter(rate, algorithm, url, key_prefix=f"ferrolimit-{algorithm}:")
        rows.append(await measure(f"ferrolimit {algorithm} (async)", limiter._ping_async, limiter.hit_async, seconds))
    limiter = Limiter(NEVER_REACHED["gcra"], "gcra", url, key_prefix="ferrolimit-sync:")

    async def ping_sync() -> None:
        limiter._ping()

    async def hit_sync(key: str) -> None:
        limiter.hit(key)

    pings, latencies = await sequential(ping_sync, lambda: hit_sync("bench-seq"), seconds)
    rows.append(
        Row(
            "ferrolimit gcra (sync hit)",
            statistics.median(pings),
            statistics.median(latencies),
            percentile(latencies, 0.99),
            float("nan"),
        )
    )
    return rows


async def limits_rows(url: str, seconds: float) -> list[Row]:
    import redis.asyncio
    from limits import parse
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    client = redis.asyncio.Redis.from_url(url)
    item = parse("1000000000/hour")
    rows = []
    for label, strategy in (("fixed window", FixedWindowRateLimiter), ("moving window", MovingWindowRateLimiter)):
        storage = RedisStorage("async+" + url, implementation="redispy", key_prefix=f"limits-{label}")
        limiter = strategy(storage)

        async def decide(key: str, limiter: Any = limiter) -> bool:
            allowed: bool = await limiter.hit(item, key)
            return allowed

        rows.append(await measure(f"limits {label} (async redis-py)", client.ping, decide, seconds))
    await client.aclose()
    return rows


async def fastlimit_rows(url: str, seconds: float) -> list[Row]:
    import redis.asyncio
    from fastlimit.algorithms import Algorithm
    from fastlimit.backends.redis import RedisBackend
    from fastlimit.rules import BucketConfig

    client = redis.asyncio.Redis.from_url(url)
    bucket = BucketConfig(window_sec=3600, limit=1_000_000_000)
    rows = []
    for algorithm in (Algorithm.FIXED_WINDOW, Algorithm.SLIDING_WINDOW):
        backend = RedisBackend(client, algorithm=algorithm, key_prefix=f"fastlimit-{algorithm}")

        async def decide(key: str, backend: Any = backend) -> Any:
            return await backend.check_and_increment(key, bucket, 1)

        rows.append(await measure(f"fastlimit {algorithm}", client.ping, decide, seconds))
    await client.aclose()
    return rows


async def fastapi_limiter_rows(url: str, seconds: float) -> list[Row]:
    import fastapi_limiter  # noqa: F401  (its RateLimiter dependency calls pyrate-limiter's try_acquire_async)
    import redis.asyncio
    from pyrate_limiter import Duration, Rate, RedisBucket
    from pyrate_limiter import Limiter as PyrateLimiter

    client = redis.asyncio.Redis.from_url(url)
    bucket = await RedisBucket.init([Rate(1_000_000_000, Duration.HOUR)], client, "fastapi-limiter-bench")
    limiter = PyrateLimiter(bucket)

    async def decide(key: str) -> bool:
        allowed: bool = await limiter.try_acquire_async(key, blocking=False)
        return allowed

    row = await measure("fastapi-limiter (pyrate RedisBucket)", client.ping, decide, seconds)
    await client.aclose()
    return [row]


async def main(seconds: float) -> None:
    with redis_server() as port:
        url = f"redis://127.0.0.1:{port}/0"
        rows = await ferrolimit_rows(url, seconds)
        for peer in (limits_rows, fastlimit_rows, fastapi_limiter_rows):
            try:
                rows += await peer(url, seconds)
            except ImportError as error:
                print(f"skipped {peer.__name__.removesuffix('_rows')}: {error}")
            except Exception as error:  # a peer's own failure must not hide the other figures
                print(f"{peer.__name__.removesuffix('_rows')} failed: {type(error).__name__}: {error}")
    print(f"\nRedis, one server on loopback, {TASKS} tasks for decisions/s, {seconds:.1f} s per figure")
    header = f"{'library':<40} {'PING p50':>9} {'p50 µs':>8} {'p99 µs':>8} {'p50/PING':>9} {'decisions/s':>12}"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = row.p50_us / row.ping_p50_us
        rate = "-" if row.per_second != row.per_second else f"{row.per_second:,.0f}"
        print(f"{row.name:<40} {row.ping_p50_us:>9.0f} {row.p50_us:>8.0f} {row.p99_us:>8.0f} {ratio:>9.2f} {rate:>12}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per figure")
    asyncio.run(main(parser.parse_args().seconds))
