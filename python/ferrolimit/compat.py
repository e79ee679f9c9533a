"""Drop-in classes for fastapi-advanced-rate-limiter and the token-bucket tutorial, over the native core.

Where those APIs' own code contradicts their documentation, these classes do what the documentation says:

- fastapi-advanced documents ``capacity`` requests per ``capacity / fill_rate`` seconds for every class
  (e.g. ``SlidingWindowRateLimiter(capacity=100, fill_rate=10)  # per 10 seconds``); its window classes
  actually use ``1 / fill_rate`` seconds. Here every class enforces the documented rate.
- It documents ``get_status`` and ``get_wait_time`` on every limiter; here every limiter has them, plus
  ``get_retry_after``.
- State lives in the bounded native store instead of dicts that grow forever.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar
from urllib.parse import quote

from ferrolimit._core import FakeClock, Limiter, Quota

__all__ = [
    "FixedWindowRateLimiter",
    "GCRALimiter",
    "LeakyBucketLimiter",
    "QueueLimiter",
    "RateLimiterStore",
    "SlidingWindowLogRateLimiter",
    "SlidingWindowRateLimiter",
    "TokenBucket",
    "TokenBucketLimiter",
]

_SCOPES = ("user", "ip", "global")
_BACKENDS = ("memory", "redis")


def _whole_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{what.capitalize()} must be positive")
    if value != int(value):
        raise ValueError(f"{what} must be a whole number of requests, got {value}")
    return int(value)


def _positive_rate(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{what.capitalize()} must be positive")
    return float(value)


def redis_url_of(client: Any) -> str:
    """The storage URL of a redis-py client (``redis.Redis``, ``redis.asyncio.Redis`` or
    ``redis.cluster.RedisCluster``), read from its connection settings. ferrolimit talks to that server
    with its own Rust client; the redis-py client itself is never used for commands."""
    manager = getattr(client, "nodes_manager", None)
    if manager is not None and callable(getattr(client, "get_primaries", None)):
        settings: dict[str, Any] = dict(getattr(manager, "connection_kwargs", None) or {})
        nodes = ",".join(_host_port(node.host, node.port) for node in client.get_primaries())
        ssl = settings.get("ssl") or _is_ssl(settings.get("connection_class"))
        return f"{'rediss+cluster' if ssl else 'redis+cluster'}://{_userinfo(settings)}{nodes}"
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if not isinstance(kwargs, dict):
        raise TypeError(
            "redis_client must be a redis-py client (redis.Redis, redis.asyncio.Redis or redis.cluster.RedisCluster), "
            f"not {type(client).__name__}"
        )
    db = int(kwargs.get("db") or 0)
    if kwargs.get("path"):
        query = f"db={db}"
        if kwargs.get("username"):
            query += "&user=" + quote(str(kwargs["username"]), safe="")
        if kwargs.get("password"):
            query += "&pass=" + quote(str(kwargs["password"]), safe="")
        return f"redis+unix://{kwargs['path']}?{query}"
    host = _host_port(kwargs.get("host") or "localhost", kwargs.get("port") or 6379)
    if _is_ssl(client.connection_pool.connection_class):
        insecure = "#insecure" if kwargs.get("ssl_cert_reqs") in ("none", 0) else ""
        return f"rediss://{_userinfo(kwargs)}{host}/{db}{insecure}"
    return f"redis://{_userinfo(kwargs)}{host}/{db}"


def _is_ssl(connection_class: object) -> bool:
    return "SSL" in getattr(connection_class, "__name__", "")


def _host_port(host: str, port: object) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _userinfo(kwargs: dict[str, Any]) -> str:
    user, password = kwargs.get("username"), kwargs.get("password")
    if not user and not password:
        return ""
    return quote(str(user or ""), safe="") + (":" + quote(str(password), safe="") if password else "") + "@"


class _AdvancedLimiter(Limiter):
    """fastapi-advanced-rate-limiter's constructor and methods over a native `Limiter`."""

    _algorithm: ClassVar[str]
    capacity: int
    fill_rate: float
    scope: str
    backend: str
    redis_client: Any

    def __new__(
        cls,
        capacity: float,
        fill_rate: float,
        scope: str = "user",
        backend: str = "memory",
        redis_client: Any = None,
        *,
        clock: FakeClock | None = None,
        max_keys: int = 1_000_000,
    ) -> _AdvancedLimiter:
        whole = _whole_count(capacity, "capacity")
        rate = _positive_rate(fill_rate, "fill rate")
        if scope not in _SCOPES:
            raise ValueError("Scope must be 'user', 'ip', or 'global'")
        if backend not in _BACKENDS:
            raise ValueError("Backend must be 'memory' or 'redis'")
        storage = "memory://"
        if backend == "redis":
            if redis_client is None:
                raise ValueError("redis_client is required when backend='redis'")
            storage = redis_url_of(redis_client)
        quota = Quota.per(whole, whole / rate)
        return super().__new__(cls, quota, cls._algorithm, storage, clock=clock, max_keys=max_keys)

    def __init__(
        self,
        capacity: float,
        fill_rate: float,
        scope: str = "user",
        backend: str = "memory",
        redis_client: Any = None,
        *,
        clock: FakeClock | None = None,
        max_keys: int = 1_000_000,
    ) -> None:
        self.capacity = int(capacity)
        self.fill_rate = float(fill_rate)
        self.scope = scope
        self.backend = backend
        self.redis_client = redis_client

    def _key(self, identifier: object) -> str:
        if self.scope == "global":
            return "ratelimit:global"
        if identifier is None:
            raise ValueError(f"identifier is required for '{self.scope}' scope")
        return f"ratelimit:{self.scope}:{identifier}"

    def allow_request(self, identifier: object = None) -> bool:
        """Whether a request from ``identifier`` passes now; a passing request is counted."""
        return self.allow(self._key(identifier))

    def get_wait_time(self, identifier: object = None) -> float:
        """Seconds until a request would pass (0.0 if it would pass now)."""
        return self.peek(self._key(identifier)).retry_after

    def get_retry_after(self, identifier: object = None) -> float:
        """The same as `get_wait_time`."""
        return self.get_wait_time(identifier)

    def reset(self, identifier: object = None, rate: str | Quota | None = None) -> None:
        """Forgets ``identifier``'s usage."""
        super().reset(self._key(identifier), rate)

    def get_config(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "fill_rate": self.fill_rate, "scope": self.scope, "backend": self.backend}

    def _used(self, identifier: object) -> int:
        return self.capacity - self.peek(self._key(identifier)).remaining

    def _utilization(self, used: float) -> float:
        return round(used / self.capacity * 100, 1)

    def _level(self, identifier: object) -> float:
        """The units in use now, to the hundredth, as a bucket counts them: the bucket is full again (or empty,
        for a leaky bucket) after ``reset_after`` seconds at ``fill_rate`` units a second."""
        return round(min(float(self.capacity), self.peek(self._key(identifier)).reset_after * self.fill_rate), 2)

    def get_status(self, identifier: object = None) -> dict[str, Any]:
        used = self._used(identifier)
        return {
            "count": used,
            "capacity": self.capacity,
            "available": self.capacity - used,
            "window_size": self.capacity / self.fill_rate,
        }


class TokenBucketLimiter(_AdvancedLimiter):
    """``capacity`` tokens, refilled at ``fill_rate`` tokens per second; a new bucket starts full. `get_status`
    counts the tokens to the hundredth, as they refill (``7.5``); a request takes a whole one."""

    _algorithm = "token_bucket"

    def get_status(self, identifier: object = None) -> dict[str, Any]:
        used = self._level(identifier)
        return {
            "tokens_remaining": round(self.capacity - used, 2),
            "capacity": self.capacity,
            "fill_rate": self.fill_rate,
            "utilization_pct": self._utilization(used),
        }


class GCRALimiter(_AdvancedLimiter):
    """The generic cell rate algorithm with fastapi-advanced's signature: a burst of ``capacity``, then one
    request every ``1 / fill_rate`` seconds. Same decisions as a token bucket, one timestamp per key."""

    _algorithm = "gcra"

    def get_status(self, identifier: object = None) -> dict[str, Any]:
        used = self._used(identifier)
        return {
            "remaining": self.capacity - used,
            "capacity": self.capacity,
            "fill_rate": self.fill_rate,
            "utilization_pct": self._utilization(used),
        }


class LeakyBucketLimiter(_AdvancedLimiter):
    """A bucket of ``capacity`` that leaks ``fill_rate`` requests per second; a full bucket refuses. `get_status`
    gives the water level to the hundredth, as it leaks (``2.5``)."""

    _algorithm = "leaky_bucket"

    def get_status(self, identifier: object = None) -> dict[str, Any]:
        level = self._level(identifier)
        return {
            "water_level": level,
            "capacity": self.capacity,
            "fill_rate": self.fill_rate,
            "available": round(self.capacity - level, 2),
            "utilization_pct": self._utilization(level),
        }


class FixedWindowRateLimiter(_AdvancedLimiter):
    """``capacity`` requests per window of ``capacity / fill_rate`` seconds, windows aligned to the epoch."""

    _algorithm = "fixed_window"

    def get_status(self, identifier: object = None) -> dict[str, Any]:
        status = super().get_status(identifier)
        status["window"] = int(self.now() // status["window_size"])
        return status


class SlidingWindowRateLimiter(_AdvancedLimiter):
    """About ``capacity`` requests per sliding ``capacity / fill_rate`` seconds: the current window's count
    plus the previous window's, weighted by its overlap."""

    _algorithm = "sliding_window_counter"


class SlidingWindowLogRateLimiter(_AdvancedLimiter):
    """Exactly ``capacity`` requests in any ``capacity / fill_rate`` seconds, from a log of timestamps."""

    _algorithm = "sliding_window_log"


class QueueLimiter(_AdvancedLimiter):
    """fastapi-advanced's queue limiter: exactly ``capacity`` requests per rolling ``capacity / fill_rate``
    seconds (it admits or refuses; nothing waits in a queue)."""

    _algorithm = "sliding_window_log"

    def get_current_usage(self, identifier: object = None) -> dict[str, Any]:
        used = self._used(identifier)
        return {
            "current_requests": used,
            "capacity": self.capacity,
            "available_slots": self.capacity - used,
            "fill_rate": self.fill_rate,
            "window_seconds": round(self.capacity / self.fill_rate, 2),
            "utilization_pct": self._utilization(used),
        }

    def get_status(self, identifier: object = None) -> dict[str, Any]:
        return self.get_current_usage(identifier)


def _tutorial_quota(max_tokens: int, refill_rate: float, interval: float) -> Quota:
    tokens = _whole_count(max_tokens, "max_tokens")
    per_interval = _positive_rate(refill_rate, "refill_rate")
    seconds = _positive_rate(interval, "interval")
    return Quota.per(tokens, tokens * seconds / per_interval)


class TokenBucket:
    """The tutorial's bucket: ``max_tokens`` tokens, ``refill_rate`` tokens back every ``interval`` seconds.

    Tokens come back one at a time, evenly spread (``interval / refill_rate`` apart), rather than
    ``refill_rate`` at once at the end of each interval: the same rate, without the bursts at interval edges.
    """

    def __init__(
        self,
        max_tokens: int,
        refill_rate: float,
        interval: float,
        *,
        clock: FakeClock | None = None,
        _limiter: Limiter | None = None,
        _key: str = "",
    ) -> None:
        quota = _tutorial_quota(max_tokens, refill_rate, interval)
        self.max_tokens = int(max_tokens)
        self.refill_rate = refill_rate
        self.interval = interval
        self._limiter = _limiter if _limiter is not None else Limiter(quota, "token_bucket", clock=clock, max_keys=1)
        self._key = _key

    def allow_request(self, tokens: int = 1) -> bool:
        """Takes ``tokens`` if the bucket holds that many; otherwise takes nothing and returns False."""
        if tokens > self.max_tokens:
            return False
        return self._limiter.allow(self._key, tokens)

    def get_remaining(self) -> int:
        """Tokens in the bucket now."""
        return self._limiter.peek(self._key).remaining

    def get_reset_time(self) -> float:
        """When the next token comes back, in seconds since the epoch (now, if the bucket is full)."""
        standing = self._limiter.peek(self._key)
        missing = self.max_tokens - standing.remaining
        if missing == 0:
            return self._limiter.now()
        per_token = standing.window / self.max_tokens
        return standing.reset_at - (missing - 1) * per_token


class RateLimiterStore:
    """One tutorial `TokenBucket` per key, all in one bounded native store."""

    def __init__(
        self,
        max_tokens: int,
        refill_rate: float,
        interval: float,
        *,
        clock: FakeClock | None = None,
        max_keys: int = 1_000_000,
    ) -> None:
        self.max_tokens = int(max_tokens)
        self.refill_rate = refill_rate
        self.interval = interval
        quota = _tutorial_quota(max_tokens, refill_rate, interval)
        self._limiter = Limiter(quota, "token_bucket", clock=clock, max_keys=max_keys)

    def get_bucket(self, key: str) -> TokenBucket:
        return TokenBucket(self.max_tokens, self.refill_rate, self.interval, _limiter=self._limiter, _key=str(key))
