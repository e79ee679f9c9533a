from __future__ import annotations

import pytest

from ferrolimit import FakeClock

# Real redis-server processes and the memory/redis/cluster `backend`, `storage` and `make_limiter` fixtures.
pytest_plugins = ["tests.redis_server"]

TIME_ALGORITHMS = [
    "gcra",
    "token_bucket",
    "leaky_bucket",
    "fixed_window",
    "sliding_window_counter",
    "sliding_window_log",
]


@pytest.fixture
def clock() -> FakeClock:
    # On a minute boundary, so fixed windows start with the test.
    return FakeClock(start=1_700_000_040.0)
