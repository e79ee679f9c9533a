"""Rate limiting for FastMCP servers (``pip install "ferrolimit[fastmcp]"``), over ferrolimit's native core.

Drop-in for ``fastmcp.server.middleware.rate_limiting``: switch the import line and a server keeps running
with the same signatures, defaults, hooks and error messages. What differs, on purpose:

- ``RateLimitError`` carries ``data={"retry_after": seconds}``, so a client knows when to come back.
- Without ``get_client_id``, clients are told apart by `ClientIdentity` (access token, HTTP peer address,
  legacy session), where FastMCP puts every client in one bucket named ``"global"``. Only a request that
  nothing identifies is counted as ``"global"``. Pass ``get_client_id=lambda context: "global"`` for
  FastMCP's single bucket.
- Buckets live in the native, bounded store (``max_keys``), not in a dict that grows with every client id;
  ``storage=``/``redis_url=`` let several server processes share them.
- ``SlidingWindowRateLimiter`` frees a slot exactly one window after it was taken; FastMCP's frees it just
  after that instant. A burst capacity with a fraction (``2.5``) admits its whole part (2) at once.
- Time is counted up to ten years, the longest period the core accepts: a bucket that never refills (a rate
  of 0, or negative, where FastMCP's drains) refuses for ten years once empty, one whose full refill would
  take longer gets its tokens back within ten years, and a longer sliding window counts for ten years.

`ToolRateLimitingMiddleware` goes further: limits and costs per tool, prompt and resource, hooked on the
calls themselves, so connecting, listing and ``ping`` are free unless ``every_request`` says otherwise.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from fnmatch import fnmatchcase
from typing import Any, TypeAlias

import mcp_types as mt
from fastmcp.exceptions import FastMCPDeprecationWarning
from fastmcp.prompts import PromptResult
from fastmcp.resources import ResourceResult
from fastmcp.server.dependencies import get_access_token, get_http_request
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.server.middleware import rate_limiting as _fastmcp_rate_limiting
from fastmcp.tools import ToolResult
from mcp import MCPError
from mcp.server.auth.middleware.auth_context import get_access_token as _sdk_access_token
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request

from ferrolimit._core import CostExceedsLimitError, Decision, FakeClock, Limiter, Quota
from ferrolimit.keys import ClientIdentifier

__all__ = [
    "ClientIdentity",
    "RateLimitError",
    "RateLimitingMiddleware",
    "SlidingWindowRateLimiter",
    "SlidingWindowRateLimitingMiddleware",
    "TokenBucketRateLimiter",
    "ToolRateLimitingMiddleware",
]

ClientIdFunction: TypeAlias = (
    Callable[[MiddlewareContext[Any]], str] | Callable[[MiddlewareContext[Any]], Awaitable[str]]
)
Rate: TypeAlias = str | Quota

logger = logging.getLogger("ferrolimit")

# The longest period the core accepts, in seconds: ten years (MAX_PERIOD_NS in src/rate.rs).
_MAX_PERIOD_S = 3_650 * 86_400.0
# The requests whose typed hooks (on_call_tool, on_get_prompt, on_read_resource) ToolRateLimitingMiddleware
# charges to every_request, together with their own limits, when FastMCP runs those hooks.
_COMPONENT_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})


async def _check(limiter: Limiter, limits: Sequence[tuple[str, Quota | None]], cost: int = 1) -> Decision:
    """Charges ``cost`` to every ``(key, quota)`` if all have room: the one place this module asks the core.

    A remote store (Redis) is awaited, so the event loop never waits on the network; the memory store
    answers at once and is called directly.
    """
    if limiter.is_remote:
        return await limiter.hit_many_async(limits, cost)
    return limiter.hit_many(limits, cost)


def _retry_after_s(decision: Decision) -> float:
    """Seconds until the request could pass, rounded up to the millisecond so that waiting that long works."""
    return math.ceil(decision.retry_after * 1000) / 1000


def _storage(storage: str, redis_url: str | None) -> str:
    if redis_url is None:
        return storage
    if storage not in ("memory://", redis_url):
        raise ValueError(f"pass either storage= or redis_url=, not both (got {storage!r} and {redis_url!r})")
    return redis_url


class RateLimitError(_fastmcp_rate_limiting.RateLimitError):
    """FastMCP's ``RateLimitError`` (an ``mcp.MCPError``, code -32000) that also says when to retry.

    ``data`` is ``{"retry_after": seconds}`` (None when waiting will not help), which reaches the client intact:
    ``except MCPError as e: e.data["retry_after"]``. ``except`` clauses written for FastMCP's class catch it.
    """

    def __init__(self, message: str = "Rate limit exceeded", *, retry_after: float | None = None) -> None:
        MCPError.__init__(self, code=-32000, message=message, data={"retry_after": retry_after})

    @property
    def retry_after(self) -> float | None:
        """Seconds until a retry could pass; None if it never will."""
        value: float | None = self.data["retry_after"]
        return value


class ClientIdentity:
    """Who is calling, as a rate-limit key; usable as any middleware's ``get_client_id``.

    The first that applies wins:

    1. the access token of an authenticated request: ``"token:<client_id>"``, plus ``"/<subject>"`` when the
       token names a subject (one OAuth client acting for many users);
    2. the ``api_key_header`` when one is named (off by default: only name a header that your server checks,
       or a client can pick a fresh key, and so a fresh bucket, for every request): ``"apikey:<sha256 prefix>"``;
    3. the HTTP peer address, behind ``trusted_proxies`` (see `ferrolimit.keys.ClientIdentifier`):
       ``"ip:203.0.113.7"``, IPv6 grouped by ``/ipv6_prefix``;
    4. the MCP session id, only on legacy-handshake connections, where it lasts the whole session (under the
       2026-07-28 protocol every request gets a new one): ``"session:<id>"``;
    5. ``"global"``: nothing identifies the caller (stdio, in-memory), which is one client anyway.
    """

    __slots__ = ("_addresses", "_api_key_header", "_sessions", "_warned")

    def __init__(
        self,
        *,
        api_key_header: str | None = None,
        trusted_proxies: int | Sequence[str] = 0,
        ipv6_prefix: int = 64,
        proxy_header: str = "x-forwarded-for",
        sessions: bool = True,
    ) -> None:
        self._api_key_header = api_key_header.lower() if api_key_header else None
        self._addresses = ClientIdentifier(trusted_proxies, ipv6_prefix, proxy_header=proxy_header)
        self._sessions = sessions
        self._warned = False

    def __call__(self, context: MiddlewareContext[Any]) -> str:
        request = _http_request()
        # FastMCP's get_access_token() looks for the HTTP request again; without one, only the SDK's
        # context variable can hold a token, so read that directly.
        token = get_access_token() if request is not None else _sdk_access_token()
        if token is not None:
            if token.subject and token.subject != token.client_id:
                return f"token:{token.client_id}/{token.subject}"
            return f"token:{token.client_id}"
        if request is not None:
            if self._api_key_header is not None:
                api_key = request.headers.get(self._api_key_header)
                if api_key:
                    return "apikey:" + hashlib.sha256(api_key.encode()).hexdigest()[:24]
            peer = request.client.host if request.client is not None else None
            address = self._addresses.client_ip(peer, request.headers)
            if address is not None:
                return "ip:" + self._addresses.key_of(address)
            self._warn_unresolved(peer)
        if self._sessions:
            session_id = _legacy_session_id(context)
            if session_id is not None:
                return "session:" + session_id
        return "global"

    def _warn_unresolved(self, peer: str | None) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(
            level,
            "ferrolimit: an HTTP request to the MCP server has no resolvable client address (peer %r); it is "
            "limited by its legacy session if it has one, else as 'global'. Check trusted_proxies.",
            peer,
        )


def _http_request() -> Request | None:
    try:
        return get_http_request()
    except RuntimeError:
        return None


def _legacy_session_id(context: MiddlewareContext[Any]) -> str | None:
    fastmcp_context = context.fastmcp_context
    if fastmcp_context is None:
        return None
    request_context = fastmcp_context.request_context
    if context.method != "initialize" and (
        request_context is None or request_context.protocol_version in MODERN_PROTOCOL_VERSIONS
    ):
        return None
    try:
        return fastmcp_context.session_id
    except RuntimeError:
        return None


async def _client_id(get_client_id: ClientIdFunction, context: MiddlewareContext[Any]) -> str:
    client_id = get_client_id(context)
    if inspect.isawaitable(client_id):
        return str(await client_id)
    return str(client_id)


class TokenBucketRateLimiter:
    """FastMCP's token bucket: ``capacity`` tokens, ``refill_rate`` tokens back per second, starting full.

    Tokens come back whole, one every ``1 / refill_rate`` seconds, with the partial one carried over: the same
    decisions as FastMCP's fractional count for whole-token requests. A ``refill_rate`` of 0 (or less) never
    refills: ``capacity`` tokens, then False. Time is counted up to ten years: a bucket that would take longer
    to refill completely gets its tokens back within ten years, a little sooner than asked.
    """

    def __init__(self, capacity: int, refill_rate: float, *, clock: FakeClock | None = None) -> None:
        self.capacity = capacity
        self.refill_rate = refill_rate
        self._limiter, _ = _token_bucket(capacity, refill_rate, "memory://", clock=clock, max_keys=1)

    async def consume(self, tokens: int = 1) -> bool:
        """Takes ``tokens`` if the bucket holds that many; otherwise takes nothing and returns False."""
        if tokens < 0:
            raise ValueError(f"tokens must be 0 or more, got {tokens}")
        if tokens == 0:
            return True
        if self._limiter is None or tokens > self._limiter.quota.limit:
            return False
        return (await _check(self._limiter, (("", None),), tokens)).allowed

    @property
    def tokens(self) -> float:
        """Whole tokens in the bucket now."""
        return 0.0 if self._limiter is None else float(self._limiter.peek("").remaining)


class SlidingWindowRateLimiter:
    """FastMCP's sliding window: at most ``max_requests`` in any ``window_seconds``, from exact timestamps."""

    def __init__(self, max_requests: int, window_seconds: float, *, clock: FakeClock | None = None) -> None:
        self.max_requests = max_requests
        self.window_seconds = window_seconds
        self._limiter = _sliding_log(max_requests, window_seconds, "memory://", clock=clock, max_keys=1)

    async def is_allowed(self) -> bool:
        """Whether a request passes now; a passing request is counted."""
        if self._limiter is None:
            return self.max_requests >= 1
        return (await _check(self._limiter, (("", None),))).allowed


def _token_bucket(capacity: float, refill_rate: float, storage: str, **options: Any) -> tuple[Limiter | None, bool]:
    """FastMCP's bucket of ``capacity`` tokens, ``refill_rate`` back per second, as a Limiter (None for a bucket
    that holds less than one token and so refuses everything), and whether a token taken comes back within ten
    years, the longest period the core accepts (when it does not, a refusal names no time to retry).

    A bucket that refills completely within ten years is exact. The others are the closest the core allows:

    - a refill rate of 0, negative (FastMCP's bucket then drains as time passes, so a client that pauses gets
      fewer than ``capacity``; here it is taken as 0), or so slow that one token takes ten years or more to come
      back: ``capacity`` requests in any ten years, counted from their timestamps (a sliding log), so a bucket
      emptied stays empty for ten years, exactly as FastMCP's does for those ten years. It holds one timestamp
      per request taken (at most ``capacity`` per client);
    - a bucket whose tokens come back one by one within ten years but whose full refill takes longer, such as
      ``(5000, 1 / 86400)``: ``capacity`` per ten years, a token bucket, so the whole burst passes and tokens
      come back as slowly as the core can make them, a little faster than asked (one every 17.5 hours there,
      not every 24).
    """
    whole = math.floor(capacity) if math.isfinite(capacity) else 0
    if whole < 1:
        return None, False
    if not refill_rate > 0 or 1 / refill_rate >= _MAX_PERIOD_S:
        return Limiter(Quota.per(whole, _MAX_PERIOD_S), "sliding_window_log", storage, **options), False
    # The core counts time in whole nanoseconds: a bucket refills at most one token per nanosecond.
    period_s = min(max(whole / refill_rate, whole / 1e9), _MAX_PERIOD_S)
    return Limiter(Quota.per(whole, period_s), "token_bucket", storage, **options), True


def _sliding_log(max_requests: float, window_s: float, storage: str, **options: Any) -> Limiter | None:
    """A sliding-log Limiter, or None when there is nothing to count: no window, or no request allowed.

    A window longer than ten years, the longest period the core accepts, is cut to ten years: a slot taken
    comes back after ten years rather than later.
    """
    if max_requests < 1 or window_s <= 0:
        return None
    whole = math.ceil(max_requests)
    return Limiter(Quota.per(whole, min(window_s, _MAX_PERIOD_S)), "sliding_window_log", storage, **options)


class RateLimitingMiddleware(Middleware):
    """FastMCP's ``RateLimitingMiddleware``: a token bucket per client, charged by every request.

    ``max_requests_per_second`` refills the bucket; ``burst_capacity`` (default ``2 x`` the rate, at least 1)
    is its size. Every request that reaches ``on_request`` takes one token: the connect request, lists,
    ``ping`` and calls. A refused request raises `RateLimitError` ("Rate limit exceeded for client: <id>",
    or "Global rate limit exceeded" with ``global_limit=True``) with ``data={"retry_after": seconds}``.
    ``max_requests_per_second=0`` with a ``burst_capacity`` admits that many requests per client, then refuses
    every one with ``data={"retry_after": None}``; as for `TokenBucketRateLimiter`, time is counted up to ten
    years.

    ``get_client_id(context)`` (sync or async) names the client; the default is `ClientIdentity`.
    ``storage``/``redis_url`` choose the store: ``"memory://"`` or a Redis URL (see `ferrolimit.Limiter`), which
    lets replicas share limits; servers that should share a limit use the same ``key_prefix``. ``max_keys``
    bounds the memory store, ``clock`` is for tests, and ``limiter_options`` go to `ferrolimit.Limiter` as they
    are (``timeout_ms``, ``on_backend_error``, ``on_full``...).
    """

    def __init__(
        self,
        max_requests_per_second: float = 10.0,
        burst_capacity: int | None = None,
        get_client_id: ClientIdFunction | None = None,
        global_limit: bool = False,
        *,
        storage: str = "memory://",
        redis_url: str | None = None,
        key_prefix: str = "ferrolimit:mcp:",
        max_keys: int = 1_000_000,
        clock: FakeClock | None = None,
        **limiter_options: Any,
    ) -> None:
        if burst_capacity is not None and burst_capacity < 1:
            warnings.warn(
                f"RateLimitingMiddleware(burst_capacity={burst_capacity!r}) is deprecated (FastMCP 5 will raise "
                "ValueError): 0 means the default capacity and any other value below 1 refuses every request. "
                "Pass burst_capacity=1 for no burst beyond the steady rate.",
                FastMCPDeprecationWarning,
                stacklevel=2,
            )
        self.max_requests_per_second = max_requests_per_second
        default_capacity = int(max_requests_per_second * 2)
        if max_requests_per_second > 0:
            default_capacity = max(1, default_capacity)
        self.burst_capacity = burst_capacity or default_capacity
        self.get_client_id = get_client_id
        self.global_limit = global_limit
        self._default_identity = ClientIdentity()
        self.limiter, self._refills = _token_bucket(
            self.burst_capacity,
            max_requests_per_second,
            _storage(storage, redis_url),
            key_prefix=key_prefix,
            max_keys=max_keys,
            clock=clock,
            **limiter_options,
        )

    async def _get_client_identifier(self, context: MiddlewareContext[Any]) -> str:
        """The client's id: ``get_client_id(context)``, awaited if need be, or `ClientIdentity`'s."""
        return await _client_id(self.get_client_id or self._default_identity, context)

    async def on_request(
        self,
        context: MiddlewareContext[mt.Request[Any, Any]],
        call_next: CallNext[mt.Request[Any, Any], Any],
    ) -> Any:
        if self.global_limit:
            key, message = "global", "Global rate limit exceeded"
        else:
            key = await self._get_client_identifier(context)
            message = f"Rate limit exceeded for client: {key}"
        if self.limiter is None:
            raise RateLimitError(message)
        decision = await _check(self.limiter, ((key, None),))
        if not decision.allowed:
            raise RateLimitError(message, retry_after=_retry_after_s(decision) if self._refills else None)
        return await call_next(context)


class SlidingWindowRateLimitingMiddleware(Middleware):
    """FastMCP's ``SlidingWindowRateLimitingMiddleware``: at most ``max_requests`` per client in any
    ``window_minutes``, counted from exact timestamps, charged by every request that reaches ``on_request``.

    A refused request raises `RateLimitError` ("Rate limit exceeded: 100 requests per 1 minutes for client:
    <id>") with ``data={"retry_after": seconds}``. The keyword options are those of `RateLimitingMiddleware`.
    """

    def __init__(
        self,
        max_requests: int,
        window_minutes: int = 1,
        get_client_id: ClientIdFunction | None = None,
        *,
        storage: str = "memory://",
        redis_url: str | None = None,
        key_prefix: str = "ferrolimit:mcp:",
        max_keys: int = 1_000_000,
        clock: FakeClock | None = None,
        **limiter_options: Any,
    ) -> None:
        self.max_requests = max_requests
        self.window_seconds = window_minutes * 60
        self.get_client_id = get_client_id
        self._default_identity = ClientIdentity()
        self.limiter = _sliding_log(
            max_requests,
            self.window_seconds,
            _storage(storage, redis_url),
            key_prefix=key_prefix,
            max_keys=max_keys,
            clock=clock,
            **limiter_options,
        )

    async def _get_client_identifier(self, context: MiddlewareContext[Any]) -> str:
        """The client's id: ``get_client_id(context)``, awaited if need be, or `ClientIdentity`'s."""
        return await _client_id(self.get_client_id or self._default_identity, context)

    async def on_request(
        self,
        context: MiddlewareContext[mt.Request[Any, Any]],
        call_next: CallNext[mt.Request[Any, Any], Any],
    ) -> Any:
        client_id = await self._get_client_identifier(context)
        if self.limiter is not None:
            decision = await _check(self.limiter, ((client_id, None),))
            allowed, retry_after = decision.allowed, _retry_after_s(decision)
        else:
            allowed, retry_after = self.max_requests >= 1, None
        if not allowed:
            raise RateLimitError(
                f"Rate limit exceeded: {self.max_requests} requests per {self.window_seconds // 60} minutes "
                f"for client: {client_id}",
                retry_after=retry_after,
            )
        return await call_next(context)


class _Rule:
    """The bucket one tool, prompt or resource is charged to, and what a call costs."""

    __slots__ = ("bucket", "cost", "quota")

    def __init__(self, bucket: str, quota: Quota | None, cost: int) -> None:
        self.bucket, self.quota, self.cost = bucket, quota, cost


def _has_wildcard(name: str) -> bool:
    return any(char in name for char in "*?[")


def _lookup(table: Mapping[str, Any], name: str) -> tuple[str, Any] | None:
    """The entry for ``name``: its own, else the first glob pattern matching it, else ``"*"``."""
    if name in table:
        return name, table[name]
    for pattern, value in table.items():
        if pattern != "*" and _has_wildcard(pattern) and fnmatchcase(name, pattern):
            return pattern, value
    if "*" in table:
        return "*", table["*"]
    return None


class _Rules:
    """Limits and costs of one kind of component (tools, prompts or resources), resolved by name."""

    def __init__(self, kind: str, limits: Mapping[str, Rate] | None, costs: Mapping[str, int] | None) -> None:
        self.kind = kind
        self._limits = {name: rate if isinstance(rate, Quota) else Quota(rate) for name, rate in (limits or {}).items()}
        self._costs = dict(costs or {})
        for name, cost in self._costs.items():
            if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
                raise ValueError(
                    f"the cost of {kind} {name!r} must be a whole number of at least 1, e.g. 5; got {cost!r}"
                )
        # Names written out in the tables resolve once, here; other names (patterns, "*") on each call.
        self._known = {name: self._resolve(name) for name in {*self._limits, *self._costs} if not _has_wildcard(name)}

    def _resolve(self, name: str) -> _Rule:
        limit = _lookup(self._limits, name)
        cost = _lookup(self._costs, name)
        return _Rule(
            bucket=limit[0] if limit is not None else "",
            quota=limit[1] if limit is not None else None,
            cost=cost[1] if cost is not None else 1,
        )

    def rule(self, name: str) -> _Rule:
        known = self._known.get(name)
        return known if known is not None else self._resolve(name)

    def rules(self) -> list[tuple[str, _Rule]]:
        return [(name, self._resolve(name)) for name in {*self._limits, *self._costs}]


class _RequestCharge:
    """Whether the component request that ``owner``'s ``on_request`` passed on has been charged to
    ``every_request`` by one of ``owner``'s typed hooks."""

    __slots__ = ("owner", "taken")

    def __init__(self, owner: ToolRateLimitingMiddleware) -> None:
        self.owner, self.taken = owner, False


_request_charge: ContextVar[_RequestCharge | None] = ContextVar("ferrolimit_request_charge", default=None)


def _every_request_refusal(decision: Decision, client_id: str) -> RateLimitError:
    retry_after = _retry_after_s(decision)
    return RateLimitError(
        f"Rate limit exceeded ({decision.limit} per {decision.window:g} s) for client: {client_id}. "
        f"Retry after {retry_after:g} s.",
        retry_after=retry_after,
    )


class ToolRateLimitingMiddleware(Middleware):
    """Limits and costs per tool, prompt and resource, per client, charged only by the calls themselves.

    ``tools={"search": "10/min", "*": "60/min"}``: a tool named in the table has its own limit; the tools
    matched by a glob pattern (``"db_*"``) share that pattern's limit; every other tool shares the ``"*"``
    limit; with no ``"*"``, other tools are not limited. ``prompts`` (by prompt name) and ``resources`` (by URI,
    usually as patterns such as ``"file:///docs/*"``) work the same way. ``tool_costs={"search": 5}`` (and
    ``prompt_costs``, ``resource_costs``; ``"*"`` and patterns allowed) is how many units a call takes; 1 by
    default. Buckets are keyed by table entry, never by a concrete name or URI a client sends, so memory
    stays bounded however many names clients invent.

    Hooks are ``on_call_tool``, ``on_get_prompt`` and ``on_read_resource``: connecting, ``tools/list`` and
    ``ping`` cost nothing, unless ``every_request="100/min"`` puts a limit on every request of a client, each
    charged once, malformed ones included (a call is then checked against both limits at once and charged only
    if both pass).

    A refused call raises `RateLimitError` naming the limit that ran out: "Rate limit exceeded for tool
    'search' (10 per 60 s) for client: token:alice. Retry after 6 s.", or, for ``every_request``, "Rate limit
    exceeded (100 per 60 s) for client: token:alice. Retry after 0.6 s.", with ``data={"retry_after": 6.0}``.
    ``algorithm`` is any of the core's (``"gcra"`` by default); the other options are those of
    `RateLimitingMiddleware`.
    """

    def __init__(
        self,
        tools: Mapping[str, Rate] | None = None,
        *,
        prompts: Mapping[str, Rate] | None = None,
        resources: Mapping[str, Rate] | None = None,
        tool_costs: Mapping[str, int] | None = None,
        prompt_costs: Mapping[str, int] | None = None,
        resource_costs: Mapping[str, int] | None = None,
        every_request: Rate | None = None,
        get_client_id: ClientIdFunction | None = None,
        algorithm: str = "gcra",
        storage: str = "memory://",
        redis_url: str | None = None,
        key_prefix: str = "ferrolimit:mcp:",
        max_keys: int = 1_000_000,
        clock: FakeClock | None = None,
        **limiter_options: Any,
    ) -> None:
        self._tools = _Rules("tool", tools, tool_costs)
        self._prompts = _Rules("prompt", prompts, prompt_costs)
        self._resources = _Rules("resource", resources, resource_costs)
        self.every_request = (
            None if every_request is None else Quota(every_request) if isinstance(every_request, str) else every_request
        )
        self.get_client_id = get_client_id
        self._default_identity = ClientIdentity()
        for rules in (self._tools, self._prompts, self._resources):
            for name, rule in rules.rules():
                for quota in (rule.quota, self.every_request):
                    if quota is not None and rule.cost > quota.limit:
                        raise ValueError(
                            f"{rules.kind} {name!r} costs {rule.cost}, more than its limit {quota} allows in one go"
                        )
        # The core needs a default quota; every check below names its quota, so any will do.
        self.limiter = Limiter(
            self.every_request or Quota("1/s"),
            algorithm,
            _storage(storage, redis_url),
            key_prefix=key_prefix,
            max_keys=max_keys,
            clock=clock,
            **limiter_options,
        )

    async def _charge(self, context: MiddlewareContext[Any], rules: _Rules, name: str) -> None:
        """Charges a call to its own limit and to ``every_request``, in one decision: both or neither."""
        rule = rules.rule(name)
        every_request = self.every_request if self._takes_request_charge() else None
        if rule.quota is None and every_request is None:
            return
        client_id = await _client_id(self.get_client_id or self._default_identity, context)
        # every_request first: of two equally spent limits the decision names the first, and every_request is
        # charged whatever the call's own limit is charged, and more.
        limits: list[tuple[str, Quota | None]] = []
        if every_request is not None:
            limits.append((f"request:{client_id}", every_request))
        if rule.quota is not None:
            limits.append((f"{rules.kind}:{rule.bucket}:{client_id}", rule.quota))
        try:
            decision = await _check(self.limiter, limits, rule.cost)
        except CostExceedsLimitError:
            raise RateLimitError(
                f"{rules.kind.capitalize()} {name!r} costs {rule.cost}, more than its limit allows in one go"
            ) from None
        if decision.allowed:
            return
        # The decision is that of the limit that ran out (the longer wait if both did), at its position.
        if every_request is not None and decision.index == 0:
            raise _every_request_refusal(decision, client_id)
        retry_after = _retry_after_s(decision)
        raise RateLimitError(
            f"Rate limit exceeded for {rules.kind} {name!r} ({decision.limit} per {decision.window:g} s) "
            f"for client: {client_id}. Retry after {retry_after:g} s.",
            retry_after=retry_after,
        )

    def _takes_request_charge(self) -> bool:
        """Whether the call now in a typed hook is to be charged to ``every_request`` there (and so not by
        ``on_request``): yes, once per request, when there is an ``every_request`` limit."""
        if self.every_request is None:
            return False
        charge = _request_charge.get()
        if charge is None or charge.owner is not self:
            return True  # the hook runs without this middleware's on_request around it
        if charge.taken:
            return False
        charge.taken = True
        return True

    async def _charge_request(self, context: MiddlewareContext[Any]) -> None:
        """Charges a request to ``every_request`` alone."""
        assert self.every_request is not None
        client_id = await _client_id(self.get_client_id or self._default_identity, context)
        decision = await _check(self.limiter, ((f"request:{client_id}", self.every_request),))
        if not decision.allowed:
            raise _every_request_refusal(decision, client_id)

    async def on_request(
        self,
        context: MiddlewareContext[mt.Request[Any, Any]],
        call_next: CallNext[mt.Request[Any, Any], Any],
    ) -> Any:
        if self.every_request is None:
            return await call_next(context)
        if context.method not in _COMPONENT_METHODS:
            await self._charge_request(context)
            return await call_next(context)
        # A tool call, prompt or resource read is charged by its typed hook, with its own limit, in one
        # decision. FastMCP runs that hook only for a request that reaches its handler: one that fails before
        # it (no tool name, malformed params) comes through on_request alone, after failing, and call_next
        # re-raises that failure. Such a request is charged here, so that every request is charged once.
        charge = _RequestCharge(self)
        token = _request_charge.set(charge)
        try:
            result = await call_next(context)
        except Exception:
            if not charge.taken:
                await self._charge_request(context)  # a refusal takes the place of the failure
            raise
        finally:
            _request_charge.reset(token)
        if not charge.taken:
            await self._charge_request(context)
        return result

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        await self._charge(context, self._tools, context.message.name)
        return await call_next(context)

    async def on_get_prompt(
        self,
        context: MiddlewareContext[mt.GetPromptRequestParams],
        call_next: CallNext[mt.GetPromptRequestParams, PromptResult],
    ) -> PromptResult:
        await self._charge(context, self._prompts, context.message.name)
        return await call_next(context)

    async def on_read_resource(
        self,
        context: MiddlewareContext[mt.ReadResourceRequestParams],
        call_next: CallNext[mt.ReadResourceRequestParams, ResourceResult],
    ) -> ResourceResult:
        await self._charge(context, self._resources, str(context.message.uri))
        return await super().on_read_resource(context, call_next)
