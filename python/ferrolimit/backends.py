"""fastlimit's custom-backend API: ``from ferrolimit.backends import Backend, BackendResult``.

A custom backend is any object with ``async check_and_increment(key, bucket, cost) -> BackendResult``, passed as
``FastLimit(backend=...)``. It is asked one rate at a time, so several rates of a route are not all-or-nothing
there (see `ferrolimit.starlette.BackendLimiter`); ferrolimit's own stores decide them together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ferrolimit.starlette import BucketConfig

__all__ = ["Backend", "BackendResult"]


class BackendResult:
    """What a backend answers for one bucket: whether the request passes, the bucket's ``limit``, the units
    ``remaining`` after it, ``reset_ms`` (epoch milliseconds when the window resets) and, for a refused
    request, ``retry_after_ms`` (milliseconds until a retry could pass)."""

    __slots__ = ("allowed", "limit", "remaining", "reset_ms", "retry_after_ms")

    def __init__(self, *, allowed: bool, limit: int, remaining: int, reset_ms: int, retry_after_ms: int = 0) -> None:
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset_ms = reset_ms
        self.retry_after_ms = retry_after_ms

    def __repr__(self) -> str:
        return (
            f"BackendResult(allowed={self.allowed!r}, limit={self.limit!r}, remaining={self.remaining!r}, "
            f"reset_ms={self.reset_ms!r}, retry_after_ms={self.retry_after_ms!r})"
        )


@runtime_checkable
class Backend(Protocol):
    """A store that checks a bucket and, if the request fits, counts it, atomically."""

    async def check_and_increment(self, key: str, bucket: BucketConfig, cost: int) -> BackendResult:
        """Checks ``key`` against ``bucket`` (``limit`` per ``window_sec``) and takes ``cost`` if it fits."""
        ...
