"""The native core of ferrolimit. Everything here runs in Rust; nothing blocks on I/O."""

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Final, Literal, TypeAlias, final

from typing_extensions import Self, disjoint_base

__all__ = [
    "_SCOPE_ENGINE",
    "_SCOPE_PENDING",
    "AddressSet",
    "Charge",
    "ClientResolver",
    "ConcurrencyLimitExceeded",
    "ConcurrencyLimiter",
    "CostExceedsLimitError",
    "Counts",
    "Decision",
    "FakeClock",
    "HeaderRenderer",
    "Lease",
    "Limiter",
    "Pending",
    "Quota",
    "RouteCharges",
    "Slot",
    "__version__",
    "_call_floor",
    "attach",
    "decision_from",
    "denied_body",
    "exceeded_detail",
    "header_layer",
    "parse_rates",
    "retry_after_s",
    "send_with_headers",
]

def __version__() -> str: ...
def _call_floor(key: str) -> bool:
    """Does nothing with one str: the cost of a call into the extension (a benchmark floor)."""

def parse_rates(text: str) -> list[tuple[int, float]]:
    """Parses ``"10/min"``, ``"3/5min"``, ``"10 per minute"`` or ``"10/s;1000/day"`` into
    ``(limit, period_seconds)`` pairs. Raises ``ValueError`` naming the bad text and a valid example."""

class CostExceedsLimitError(ValueError):
    """A request's cost is larger than the limit itself, so it could never pass."""

class ConcurrencyLimitExceeded(Exception):
    """Raised on entering ``ConcurrencyLimiter.slot(...)`` when the key's slots are taken. ``decision`` is the
    denied Decision; ``retry_after`` is its wait in seconds (the limiter's ``retry_after``)."""

    decision: Decision
    retry_after: float

@final
class Quota:
    """One or more rates that apply together, e.g. ``Quota("10/s;1000/day")``."""

    def __new__(cls, rates: str) -> Self: ...
    @staticmethod
    def per(limit: int, period: float) -> Quota:
        """``limit`` units per ``period`` seconds."""
    @property
    def rates(self) -> list[tuple[int, float]]:
        """``(limit, period_seconds)`` for each rate."""
    @property
    def limit(self) -> int:
        """The smallest limit among the rates."""
    def __len__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Decision:
    """What a check decided. Times are seconds; ``bool(decision)`` is ``allowed``."""

    @property
    def allowed(self) -> bool: ...
    @property
    def limit(self) -> int:
        """The quota of the limit that bound the decision."""
    @property
    def remaining(self) -> int:
        """Whole units left after this request; never negative."""
    @property
    def reset_after(self) -> float:
        """Seconds until the quota is fully restored."""
    @property
    def retry_after(self) -> float:
        """Seconds until a request of this cost could pass; 0.0 when allowed."""
    @property
    def window(self) -> float:
        """The period in seconds of the limit that bound the decision."""
    @property
    def reset_at(self) -> float:
        """``reset_after`` as seconds since the Unix epoch, on the limiter's clock."""
    @property
    def index(self) -> int:
        """Which limit of the call bound the decision: its position in the list given to ``hit_many`` (the
        first position naming it when a ``(key, rate)`` is named twice and so counted once); 0 for a call of
        one limit (``hit``, ``test``, ``peek``). Of equally tight limits, the first is named. When Redis cannot
        answer, ``on_backend_error="allow"`` and ``"deny"`` name the limit a fresh request would leave fewest
        units of (of equals, the longest period, then the first), and ``"memory"`` the one the local limiter
        found binding."""
    def __bool__(self) -> bool: ...

_SCOPE_PENDING: Final[str]
_SCOPE_ENGINE: Final[str]

_Send: TypeAlias = Callable[[Any], Awaitable[None]]
# A limit of hit_many: (key, rate), or (key, rate, cost) to charge it its own cost.
_HitManyItem: TypeAlias = tuple[str, str | Quota | None] | tuple[str, str | Quota | None, int]

@final
class Pending:
    """A request's pending rate-limit fields: those of the tightest decision offered so far (see
    ``HeaderRenderer.offer``), written on the response start by ``send_with_headers``."""

    def __new__(cls) -> Self: ...
    @property
    def decision(self) -> Decision | None:
        """The decision held, or None."""
    @property
    def fields(self) -> list[tuple[bytes, bytes]]:
        """Its fields, ``[(name, value), ...]`` as lower-case bytes; empty when no decision was offered."""

@final
class AddressSet:
    """The addresses and networks whose clients are exempt from a limit, matched as ``ferrolimit.keys.IPSet``
    matches them (which makes one with ``IPSet.native()``)."""

    def __new__(cls, exact: Sequence[str], networks: Sequence[tuple[str, int]]) -> Self: ...
    def __contains__(self, key: object, /) -> bool:
        """Whether ``key`` (an address, a str) is in the set; False for anything else."""

@final
class ClientResolver:
    """How the ASGI layers find the client of a request: ``ferrolimit.keys.ClientIdentifier``'s rules, run natively
    on the common path. ``hops`` proxies in front of every request, or the ``trusted`` proxies' networks as
    ``(address, prefix length)`` pairs; IPv6 clients keyed by their ``/ipv6_prefix``; ``proxy_header``
    ``"x-forwarded-for"`` or ``"forwarded"``."""

    def __new__(
        cls, hops: int, trusted: Sequence[tuple[str, int]] | None, ipv6_prefix: int, proxy_header: str
    ) -> Self: ...
    def resolve(self, peer: str | None, values: Sequence[str]) -> tuple[str, str] | None:
        """``(address, key)`` of the client of a request from ``peer`` that carried ``values`` of the forwarding
        header, or None when it cannot be known."""

@final
class Counts:
    """Requests allowed, refused, and refused in a dry run (so let through), for one limit name."""

    def __new__(cls) -> Self: ...
    @property
    def allowed(self) -> int:
        """Requests allowed."""
    @property
    def limited(self) -> int:
        """Requests refused."""
    @property
    def dry_run_limited(self) -> int:
        """Requests a dry run would have refused, let through."""
    def add(self, *, allowed: int = 0, limited: int = 0, dry_run_limited: int = 0) -> None:
        """Counts more requests."""
    def as_dict(self) -> dict[str, int]:
        """``{"allowed": n, "limited": n, "dry_run_limited": n}``."""

@final
class Charge:
    """One limit as the ASGI layers charge it on every request: a memory ``Limiter``, a key prefix, a rate
    (``None``: the limiter's own), a cost, the ``HeaderRenderer`` and policy name of its response fields, and the
    ``Counts`` of its limit name; clients in ``exempt`` pass untouched. In a ``dry_run`` a refusal is reported
    as usual but its fields are not offered (the caller lets the request through)."""

    def __new__(
        cls,
        limiter: Limiter,
        prefix: str,
        quota: Quota | None,
        cost: int,
        renderer: HeaderRenderer,
        policy: str,
        counts: Counts,
        resolver: ClientResolver,
        exempt: AddressSet | None = None,
        dry_run: bool = False,
    ) -> Self: ...
    def admit(self, scope: Any, send: _Send) -> _Send | tuple[Decision, _Send, str] | None:
        """A middleware's whole common path for an HTTP ``scope``: the client resolved, the decision offered to the
        request's pending fields (made, with ``send`` wrapped to write them, when no outer layer made them). Returns
        the ``send`` to pass on when allowed, ``(decision, send, client key)`` when refused, and None, having done
        nothing, when the client cannot be resolved here."""
    @property
    def prefix(self) -> str:
        """The key prefix."""

@final
class RouteCharges:
    """The charges of one FastAPI dependency, per matched route, for the routes where it is the only limit and
    the common case applies. Bounded by the number of routes."""

    def __new__(cls) -> Self: ...
    def set(self, route: object, engine: object, charge: Charge | None, mount: str) -> None:
        """Charges ``charge`` for ``route`` served by ``engine`` and reached under the mount path ``mount`` from
        now on; None forgets the route."""
    def admit(self, scope: Any) -> Literal[True] | tuple[Decision, str] | None:
        """The dependency's whole common path: True when the request's route has a charge here for the scope's
        ``FastLimit``, its client is resolved, and the charge allowed it; ``(decision, client key)`` when the charge
        refused it; None, having done nothing, when the request must go the general way."""
    def __len__(self) -> int: ...

@final
class HeaderRenderer:
    """Renders the rate-limit response fields of a ``Decision`` under the given names; ``None`` leaves a field out.

    ``X-RateLimit-Reset`` is when the quota is fully restored, in Unix seconds rounded up; ``Retry-After``
    (only on a denial) is whole seconds rounded up, at least 1, so a client that waits as told is never early.
    ``policy`` and ``ratelimit`` name the IETF draft fields: ``RateLimit-Policy: "name";q=10;w=60`` and
    ``RateLimit: "name";r=7;t=6``, where ``t`` is the seconds until the quota is fully restored, or the
    ``Retry-After`` value on a denial.
    """

    def __new__(
        cls,
        *,
        limit: str | None = "X-RateLimit-Limit",
        remaining: str | None = "X-RateLimit-Remaining",
        reset: str | None = "X-RateLimit-Reset",
        retry_after: str | None = "Retry-After",
        policy: str | None = None,
        ratelimit: str | None = None,
    ) -> Self: ...
    def render(self, decision: Decision, policy: str = "default") -> list[tuple[bytes, bytes]]:
        """``[(name, value), ...]``, lower-case bytes ready for an ASGI message; ``policy`` names the limit."""
    def offer(self, pending: Pending, decision: Decision, policy: str = "default") -> bool:
        """Keeps ``decision`` in ``pending`` with its fields rendered, unless the decision held there already binds
        at least as tightly (a denial, a longer wait, fewer left). True when it is now the one held."""
    @property
    def names(self) -> list[str]:
        """The configured field names, as given."""
    def __len__(self) -> int: ...

def retry_after_s(decision: Decision) -> int:
    """Whole seconds until a request of the decision's cost could pass, rounded up, at least 1."""

def exceeded_detail(decision: Decision) -> str:
    """``"Rate limit exceeded: 10 per 1 minute"``, naming the limit that bound the decision."""

def decision_from(
    *,
    allowed: bool,
    limit: int,
    remaining: int,
    reset_after: float,
    retry_after: float,
    window: float,
    now: float,
    index: int = 0,
) -> Decision:
    """A ``Decision`` from numbers a limiter written in Python reported (a custom ``backend=``), so it gets the
    same headers and body. Times are seconds (rounded up to the nanosecond); ``now`` is seconds since the epoch;
    ``index`` is the position of the limit it describes among the limits of the call."""

def denied_body(decision: Decision) -> bytes:
    """The JSON body of a 429: ``{"detail":"Rate limit exceeded: 10 per 1 minute","retry_after":60}``."""

@final
class FakeClock:
    """A clock that moves only when told to, for tests. Starts at ``start`` seconds since the epoch."""

    def __new__(cls, start: float = 1_700_000_000.0) -> Self: ...
    def advance(self, seconds: float) -> None: ...
    def set(self, now: float) -> None:
        """Moves the clock to ``now``; raises ``ValueError`` if that is in the past."""
    def now(self) -> float: ...

@disjoint_base
class Limiter:
    """A rate limiter: one or more rates, an algorithm and a store.

    ``algorithm`` is one of ``"gcra"`` (default), ``"token_bucket"``, ``"leaky_bucket"``, ``"fixed_window"``,
    ``"sliding_window_counter"`` or ``"sliding_window_log"``. ``"sliding_window_log"`` keeps one timestamp per
    unit taken, so it takes limits of at most 100,000 per period (``ValueError`` otherwise, here or in the call
    that names the rate); ``"sliding_window_counter"`` holds two counters per key at any limit.

    ``storage`` is ``"memory://"`` (default) or a Redis URL: ``redis://[user:pass@]host:port/db``,
    ``rediss://...`` (TLS; ``#insecure`` skips certificate checks), ``redis+cluster://h1:p1,h2:p2`` or
    ``redis+unix:///path.sock?db=0``; the scheme's case does not matter. The database is the path or ``?db=N``
    (as redis-py reads it), a whole number from 0: anything else, or two different numbers, raises
    ``ValueError``. A server has databases 0 to 15 unless its ``databases`` setting says more, so a number it
    lacks is found out only when connecting, and handled as any Redis failure (logged, ``on_backend_error``).
    A cluster has database 0 only.

    The memory store keeps at most ``max_keys`` keys; keys that behave as new are dropped on their own, and a
    live counter is never dropped. The keys are spread by hash over up to 64 shards, each holding its share of
    ``max_keys``; when a new key's shard is full of live keys, the key is let through untracked
    (``on_full="allow"``) or refused (``on_full="deny"``), and ``stats()["store_full"]`` counts it. A shard can
    fill before the whole store does, from about 90% of ``max_keys`` at worst (exactly at ``max_keys`` below
    2,048; see the README, "Memory").

    On Redis every decision is one ``EVALSHA`` of a Lua script that checks all its limits together and commits
    only if all pass, on Redis server time, so processes and hosts share exact limits. Keys are
    ``{key_prefix}{algorithm}:{{key}}:{limit}:{period_us}`` and expire once idle; the ``{key}`` hash tag keeps
    every rate of a key in one cluster slot. On a cluster, a ``hit_many`` whose keys span slots is checked on
    every slot and then committed slot by slot: a request is never admitted past a limit, but a race between
    the check and the commit can charge one slot for a request another refused; a ``key_prefix`` with its own
    hash tag (``"{rl}:"``) puts every key in one slot and keeps such calls atomic. The scripts count time in
    whole microseconds, so ``gcra``, ``token_bucket`` and ``leaky_bucket`` round the time per unit (period / limit)
    down to a microsecond and admit up to 1% faster than the rate (``"1500/s"``: 0.1%); a rate that rounding would
    speed up by more than 1% and a unit or more per period, such as ``"2000000/s"``, raises ``ValueError``.
    ``"1000/s"`` and ``"1000000/s"`` divide a second exactly.

    No call waits on Redis longer than ``timeout_ms`` in all, except that a process's first connection may take
    ``connect_timeout_ms`` more; reconnecting after a failure goes on in the background for up to
    ``connect_timeout_ms`` while calls fall back. When Redis fails or
    times out, ``on_backend_error`` decides: ``"allow"`` (default), ``"deny"`` (``retry_after`` of at least 1 s,
    and ``reset_after`` the same) or ``"memory"`` (this process's memory store, same rules). A call that timed
    out was sent all the same, so a Redis that stalls and resumes may still count it. After
    ``breaker_failures`` failures in a row no call waits on Redis for ``breaker_cooldown_ms``; then one call
    probes it and reconnects (on a cluster, per range of 128 slots: a dead node's keys fall back, the live
    nodes' keys stay limited). Each incident is logged once (warning on the ``ferrolimit`` logger, info when
    Redis answers again) and counted in ``stats()``. No Redis failure raises out of a call.
    ``deny_cache_size > 0`` remembers that many denied requests in this process until their ``retry_after``,
    so a blocked client's flood does not reach Redis (a ``reset`` elsewhere is not seen until then).

    Sync methods release the GIL while they wait on Redis; the ``*_async`` methods return coroutines and
    never block the event loop (in memory they are already done). A process forked after using Redis makes
    its own connection.

    Pass a ``FakeClock`` as ``clock`` to control time in tests; on Redis its time is then passed to the
    scripts instead of Redis ``TIME`` (tests only: every process must then share that clock).
    """

    def __new__(
        cls,
        rate: str | Quota,
        algorithm: str = "gcra",
        storage: str = "memory://",
        *,
        clock: FakeClock | None = None,
        max_keys: int = 1_000_000,
        on_full: str = "allow",
        key_prefix: str = "ferrolimit:",
        connect_timeout_ms: int = 1_000,
        timeout_ms: int = 250,
        on_backend_error: str = "allow",
        breaker_failures: int = 3,
        breaker_cooldown_ms: int = 1_000,
        deny_cache_size: int = 0,
    ) -> Self: ...
    def hit(self, key: str, cost: int = 1) -> Decision:
        """Takes ``cost`` units from every rate of ``key`` if all have room; a denied request takes nothing.
        Raises ``CostExceedsLimitError`` if ``cost`` is larger than a rate's limit (however large the int), and
        ``ValueError`` if it is below 1."""
    def allow(self, key: str, cost: int = 1) -> bool:
        """``hit(key, cost).allowed`` without building a Decision."""
    def test(self, key: str, cost: int = 1) -> Decision:
        """What ``hit(key, cost)`` would decide now, taking nothing."""
    def peek(self, key: str, rate: str | Quota | None = None) -> Decision:
        """The standing of ``key`` under ``rate`` (``None``: this limiter's rates; give the one ``hit_many`` was
        given for the key): units left now, time to full reset, and whether one more unit would pass."""
    def check_rate(self, rate: str | Quota) -> None:
        """Raises ``ValueError`` if this limiter's algorithm and store cannot enforce ``rate`` as written, as
        ``hit_many`` would when given it; touches no key and no store."""
    def reset(self, key: str, rate: str | Quota | None = None) -> None:
        """Forgets ``key`` under ``rate`` (``None``: this limiter's rates; give the one ``hit_many`` was given
        for the key): its next request under that rate is treated as its first."""
    def hit_many(self, limits: Sequence[_HitManyItem], cost: int = 1) -> Decision:
        """Checks several ``(key, rate)`` or ``(key, rate, cost)`` limits as one request (``None`` = this
        limiter's rates): each takes its own cost (``cost`` where the item names none), all are charged only
        if all pass, and a ``(key, rate)`` named twice is one counter, charged once at the larger cost.
        Returns the decision of the tightest limit, whose ``index`` is that limit's position in ``limits``. A
        cost above its own limit's rate raises ``CostExceedsLimitError``; an item's cost that is not an int
        raises ``TypeError``, one below 1 ``ValueError``."""
    def sweep(self) -> int:
        """Drops keys whose state is that of a fresh key; returns how many."""
    def now(self) -> float:
        """Seconds since the Unix epoch on this limiter's clock."""
    def stats(self) -> dict[str, int]:
        """``allowed``, ``denied``, ``store_full`` counts since creation, and ``keys`` held now (in memory).
        On Redis also ``redis_calls``, ``backend_errors``, ``timeouts``, ``incidents``, ``fallbacks``,
        ``deny_cache_hits`` and ``breaker_open`` (1 while any breaker is open), shared by the limiters on the
        same server."""
    def hit_async(self, key: str, cost: int = 1) -> Coroutine[Any, Any, Decision]:
        """``hit`` as an awaitable; on Redis the event loop runs on while the store answers."""
    def allow_async(self, key: str, cost: int = 1) -> Coroutine[Any, Any, bool]:
        """``allow`` as an awaitable."""
    def test_async(self, key: str, cost: int = 1) -> Coroutine[Any, Any, Decision]:
        """``test`` as an awaitable."""
    def peek_async(self, key: str, rate: str | Quota | None = None) -> Coroutine[Any, Any, Decision]:
        """``peek`` as an awaitable."""
    def hit_many_async(self, limits: Sequence[_HitManyItem], cost: int = 1) -> Coroutine[Any, Any, Decision]:
        """``hit_many`` as an awaitable."""
    def reset_async(self, key: str, rate: str | Quota | None = None) -> Coroutine[Any, Any, None]:
        """``reset`` as an awaitable."""
    def _ping(self) -> bool:
        """One PING on the Redis connection (False in memory or when it fails); for benchmarks."""
    def _ping_async(self) -> Coroutine[Any, Any, bool]: ...
    @property
    def is_remote(self) -> bool:
        """Whether decisions are made by Redis rather than in this process."""
    @property
    def quota(self) -> Quota: ...
    @property
    def algorithm(self) -> str: ...
    @property
    def max_keys(self) -> int:
        """The cap on keys in the memory store, as given."""
    def __len__(self) -> int:
        """Keys held in the store now."""

@disjoint_base
class ConcurrencyLimiter:
    """At most ``limit`` units in flight per key: a request takes slots when it starts and gives them back
    when it ends. ``retry_after`` is the wait in seconds suggested when the key is full (when a slot frees up is
    not known in advance): above 0 and at most ten years, kept as given to the nanosecond; a denial reports it
    as both ``retry_after`` and ``reset_after``.

    ``storage`` is ``"memory://"`` (default) or a Redis URL, as for ``Limiter``, with the same Redis options
    (``key_prefix``, ``connect_timeout_ms``, ``timeout_ms``, ``on_backend_error``, ``breaker_failures``,
    ``breaker_cooldown_ms``). Every acquisition is a lease that holds its slots until released or until
    ``lease_ms`` has passed, so a worker that dies holding slots does not hold them forever; set ``lease_ms``
    above the longest a request may take, since an expired lease's slots go to others while it still runs.
    ``lease_ms=None`` (default) means 60 000 on Redis and, in memory, held until released.

    On Redis each acquire, release or peek is one ``EVALSHA``, atomic, on Redis server time. A key's leases
    are a ZSET ``{key_prefix}concurrency:{{key}}:{limit}:leases`` (lease id -> expiry) and a HASH ``...:costs``
    (lease id -> slots held); expired leases are purged before counting, and both keys expire with their last
    lease. When Redis fails, ``on_backend_error`` decides acquisitions: ``"allow"`` (untracked), ``"deny"``
    or ``"memory"`` (a lease in this process's memory store, same limit). An acquisition Redis did not answer
    is cancelled, and a ``Lease``'s release that cannot reach Redis is sent again, in the background until Redis
    answers or the lease would have expired; ``release(key, cost)`` is not sent again, and its lease expires
    by itself. No Redis failure raises.

    Three ways to hold slots, easiest first:

    - ``with limiter.slot(key):`` or ``async with limiter.slot(key):`` takes the slots on entry, raising
      ``ConcurrencyLimitExceeded`` when they are taken, and gives them back when the block ends however it
      ends.
    - ``lease = limiter.acquire_lease(key)`` (``await limiter.acquire_lease_async(key)``) when the slots must
      outlive a block (a streamed response): check ``lease.allowed``, call ``lease.release()`` once done
      (later calls do nothing). A ``Lease`` is also a context manager that releases on exit.
    - ``acquire(key, cost)`` / ``release(key, cost)`` name no lease: ``release`` gives back ``cost`` slots of
      ``key`` taken by this limiter's ``acquire``, newest first, never a ``Lease``'s or another process's.

    A ``Lease`` that nobody can release any more (garbage-collected, or its ``await`` cancelled) gives its
    slots back by itself. Pass a ``FakeClock`` as ``clock`` to control lease expiry in tests; on Redis its
    time is then passed to the script instead of Redis ``TIME`` (tests only: every process must share it).
    """

    def __new__(
        cls,
        limit: int,
        storage: str = "memory://",
        *,
        retry_after: float = 1.0,
        lease_ms: int | None = None,
        clock: FakeClock | None = None,
        max_keys: int = 1_000_000,
        key_prefix: str = "ferrolimit:",
        connect_timeout_ms: int = 1_000,
        timeout_ms: int = 250,
        on_backend_error: str = "allow",
        breaker_failures: int = 3,
        breaker_cooldown_ms: int = 1_000,
    ) -> Self: ...
    def acquire(self, key: str, cost: int = 1) -> Decision:
        """Takes ``cost`` slots for ``key`` if free; give them back with ``release``. Raises
        ``CostExceedsLimitError`` if ``cost`` is larger than ``limit`` (however large the int), and ``ValueError``
        if it is below 1."""
    def acquire_async(self, key: str, cost: int = 1) -> Coroutine[Any, Any, Decision]:
        """``acquire`` as an awaitable; on Redis the event loop runs on while the store answers."""
    def release(self, key: str, cost: int = 1) -> None:
        """Gives back ``cost`` slots of ``key`` taken by this process's ``acquire``; extra releases do nothing."""
    def release_async(self, key: str, cost: int = 1) -> Coroutine[Any, Any, None]:
        """``release`` as an awaitable."""
    def acquire_lease(self, key: str, cost: int = 1) -> Lease:
        """Takes ``cost`` slots for ``key`` if free, as a ``Lease`` (``lease.allowed`` says whether they were)."""
    def acquire_lease_async(self, key: str, cost: int = 1) -> Coroutine[Any, Any, Lease]:
        """``acquire_lease`` as an awaitable."""
    def slot(self, key: str, cost: int = 1) -> Slot:
        """A context manager (``with`` or ``async with``) that holds ``cost`` slots of ``key`` for its block."""
    def peek(self, key: str) -> Decision:
        """Slots free for ``key`` now (``remaining``), and whether one more would pass."""
    def peek_async(self, key: str) -> Coroutine[Any, Any, Decision]:
        """``peek`` as an awaitable."""
    def stats(self) -> dict[str, int]:
        """``allowed`` and ``denied`` acquisitions, ``store_full`` and ``keys`` (memory store); on Redis also
        the store's counts, as ``Limiter.stats()``."""
    @property
    def limit(self) -> int: ...
    @property
    def lease_ms(self) -> int | None:
        """Milliseconds a lease holds its slots unless released; ``None`` when held until released."""
    @property
    def is_remote(self) -> bool:
        """Whether slots are counted in Redis rather than in this process."""
    def __len__(self) -> int:
        """Keys held in this process's memory store (on Redis, the fallback's)."""

@final
class Lease:
    """The slots one acquisition holds (when ``allowed``) until ``release()``, the end of a ``with`` /
    ``async with`` block, the lease's expiry, or the ``Lease`` being garbage-collected (keep a reference while
    the work runs). Releasing twice, or releasing a denied or expired lease, does nothing: it never frees
    slots of another lease."""

    @property
    def allowed(self) -> bool: ...
    @property
    def decision(self) -> Decision: ...
    @property
    def key(self) -> str: ...
    @property
    def cost(self) -> int: ...
    @property
    def released(self) -> bool:
        """Whether the lease holds nothing any more (released, or never allowed)."""
    def release(self) -> None:
        """Gives the slots back (once); never raises on a Redis failure."""
    def release_async(self) -> Coroutine[Any, Any, None]:
        """``release`` as an awaitable."""
    def __bool__(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, kind: object | None, value: object | None, traceback: object | None) -> None: ...
    def __aenter__(self) -> Awaitable[Self]: ...
    def __aexit__(self, kind: object | None, value: object | None, traceback: object | None) -> Awaitable[None]: ...

@final
class Slot:
    """``limiter.slot(key, cost)``: on entry (``with`` or ``async with``) takes the slots and returns their
    ``Lease``, or raises ``ConcurrencyLimitExceeded``; on exit gives them back. One block at a time."""

    def __enter__(self) -> Lease: ...
    def __exit__(self, kind: object | None, value: object | None, traceback: object | None) -> None: ...
    def __aenter__(self) -> Awaitable[Lease]: ...
    def __aexit__(self, kind: object | None, value: object | None, traceback: object | None) -> Awaitable[None]: ...

def attach(scope: Any, send: _Send) -> tuple[Pending, _Send]:
    """``(pending, send)``: the request's pending fields, and the ``send`` to pass on, wrapped to write them unless
    an outer layer made them (and writes them)."""

def send_with_headers(send: _Send, pending: Pending) -> _Send:
    """``send``, writing ``pending``'s fields (see ``HeaderRenderer.offer``) on the message that starts the response.
    A field the response already carries (set by the app, an error handler or an upstream it relays) is not repeated."""

def header_layer(app: Any, holder: list[Any]) -> Callable[[Any, Any, _Send], Awaitable[None]]:
    """The ASGI layer ``FastLimit.init_app`` adds around ``app``: puts the limiter ``holder[0]`` in the scope and, on
    HTTP, writes the request's pending fields on the response start, whoever builds the response (the handler, an
    exception handler, a streaming body). ``holder`` is a one-item list, so that a later ``init_app`` on the same
    app puts its own limiter there. A builtin function that hands back the inner app's awaitable, so it belongs
    inside Starlette's middleware stack, never where a server inspects the app."""
