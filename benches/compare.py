"""ferrolimit side by side with peer libraries, in one process, one run. `make bench` runs it.

Prints ns per decision from Python (best of several rounds) for one hot key and for 100,000 keys in
round-robin, next to the floor (an empty native call taking one str), and the resident memory of
1,000,000 live keys, each measured in a fresh subprocess.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import Callable

ROUNDS = 5
HOT_CALLS = 200_000
KEY_COUNT = 100_000
RATE = "1000000/s"  # never denies in the benchmark: every call does the full allowed path

ALGORITHMS = [
    "gcra",
    "token_bucket",
    "leaky_bucket",
    "fixed_window",
    "sliding_window_counter",
    "sliding_window_log",
]


def best_ns(call: Callable[[str], object], keys: list[str], calls: int) -> float:
    """Best-of-ROUNDS nanoseconds per call of `call(key)` over `calls` keys taken from `keys` in turn."""
    repeated = (keys * (calls // len(keys) + 1))[:calls]
    best = float("inf")
    for _ in range(ROUNDS):
        gc.disable()
        start = time.perf_counter_ns()
        for key in repeated:
            call(key)
        elapsed = time.perf_counter_ns() - start
        gc.enable()
        best = min(best, elapsed / calls)
    return best


def measure(name: str, make: Callable[[], Callable[[str], object]]) -> tuple[str, float, float]:
    hot = best_ns(make(), ["203.0.113.7"], HOT_CALLS)
    keys = [f"user:{index}" for index in range(KEY_COUNT)]
    spread_call = make()
    for key in keys:  # every key exists before timing starts
        spread_call(key)
    spread = best_ns(spread_call, keys, 2 * KEY_COUNT)
    return name, hot, spread


def rows() -> list[tuple[str, float, float]]:
    from ferrolimit import Limiter, Quota, _core

    # The timestamp log takes at most 100,000 per period: that many per 10 ms, more per second than RATE.
    rates: dict[str, str | Quota] = {algorithm: RATE for algorithm in ALGORITHMS}
    rates["sliding_window_log"] = Quota.per(100_000, 0.01)
    results = [measure("floor: empty native call(str)", lambda: _core._call_floor)]
    for algorithm in ALGORITHMS:
        results.append(measure(f"ferrolimit {algorithm} hit()", lambda a=algorithm: Limiter(rates[a], a).hit))
        results.append(measure(f"ferrolimit {algorithm} allow()", lambda a=algorithm: Limiter(rates[a], a).allow))
    from ferrolimit import TokenBucketLimiter

    results.append(
        measure(
            "ferrolimit TokenBucketLimiter.allow_request()",
            lambda: TokenBucketLimiter(1_000_000, 1_000_000.0).allow_request,
        )
    )
    try:
        from limits import parse, storage, strategies

        def limits_fixed_window() -> Callable[[str], object]:
            strategy = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
            item = parse("1000000/second")
            return lambda key: strategy.hit(item, key)

        results.append(measure("limits FixedWindowRateLimiter.hit()", limits_fixed_window))
    except ImportError:
        print("(limits is not installed: pip install limits)")
    try:
        import fastapi_advanced_rate_limiter as advanced

        results.append(
            measure(
                "fastapi-advanced TokenBucketLimiter.allow_request()",
                lambda: advanced.TokenBucketLimiter(1_000_000, 1_000_000.0).allow_request,
            )
        )
    except ImportError:
        print("(fastapi-advanced-rate-limiter is not installed, or redis, which it imports)")
    return results


MEMORY_PROBE = """
import gc, resource, sys
def rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20
kind = sys.argv[1]
if kind == "ferrolimit":
    from ferrolimit import Limiter
    limiter = Limiter("5/hour", sys.argv[2], max_keys=2_000_000)
    call = limiter.allow
else:
    import fastapi_advanced_rate_limiter as advanced
    call = advanced.TokenBucketLimiter(5, 5 / 3600).allow_request
gc.collect()
before = rss_mib()
for index in range(1_000_000):
    call(f"user:{index}")
gc.collect()
print(rss_mib() - before)
"""


def memory_mib(*args: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, *args], capture_output=True, text=True, check=True, timeout=300
    )
    return float(result.stdout.strip())


def main() -> None:
    print(f"Python {sys.version.split()[0]}; best of {ROUNDS} rounds; ns per call from Python\n")
    results = rows()
    width = max(len(name) for name, _, _ in results)
    print(f"{'':{width}}  {'1 hot key':>10}  {'100k keys':>10}")
    for name, hot, spread in results:
        print(f"{name:{width}}  {hot:10.0f}  {spread:10.0f}")
    by_name = {name: (hot, spread) for name, hot, spread in results}
    print()
    ours = ["ferrolimit gcra hit()", "ferrolimit token_bucket hit()"]
    for peer in ("limits FixedWindowRateLimiter.hit()", "fastapi-advanced TokenBucketLimiter.allow_request()"):
        if peer in by_name:
            for name in ours:
                hot = by_name[peer][0] / by_name[name][0]
                spread = by_name[peer][1] / by_name[name][1]
                print(f"{name} is {hot:.1f}x (hot) / {spread:.1f}x (100k keys) faster than {peer}")
    print("\nResident memory of 1,000,000 live keys (RSS growth, MiB):")
    for algorithm in ("gcra", "token_bucket", "sliding_window_counter"):
        print(f"  ferrolimit {algorithm:24} {memory_mib('ferrolimit', algorithm):8.1f}")
    try:
        import fastapi_advanced_rate_limiter  # noqa: F401

        print(f"  fastapi-advanced TokenBucketLimiter  {memory_mib('advanced'):8.1f}")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
