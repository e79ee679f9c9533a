"""Rate limiting for any ASGI app (Starlette, FastAPI): a pure ASGI middleware and the engine it shares with
``ferrolimit.fastapi``.

Everything a response carries is computed in Rust (the decision, the header values, the 429 body); this
module reads the client from the scope, calls the limiter once per request and writes the result.
"""

from __future__ import annotations

import enum
import inspect
import json
import logging
import math
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from ferrolimit._core import (
    _SCOPE_ENGINE,
    _SCOPE_PENDING,
    Charge,
    Counts,
    Decision,
    FakeClock,
    HeaderRenderer,
    Limiter,
    Quota,
    attach,
    decision_from,
    denied_body,
    exceeded_detail,
    retry_after_s,
)
from ferrolimit.keys import ClientIdentifier, IPSet

__all__ = [
    "Algorithm",
    "BackendLimiter",
    "BucketConfig",
    "HeaderConfig",
    "RateLimitExceeded",
    "RateLimitMiddleware",
    "WebSocketRateLimit",
]

logger = logging.getLogger("ferrolimit")

Rate: TypeAlias = str | Quota
KeyFunc: TypeAlias = Callable[[Request], str | Awaitable[str | None] | None]
ConnectionKeyFunc: TypeAlias = Callable[[HTTPConnection], str | Awaitable[str | None] | None]

_PENDING = _SCOPE_PENDING
_ENGINE = _SCOPE_ENGINE
_JSON = (b"content-type", b"application/json")
# The native limiter's own rate when it has none to use: every check names its rates.
_UNUSED_RATE = "1/s"


if sys.version_info >= (3, 11):
    from enum import StrEnum as _StrEnum
else:  # pragma: no cover

    class _StrEnum(str, enum.Enum):
        pass


class Algorithm(_StrEnum):
    """fastlimit's algorithm names, plus the others ferrolimit has.

    ``SLIDING_WINDOW`` is fastlimit's: it remembers every request's time (``"sliding_window_log"``);
    ``SLIDING_WINDOW_COUNTER`` is the cheaper weighted two-window estimate.
    """

    SLIDING_WINDOW = "sliding_window"
    FIXED_WINDOW = "fixed_window"
    TOKEN_BUCKET = "token_bucket"
    GCRA = "gcra"
    LEAKY_BUCKET = "leaky_bucket"
    SLIDING_WINDOW_COUNTER = "sliding_window_counter"
    SLIDING_WINDOW_LOG = "sliding_window_log"

    def __str__(self) -> str:
        return self.value

    @property
    def native(self) -> str:
        """The core's name for this algorithm."""
        return "sliding_window_log" if self is Algorithm.SLIDING_WINDOW else self.value


def native_algorithm(algorithm: Algorithm | str) -> str:
    """The core's name for ``algorithm``: an ``Algorithm`` or a name (``"sliding_window"`` as fastlimit means it)."""
    if isinstance(algorithm, Algorithm):
        return algorithm.native
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be an Algorithm or a str such as 'gcra', not {type(algorithm).__name__}")
    try:
        return Algorithm(algorithm.strip().lower().replace("-", "_")).native
    except ValueError:
        return algorithm  # the core names the valid ones when it refuses


@dataclass
class HeaderConfig:
    """Names of the rate-limit response fields; a name of ``None`` (or ``""``) leaves that field out.

    ``enabled=False`` sends none. ``ietf=True`` adds the IETF draft fields ``RateLimit-Policy``
    (``"name";q=10;w=60``) and ``RateLimit`` (``"name";r=7;t=6``) under the names ``policy`` and ``ratelimit``.
    """

    enabled: bool = True
    limit: str | None = "X-RateLimit-Limit"
    remaining: str | None = "X-RateLimit-Remaining"
    reset: str | None = "X-RateLimit-Reset"
    retry_after: str | None = "Retry-After"
    ietf: bool = False
    policy: str | None = "RateLimit-Policy"
    ratelimit: str | None = "RateLimit"

    def renderer(self) -> HeaderRenderer:
        """The native renderer for these names (raises ValueError for a name that is not a field name)."""
        if not self.enabled:
            return HeaderRenderer(limit=None, remaining=None, reset=None, retry_after=None)
        return HeaderRenderer(
            limit=self.limit,
            remaining=self.remaining,
            reset=self.reset,
            retry_after=self.retry_after,
            policy=self.policy if self.ietf else None,
            ratelimit=self.ratelimit if self.ietf else None,
        )


class RateLimitExceeded(HTTPException):
    """A request was refused. ``retry_after`` is whole seconds (rounded up, at least 1); ``decision`` is the
    limiter's ``Decision``. fastlimit's ``(retry_after, detail, limit, reset_ms)`` are kept, and as there the
    exception reads as its detail (``str(exc)``, ``exc.args``), not as an ``HTTPException``'s ``"429: ..."``."""

    def __init__(
        self,
        retry_after: int,
        detail: str = "Too many requests.",
        limit: int | None = None,
        reset_ms: int | None = None,
        *,
        decision: Decision | None = None,
        name: str | None = None,
    ) -> None:
        # Retry-After rides on the exception too, for any HTTPException handler that answers instead of ours.
        super().__init__(status_code=429, detail=detail, headers={"Retry-After": str(max(1, math.ceil(retry_after)))})
        self.args = (detail,)
        self.retry_after = retry_after
        self.limit = limit
        self.reset_ms = reset_ms
        self.decision = decision
        self.name = name

    def __str__(self) -> str:
        return str(self.detail)

    def __reduce__(self) -> tuple[Any, ...]:
        # `args` is `(detail,)`, which is no way to call `__init__`: copy and pickle rebuild from the fields.
        return type(self), (self.retry_after, self.detail, self.limit, self.reset_ms), self.__dict__

    @classmethod
    def from_decision(cls, decision: Decision, name: str | None = None) -> RateLimitExceeded:
        return cls(
            retry_after_s(decision),
            exceeded_detail(decision),
            decision.limit,
            int(decision.reset_at * 1000),
            decision=decision,
            name=name,
        )


ErrorHandler: TypeAlias = Callable[[Request, RateLimitExceeded], Response | Awaitable[Response]]


# A limit of one request: (key, rate), charged the call's cost, or (key, rate, cost), charged its own.
_Limit: TypeAlias = tuple[str, Quota | None] | tuple[str, Quota | None, int]


async def _decide(limiter: Limiter | BackendLimiter, limits: Sequence[_Limit], cost: int) -> Decision:
    """The one place this layer asks the limiter: every limit of a request in one atomic call, awaited when the
    store is remote (Redis, a custom backend) and called directly in memory, where it never blocks. A rate of
    None is the limiter's own."""
    if limiter.is_remote:
        return await limiter.hit_many_async(limits, cost)
    if len(limits) == 1 and len(limits[0]) == 2 and limits[0][1] is None:
        return limiter.hit(limits[0][0], cost)  # the same check, without building the list natively
    return limiter.hit_many(limits, cost)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _tighter(new: Decision, old: Decision) -> bool:
    """Whether ``new`` constrains the client more than ``old`` (the core's order: a denial, a longer wait,
    fewer left, a later reset)."""
    if new.allowed != old.allowed:
        return not new.allowed
    if not new.allowed:
        return new.retry_after > old.retry_after
    return (new.remaining, -new.reset_after) < (old.remaining, -old.reset_after)


# The fields a response will carry are kept in the request's scope by the native `attach`: a `Pending` holding
# the tightest decision offered and its rendered fields (see `HeaderRenderer.offer`). It never holds `send`,
# which would tie the scope into a reference cycle through the server's request objects.


def _quota(rate: Rate | None, what: str) -> Quota | None:
    if rate is None or isinstance(rate, Quota):
        return rate
    if isinstance(rate, str):
        return Quota(rate)
    raise TypeError(f"{what} must be a rate string such as '10/min' or a Quota, not {type(rate).__name__}")


def _check_cost(cost: int, quotas: Iterable[Quota | None]) -> int:
    if isinstance(cost, bool) or not isinstance(cost, int):
        raise TypeError(f"cost must be a whole number, got {cost!r}")
    if cost < 1:
        raise ValueError(f"cost must be >= 1, got {cost}")
    for quota in quotas:
        if quota is not None and cost > quota.limit:
            raise ValueError(f"a cost of {cost} can never pass {quota}; a cost must be at most the smallest limit")
    return cost


@dataclass(frozen=True)
class BucketConfig:
    """fastlimit's ``BucketConfig``: ``limit`` requests per ``window_sec`` seconds (what a custom backend gets)."""

    window_sec: int
    limit: int

    def __post_init__(self) -> None:
        if self.window_sec <= 0:
            raise ValueError(f"window_sec must be positive, got {self.window_sec}")
        if self.limit <= 0:
            raise ValueError(f"limit must be positive, got {self.limit}")


class BackendLimiter:
    """Runs limits on a fastlimit-style backend: an object with
    ``async check_and_increment(key, bucket: BucketConfig, cost)`` returning ``allowed``, ``limit``,
    ``remaining``, ``reset_ms`` (epoch milliseconds) and ``retry_after_ms``.

    Such a backend sees one rate at a time, so several rates are not all-or-nothing there: a request refused
    by one rate has already been counted by the rates before it. Use ferrolimit's stores for that.
    """

    is_remote = True

    def __init__(self, backend: Any, *, clock: FakeClock | None = None) -> None:
        if not callable(getattr(backend, "check_and_increment", None)):
            raise TypeError(
                "backend must be a ferrolimit.Limiter or have async check_and_increment(key, bucket, cost), "
                f"not {type(backend).__name__}"
            )
        self.backend = backend
        self._now = clock.now if clock is not None else time.time

    async def hit_many_async(self, limits: Sequence[_Limit], cost: int = 1) -> Decision:
        tightest: Decision | None = None
        for index, (key, quota, *own_cost) in enumerate(limits):
            if quota is None:
                raise ValueError("a custom backend needs every limit's rate")
            # The backend takes a cost per call, so a limit with its own cost is simply asked for that cost.
            limit_cost = own_cost[0] if own_cost else cost
            for limit, window in quota.rates:
                bucket = BucketConfig(max(1, round(window)), limit)
                result = await self.backend.check_and_increment(key, bucket, limit_cost)
                now = self._now()
                decision = decision_from(
                    allowed=bool(result.allowed),
                    limit=int(result.limit),
                    remaining=max(0, int(result.remaining)),
                    reset_after=max(0.0, result.reset_ms / 1000 - now),
                    retry_after=max(0.0, getattr(result, "retry_after_ms", 0) / 1000),
                    window=window,
                    now=now,
                    index=index,
                )
                if tightest is None or _tighter(decision, tightest):
                    tightest = decision
                if not decision.allowed:
                    return decision
        assert tightest is not None, "at least one limit"
        return tightest

    def hit_many(self, limits: Sequence[_Limit], cost: int = 1) -> Decision:
        raise TypeError("a custom backend is async: use hit_many_async")

    def hit(self, key: str, cost: int = 1) -> Decision:
        raise TypeError("a custom backend is async: use hit_many_async")


class _Engine:
    """Configuration and state shared by every check of one limiter: the native limiter, client resolution,
    exemptions, header names, dry run, error handler and per-name counts."""

    def __init__(
        self,
        *,
        algorithm: Algorithm | str = Algorithm.SLIDING_WINDOW,
        storage: str = "memory://",
        backend: Limiter | Any = None,
        key_prefix: str = "ferrolimit",
        headers: HeaderConfig | None = None,
        exempt_ips: Iterable[str] | None = None,
        trusted_proxies: int | Sequence[str] = 0,
        ipv6_prefix: int = 64,
        proxy_header: str = "x-forwarded-for",
        dry_run: bool = False,
        error_handler: ErrorHandler | None = None,
        clock: FakeClock | None = None,
        max_keys: int = 1_000_000,
        rate: Quota | None = None,
    ) -> None:
        self.limiter: Limiter | BackendLimiter
        if isinstance(backend, Limiter):
            self.limiter = backend
        elif backend is not None:
            self.limiter = BackendLimiter(backend, clock=clock)
        else:
            if not isinstance(key_prefix, str):
                raise TypeError(f"key_prefix must be a str, not {type(key_prefix).__name__}")
            self.limiter = Limiter(
                rate or _UNUSED_RATE,
                native_algorithm(algorithm),
                storage,
                clock=clock,
                max_keys=max_keys,
                key_prefix=f"{key_prefix}:" if key_prefix else "",
            )
        self.key_prefix = key_prefix
        self.header_config = headers if headers is not None else HeaderConfig()
        self.renderer = self.header_config.renderer()
        self.identifier = ClientIdentifier(trusted_proxies, ipv6_prefix, proxy_header=proxy_header)
        self.direct_peers = not self.identifier.reads_headers
        self.exempt = IPSet(exempt_ips or ())
        self.has_exempt = bool(self.exempt)
        self.exempt_native = self.exempt.native() if self.has_exempt else None
        self.dry_run = bool(dry_run)
        if error_handler is not None and not callable(error_handler):
            raise TypeError("error_handler must be a callable (request, exc) -> Response, sync or async")
        self.error_handler = error_handler
        self._counts: dict[str, Counts] = {}

    def counts(self, name: str) -> Counts:
        counts = self._counts.get(name)
        if counts is None:
            counts = self._counts.setdefault(name, Counts())
        return counts

    def stats(self) -> dict[str, dict[str, int]]:
        """``{limit name: {"allowed": n, "limited": n, "dry_run_limited": n}}`` since start; never per client."""
        return {name: counts.as_dict() for name, counts in self._counts.items()}

    def client(self, scope: Scope) -> tuple[str | None, str]:
        """(resolved client address or None, the client's key)."""
        client = scope.get("client")
        return self.identifier.resolve(client[0] if client else None, scope.get("headers") or ())

    def is_exempt(self, address: str | None) -> bool:
        return self.has_exempt and address is not None and address in self.exempt

    def settle(self, decision: Decision, counts: Counts, dry_run: bool, name: str, key: str) -> bool:
        """Counts the outcome; True when the request must be refused."""
        if decision.allowed:
            counts.add(allowed=1)
            return False
        if dry_run:
            counts.add(dry_run_limited=1)
            logger.warning(
                "ferrolimit [dry run]: would have limited %r for %s (%s); retry after %ss",
                name,
                key,
                exceeded_detail(decision),
                retry_after_s(decision),
            )
            return False
        counts.add(limited=1)
        return True

    async def denial_response(self, connection: HTTPConnection, exc: RateLimitExceeded) -> Response:
        """The app's ``error_handler`` response, or the JSON 429."""
        if self.error_handler is not None:
            request = connection if isinstance(connection, Request) else Request(connection.scope)
            response = await _maybe_await(self.error_handler(request, exc))
            if not isinstance(response, Response):
                raise TypeError(f"error_handler must return a Response, got {type(response).__name__}")
            return response
        if exc.decision is not None:
            return Response(denied_body(exc.decision), status_code=429, media_type="application/json")
        # Raised by the app itself, as fastlimit lets it: its own numbers.
        retry_after = max(1, math.ceil(exc.retry_after))
        body = json.dumps({"detail": exc.detail, "retry_after": retry_after}, separators=(",", ":"))
        return Response(body, 429, self._raised_fields(exc, retry_after), media_type="application/json")

    def _raised_fields(self, exc: RateLimitExceeded, retry_after: int) -> dict[str, str]:
        """The fields of a 429 for a `RateLimitExceeded` the app raised: ``Retry-After``, and the
        ``X-RateLimit-*`` ones when it gave a limit and a reset time."""
        config = self.header_config
        if not config.enabled:
            return {}
        fields: dict[str, str] = {}
        if exc.limit is not None and exc.reset_ms is not None:
            if config.limit:
                fields[config.limit] = str(exc.limit)
            if config.remaining:
                fields[config.remaining] = "0"
            if config.reset:
                fields[config.reset] = str(math.ceil(exc.reset_ms / 1000))
        if config.retry_after:
            fields[config.retry_after] = str(retry_after)
        return fields


def _compile_path(pattern: str) -> Callable[[str], bool]:
    """``/login`` exactly, ``/api/*`` as a prefix, ``/users/{id}`` (``{rest:path}`` spans segments) as a template,
    ``/users/{id}/*`` as a template followed by anything."""
    if not pattern.startswith("/"):
        raise ValueError(f"path rule {pattern!r} must start with '/', e.g. '/login', '/api/*' or '/users/{{id}}'")
    prefix = pattern.endswith("*")
    if prefix and "{" not in pattern:
        start = pattern[:-1]
        return lambda path: path.startswith(start)
    if "{" in pattern:
        regex = ""
        for literal, name, converter in re.findall(r"([^{]*)(?:\{(\w+)(?::(\w+))?\})?", pattern.rstrip("*")):
            regex += re.escape(literal)
            if name:
                regex += ".+" if converter == "path" else "[^/]+"
        compiled = re.compile(regex + (".*" if prefix else "$"))  # "/users/{id}/*": a template, then anything
        return lambda path: compiled.match(path) is not None
    return lambda path: path == pattern


def _route_path(scope: Scope) -> str:
    """The path the app routes on, as Starlette's router reads it: ``scope["path"]`` without the ``root_path``
    that a server (``uvicorn --root-path``) or a ``Mount`` put before it."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        rest = path[len(root_path) :]
        if not rest:
            return "/"
        if rest[0] == "/":
            return rest
    return path


def _is_default(value: object, default: object) -> bool:
    """Whether an option was left at its default: the default itself, or an equal value of its very type (so
    ``algorithm="gcra"``, a str where the default is ``Algorithm.GCRA``, counts as given)."""
    return value is default or (type(value) is type(default) and value == default)


def _specificity(pattern: str) -> tuple[int, int]:
    """Sorts patterns most specific first: the longer literal start first, a template before a prefix."""
    literal = pattern.split("{", 1)[0]
    return (-len(literal.rstrip("*")), 1 if pattern.endswith("*") else 0)


@dataclass(frozen=True)
class _Rule:
    name: str
    quota: Quota
    matches: Callable[[str], bool] | None  # None: every path


class RateLimitMiddleware:
    """Pure ASGI rate limiting for a whole app, keyed by client address.

    ``limit`` applies to every request (``None``: no app-wide limit); ``rules`` maps paths to rates that apply
    as well: ``{"/login": "5/min", "/api/*": "100/min", "/users/{id}": "20/min", "/health": None}`` (``None``
    exempts the path from every limit). A path takes the rule of its exact path, else of the most specific
    pattern that matches it (the longest literal start; a template before a prefix). Paths are those the app
    routes on: without the ``root_path`` of ``uvicorn --root-path`` or of a ``Mount``. Every response carries
    the rate-limit headers of the tightest limit; a refused request gets a 429 with ``Retry-After`` and
    ``{"detail": ..., "retry_after": n}``, or what ``error_handler(request, exc)`` returns. WebSocket
    connections are checked before they are accepted.

    ``key(request)`` (sync or async) keys by something else than the client address when it returns a str.
    Pass ``limiter=`` (a ``FastLimit``) to share its configuration and counts; the options that configure a
    limiter (``algorithm``, ``storage``, ``headers``, ``exempt_ips``, ``trusted_proxies``, ...) then raise
    TypeError.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: Rate | None = None,
        *,
        rules: Mapping[str, Rate | None] | None = None,
        name: str = "default",
        cost: int = 1,
        key: ConnectionKeyFunc | None = None,
        websocket: bool = True,
        limiter: _Engine | None = None,
        algorithm: Algorithm | str = Algorithm.GCRA,
        storage: str = "memory://",
        backend: Limiter | Any = None,
        key_prefix: str = "ferrolimit",
        headers: HeaderConfig | None = None,
        exempt_ips: Iterable[str] | None = None,
        trusted_proxies: int | Sequence[str] = 0,
        ipv6_prefix: int = 64,
        proxy_header: str = "x-forwarded-for",
        dry_run: bool = False,
        error_handler: ErrorHandler | None = None,
        clock: FakeClock | None = None,
        max_keys: int = 1_000_000,
    ) -> None:
        self.app = app
        options = {
            "algorithm": algorithm,
            "storage": storage,
            "backend": backend,
            "key_prefix": key_prefix,
            "headers": headers,
            "exempt_ips": exempt_ips,
            "trusted_proxies": trusted_proxies,
            "ipv6_prefix": ipv6_prefix,
            "proxy_header": proxy_header,
            "dry_run": dry_run,
            "error_handler": error_handler,
            "clock": clock,
            "max_keys": max_keys,
        }
        if limiter is not None:
            if not isinstance(limiter, _Engine):
                raise TypeError(f"limiter must be a FastLimit, not {type(limiter).__name__}")
            defaults = inspect.signature(RateLimitMiddleware.__init__).parameters
            given = [name for name, value in options.items() if not _is_default(value, defaults[name].default)]
            if given:
                raise TypeError(
                    f"RateLimitMiddleware(limiter=...) takes its configuration from the limiter; "
                    f"set {', '.join(given)} on the FastLimit instead"
                )
            self.engine = limiter
        else:
            self.engine = _Engine(**options, rate=_quota(limit, "limit"))  # type: ignore[arg-type]
        default = _quota(limit, "limit")
        self._default = _Rule(name, default, None) if default is not None else None
        self._exact: dict[str, _Rule | None] = {}
        self._patterns: list[tuple[Callable[[str], bool], _Rule | None]] = []
        # The most specific pattern that matches a path applies: "/api/public/*" before "/api/*".
        for pattern, rate in sorted((rules or {}).items(), key=lambda item: _specificity(item[0])):
            quota = _quota(rate, f"the rate of {pattern!r}")
            rule = _Rule(pattern, quota, None) if quota is not None else None
            matcher = _compile_path(pattern)
            if pattern.endswith("*") or "{" in pattern:
                self._patterns.append((matcher, rule))
            else:
                self._exact[pattern] = rule
        self._has_rules = bool(self._exact or self._patterns)
        self._default_only = [self._default] if self._default is not None else []
        self._cost = _check_cost(cost, [rule.quota for rule in self._all_rules()])
        self._key = key
        self._websocket = websocket
        self._counts = {rule.name: self.engine.counts(rule.name) for rule in self._all_rules()}
        engine = self.engine
        # One app-wide limit by client address: the common case.
        one_limit = self._default is not None and not self._has_rules and key is None
        self._fast = self._default if one_limit and not engine.has_exempt and not engine.dry_run else None
        self._fast_counts = self._counts[name] if one_limit else Counts()
        own_rate = isinstance(engine.limiter, Limiter) and engine.limiter.quota == default
        self._fast_rate = None if own_rate else default
        self._fast_prefix = f"{name}:"
        # The common case in one native call (exemptions and dry run included): a memory limiter of ferrolimit's
        # own (a subclass may override hit(): it is asked through its methods) at its own rate.
        self._admit = (
            Charge(
                engine.limiter,
                self._fast_prefix,
                None,
                self._cost,
                engine.renderer,
                name,
                self._fast_counts,
                engine.identifier.native,
                engine.exempt_native,
                engine.dry_run,
            ).admit
            if one_limit and own_rate and type(engine.limiter) is Limiter and not engine.limiter.is_remote
            else None
        )

    def _all_rules(self) -> list[_Rule]:
        rules = [self._default] + list(self._exact.values()) + [rule for _, rule in self._patterns]
        return [rule for rule in rules if rule is not None]

    def stats(self) -> dict[str, dict[str, int]]:
        """``{limit name: {"allowed": n, "limited": n, "dry_run_limited": n}}``."""
        return self.engine.stats()

    @property
    def limiter(self) -> Limiter | BackendLimiter:
        """The limiter (a native one's ``len()`` is the number of keys held)."""
        return self.engine.limiter

    def _rules_for(self, path: str) -> list[_Rule] | None:
        """The rules that apply to ``path``; None when the path is exempt."""
        if not self._has_rules:
            return self._default_only
        path_rule: _Rule | None
        if path in self._exact:
            path_rule = self._exact[path]
            if path_rule is None:
                return None
        else:
            for matches, rule in self._patterns:
                if matches(path):
                    if rule is None:
                        return None
                    path_rule = rule
                    break
            else:
                path_rule = None
        # The path's own rule first: of equally tight limits a decision names the first, and the path's is the
        # more specific name for logs, counts and the IETF fields.
        rules = [path_rule] if path_rule is not None else []
        if self._default is not None:
            rules.append(self._default)
        return rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        admit = self._admit
        if admit is not None and scope["type"] == "http":
            # The common case: one native call resolves the client, decides, counts and wraps `send`.
            admitted = admit(scope, send)
            if admitted is not None and not isinstance(admitted, tuple):
                await self.app(scope, receive, admitted)
                return
            await self._serve(scope, receive, send, admitted)
            return
        await self._serve(scope, receive, send, None)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, admitted: tuple[Decision, Send, str] | None
    ) -> None:
        """Every request but the common allowed one; `admitted` is the native refusal (or dry-run would-be
        refusal) when there was one."""
        scope_type = scope["type"]
        if scope_type != "http" and (scope_type != "websocket" or not self._websocket):
            await self.app(scope, receive, send)
            return
        engine = self.engine
        fast = self._fast
        if admitted is not None:  # the client resolved, not exempt, and refused natively (or would be: dry run)
            decision, send, client_key = admitted
            rules = self._default_only
        elif fast is not None and scope_type == "http":
            # One app-wide limit by address, no exemptions, not decided natively: in a straight line.
            client = scope.get("client")
            peer = client[0] if client else None
            if peer and ":" not in peer and engine.direct_peers:
                client_key = peer
            else:
                client_key = engine.client(scope)[1]
            limits = [(self._fast_prefix + client_key, self._fast_rate)]
            decision = await _decide(engine.limiter, limits, self._cost)
            if decision.allowed:
                self._fast_counts.add(allowed=1)
                pending, send = attach(scope, send)
                engine.renderer.offer(pending, decision, fast.name)
                await self.app(scope, receive, send)
                return
            rules = self._default_only
        else:
            matched = self._rules_for(_route_path(scope))
            if not matched:
                await self.app(scope, receive, send)
                return
            address, client_key = engine.client(scope)
            if engine.has_exempt and engine.is_exempt(address):
                await self.app(scope, receive, send)
                return
            if self._key is not None:
                custom = await _maybe_await(
                    self._key(Request(scope) if scope_type == "http" else WebSocket(scope, receive, send))
                )
                if custom is not None:
                    client_key = f"key:{custom}"
            rules = matched
            limits = [(f"{rule.name}:{client_key}", rule.quota) for rule in rules]
            decision = await _decide(engine.limiter, limits, self._cost)
        rule = rules[decision.index] if 0 <= decision.index < len(rules) else rules[0]
        refuse = engine.settle(decision, self._counts[rule.name], engine.dry_run, rule.name, client_key)
        pending, send = attach(scope, send)
        if decision.allowed or refuse:
            engine.renderer.offer(pending, decision, rule.name)
        if not refuse:
            await self.app(scope, receive, send)
        elif scope_type == "http":
            exc = RateLimitExceeded.from_decision(decision, rule.name)
            response = await engine.denial_response(Request(scope, receive), exc)
            await response(scope, receive, send)
        else:
            await _refuse_websocket(scope, receive, send, decision)


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send, decision: Decision) -> None:
    """Refuses a WebSocket before accepting it: an HTTP 429 where the server supports it, else close 1008."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = denied_body(decision)
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 429,
                "headers": [_JSON, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": exceeded_detail(decision)})


class WebSocketRateLimit:
    """Limits messages on open WebSockets, per client address (or ``key(websocket)``)::

    per_client = WebSocketRateLimit("5/s")

    async for text in websocket.iter_text():
        decision = await per_client.hit(websocket)
        if not decision.allowed:
            await websocket.send_json({"error": "slow down", "retry_after": decision.retry_after})
            continue
    """

    def __init__(
        self,
        rate: Rate,
        *,
        name: str = "websocket",
        key: Callable[[WebSocket], str | Awaitable[str | None] | None] | None = None,
        limiter: _Engine | None = None,
        algorithm: Algorithm | str = Algorithm.GCRA,
        trusted_proxies: int | Sequence[str] = 0,
        ipv6_prefix: int = 64,
        clock: FakeClock | None = None,
        max_keys: int = 1_000_000,
    ) -> None:
        quota = _quota(rate, "rate")
        assert quota is not None
        self.quota = quota
        self.name = name
        self._key = key
        self.engine = limiter or _Engine(
            algorithm=algorithm,
            trusted_proxies=trusted_proxies,
            ipv6_prefix=ipv6_prefix,
            clock=clock,
            max_keys=max_keys,
        )
        self._counts = self.engine.counts(name)

    async def hit(self, websocket: WebSocket, cost: int = 1) -> Decision:
        """Charges one message (or ``cost`` units); a refused message takes nothing."""
        client_key = self.engine.client(websocket.scope)[1]
        if self._key is not None:
            custom = await _maybe_await(self._key(websocket))
            if custom is not None:
                client_key = f"key:{custom}"
        decision = await _decide(self.engine.limiter, [(f"{self.name}:{client_key}", self.quota)], cost)
        self.engine.settle(decision, self._counts, False, self.name, client_key)
        return decision

    __call__ = hit
