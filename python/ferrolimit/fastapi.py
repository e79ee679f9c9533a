"""FastAPI: fastlimit's API (``FastLimit``, ``init_app``, ``rate_limit``, ``@limit``, ``rule``) over the native core.

Differences from fastlimit, on purpose (each is a fastlimit bug or gap):

- ``trusted_proxies`` defaults to 0: ``X-Forwarded-For`` is read only from configured proxies, from the right.
  (fastlimit trusts any sender's header by default and picks one entry too far left.)
- Every algorithm is honoured by the in-memory store; the memory store is bounded.
- Unnamed limits are keyed by route template (``GET /users/{id}``), so they behave the same in every worker
  and on every restart; ``name=``/``scope=`` shares one quota between routes.
- Headers are on every response of a limited route: responses the handler returns itself, streaming
  responses, and ``HTTPException`` raised after the check. ``Retry-After`` and ``X-RateLimit-Reset`` are
  rounded up, never down.
- ``user_id_func``, ``key=`` and ``error_handler`` may be sync or async.
- An anonymous request on a ``user=``-only limit is limited by client address at the user rate instead
  of failing with a 500; sync ``def`` handlers work under ``@limit``.
- Limited routes document their 429 in the OpenAPI schema; ``stats()`` counts outcomes per limit name.
"""

import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from fastapi import Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.exceptions import WebSocketException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Scope

from ferrolimit._core import (
    Charge,
    Counts,
    Decision,
    FakeClock,
    Limiter,
    Pending,
    Quota,
    RouteCharges,
    exceeded_detail,
    header_layer,
)
from ferrolimit.keys import matched_route, mount_path
from ferrolimit.starlette import (
    _ENGINE,
    _PENDING,
    Algorithm,
    BucketConfig,
    ErrorHandler,
    HeaderConfig,
    KeyFunc,
    Rate,
    RateLimitExceeded,
    _check_cost,
    _decide,
    _Engine,
    _maybe_await,
    _quota,
)

__all__ = [
    "Algorithm",
    "BucketConfig",
    "FastLimit",
    "FastLimitNotInitialized",
    "HeaderConfig",
    "MissingUserID",
    "RateLimit",
    "RateLimitExceeded",
    "RateLimitRule",
    "get_limiter",
    "limit",
    "rate_limit",
    "rule",
]

logger = logging.getLogger("ferrolimit")

_CHECKED = "ferrolimit.checked"
# The app.state attribute holding the one-item list whose limiter the header layer and the 429 handler serve.
_HOLDER = "_ferrolimit_holder"
# A plain limit's check on one route: (key prefix, rate, cost, counts, limit name, whether the store is remote).
_Plan = tuple[str, Quota, int, Counts, str, bool]
# The same check made natively, the client resolved and exemptions checked there too (memory store): (the native
# charge, counts, limit name, whether the limit is a dry run).
_Direct = tuple[Charge, Counts, str, bool]

UserIdFunc = Callable[[Request], "str | int | Awaitable[str | int | None] | None"]
F = TypeVar("F", bound=Callable[..., Any])


class FastLimitNotInitialized(RuntimeError):
    """A limit ran on an app whose ``FastLimit`` was never attached with ``init_app(app)``."""

    def __init__(self) -> None:
        super().__init__("ferrolimit is not initialized on this app. Did you forget to call limiter.init_app(app)?")


class MissingUserID(RuntimeError):
    """A ``user=``-only limit ran, but ``FastLimit`` has no ``user_id_func`` to name the user."""

    def __init__(self, rule_name: str) -> None:
        super().__init__(
            f"Rule {rule_name!r} has a user limit but FastLimit has no user_id_func configured. "
            "Pass user_id_func=lambda request: ... when creating FastLimit()."
        )


class FastLimit(_Engine):
    """The limiter of a FastAPI app; attach it with ``init_app(app)``.

    ``redis_url`` selects the Redis store (``storage=``, e.g. ``"memory://"``, is the general form);
    ``backend`` is a ready ``ferrolimit.Limiter`` to use instead, or a fastlimit-style backend (an object with
    ``async check_and_increment(key, bucket, cost)``; see ``BackendLimiter``). ``algorithm`` is an ``Algorithm`` or its
    name. ``user_id_func(request)`` (sync or async) names the caller for ``user=`` limits; a falsy result
    means anonymous. ``exempt_ips`` takes addresses and networks. ``trusted_proxies`` is a hop count or a
    list of proxy addresses/networks (see ``ferrolimit.keys.ClientIdentifier``). ``dry_run`` refuses
    nothing and logs and counts what it would have refused. ``error_handler(request, exc)`` (sync or
    async) returns the response of a refused request. ``clock`` is a ``FakeClock`` for tests.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        backend: Limiter | Any = None,
        algorithm: Algorithm | str = Algorithm.SLIDING_WINDOW,
        user_id_func: UserIdFunc | None = None,
        headers: HeaderConfig | None = None,
        key_prefix: str = "ferrolimit",
        exempt_ips: Iterable[str] | None = None,
        dry_run: bool = False,
        error_handler: ErrorHandler | None = None,
        trusted_proxies: int | Sequence[str] = 0,
        ipv6_prefix: int = 64,
        proxy_header: str = "x-forwarded-for",
        storage: str | None = None,
        clock: FakeClock | None = None,
        max_keys: int = 1_000_000,
    ) -> None:
        if redis_url is not None and storage is not None:
            raise ValueError("pass either redis_url or storage, not both")
        super().__init__(
            algorithm=algorithm,
            storage=redis_url or storage or "memory://",
            backend=backend,
            key_prefix=key_prefix,
            headers=headers,
            exempt_ips=exempt_ips,
            trusted_proxies=trusted_proxies,
            ipv6_prefix=ipv6_prefix,
            proxy_header=proxy_header,
            dry_run=dry_run,
            error_handler=error_handler,
            clock=clock,
            max_keys=max_keys,
        )
        if user_id_func is not None and not callable(user_id_func):
            raise TypeError("user_id_func must be a callable taking the request")
        self.user_id_func = user_id_func
        # By route (its id, with the route kept to confirm it) and the path of the mounts it was reached through.
        self._route_names: dict[int, tuple[object, str, str]] = {}
        self._route_limits: dict[int, tuple[object, str, tuple[tuple[RateLimit, ...], str]]] = {}

    def init_app(self, app: FastAPI) -> None:
        """Attaches this limiter to ``app``: its 429 handler, the layer that writes headers on every response
        of a limited route, and the 429 in the OpenAPI schema of limited routes. Call it before the app starts.
        Called again on the same app (a test fixture making a fresh limiter, say), the new limiter replaces the
        old one, even after the app started."""
        _check_rates(app, self)
        app.state.fastlimit = self
        holder: list[FastLimit] | None = getattr(app.state, _HOLDER, None)
        if holder is not None:  # an earlier init_app installed the layer and the handler: both serve this one now
            holder[0] = self
            app.openapi_schema = None
        else:
            holder = [self]
            try:
                app.add_middleware(header_layer, holder=holder)
            except RuntimeError:
                logger.warning(
                    "ferrolimit: init_app was called after the app started (in its lifespan?), too late to install "
                    "the layer that writes the rate-limit headers and the handler that writes the 429: limits are "
                    "enforced, but a refused request gets FastAPI's own HTTPException response (with Retry-After "
                    "only; error_handler is not used), and allowed ones carry the headers only where the handler "
                    "returns no Response of its own. Call init_app right after creating the app."
                )
            else:
                setattr(app.state, _HOLDER, holder)
            app.add_exception_handler(RateLimitExceeded, _handle_exceeded)  # type: ignore[arg-type]
            _document_429(app)
            _check_rates_on_startup(app)
        if self.dry_run:
            logger.warning("ferrolimit is running in DRY RUN mode: limits are logged and counted, not enforced.")

    async def _exception_handler(self, request: Request, exc: RateLimitExceeded) -> Response:
        response = await self.denial_response(request, exc)
        if request.scope.get(_PENDING) is None and exc.decision is not None:
            for name, value in self.renderer.render(exc.decision, exc.name or "default"):
                if name.decode() not in response.headers:
                    response.headers[name.decode()] = value.decode()
        return response

    def route_name(self, scope: Scope) -> str:
        """The name of an unnamed limit: the methods and template of the route (``GET /users/{id}``), after the
        path of the mounts it is under (``GET /v1/users/{id}`` in an app mounted at ``/v1``)."""
        route = matched_route(scope)
        if route is None:
            return "default"
        mount = mount_path(scope)
        cached = self._route_names.get(id(route))
        if cached is not None and cached[0] is route and cached[1] == mount:
            return cached[2]
        template = getattr(route, "path_format", None) or getattr(route, "path", "") or "default"
        methods = getattr(route, "methods", None)
        template = f"{mount}{template}"
        name = f"{','.join(sorted(methods))} {template}" if methods else template
        self._route_names[id(route)] = (route, mount, name)
        return name

    def route_limits(self, scope: Scope) -> "tuple[tuple[RateLimit, ...], str]":
        """Every rate-limit dependency of the matched route (app, router, route and nested ones), in order, and
        the route's name for unnamed limits."""
        route = matched_route(scope)
        mount = mount_path(scope)
        cached = self._route_limits.get(id(route))
        if cached is not None and cached[0] is route and cached[1] == mount:
            return cached[2]
        found: list[RateLimit] = []
        dependant = getattr(route, "dependant", None)
        if isinstance(dependant, Dependant):
            _collect(dependant, found)
        info = (tuple(found), self.route_name(scope))
        if route is not None:
            self._route_limits[id(route)] = (route, mount, info)
        return info

    async def check(self, request: Request, response: Response, rule: "RateLimitRule") -> None:
        """Applies ``rule`` to ``request`` as the dependency does (fastlimit's ``check``)."""
        await RateLimit(rule)(request, response)


@dataclass(frozen=True)
class RateLimitRule:
    """A limit: ``ip`` for anonymous callers (or by ``key``), ``user`` for callers ``user_id_func`` names.
    The limits are ``Quota``s; fastlimit's ``BucketConfig(window_sec, limit)`` is taken too."""

    name: str | None
    ip_limit: Quota | BucketConfig | None = None
    user_limit: Quota | BucketConfig | None = None
    cost: int = 1
    key: KeyFunc | None = None
    dry_run: bool | None = None

    def __post_init__(self) -> None:
        for field in ("ip_limit", "user_limit"):
            value = getattr(self, field)
            if isinstance(value, BucketConfig):
                object.__setattr__(self, field, Quota.per(value.limit, value.window_sec))
            elif value is not None and not isinstance(value, Quota):
                raise TypeError(f"{field} must be a Quota or a BucketConfig, not {type(value).__name__}")
        if self.ip_limit is None and self.user_limit is None:
            raise ValueError("At least one of 'ip_limit' or 'user_limit' must be set.")
        _check_cost(self.cost, [quota for quota in (self.ip_limit, self.user_limit) if isinstance(quota, Quota)])


def rule(
    default: Rate | None = None,
    *,
    ip: Rate | None = None,
    user: Rate | None = None,
    name: str | None = None,
    cost: int = 1,
    scope: str | None = None,
    key: KeyFunc | None = None,
    dry_run: bool | None = None,
) -> RateLimitRule:
    """Builds a limit once, to share it: ``LOGIN = rule(ip="5/min", name="login")``; ``rate_limit(LOGIN)``.

    ``default`` is shorthand for ``ip``. ``name`` (or ``scope``) names a quota that every route using it
    shares; without one, each route has its own, named after its template. ``key(request)`` (sync or
    async) returns what to key the ``ip`` rate by instead of the client address (None: the address).
    ``dry_run`` overrides the limiter's setting for this limit.
    """
    if default is not None and ip is not None:
        raise ValueError(
            "Cannot set both 'default' and 'ip'. Use 'default' as shorthand for IP-only, or 'ip' explicitly."
        )
    if default is None and ip is None and user is None:
        raise ValueError("At least one of 'default', 'ip', or 'user' must be set.")
    if name is not None and scope is not None and name != scope:
        raise ValueError(f"name and scope are the same thing; got name={name!r} and scope={scope!r}")
    name = name if name is not None else scope
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if key is not None and not callable(key):
        raise TypeError("key must be a callable taking the request, sync or async")
    ip_quota = _quota(default if default is not None else ip, "ip")
    user_quota = _quota(user, "user")
    cost = _check_cost(cost, [ip_quota, user_quota])
    return RateLimitRule(name, ip_quota, user_quota, cost, key, dry_run)


class RateLimit:
    """The FastAPI dependency that applies one ``RateLimitRule``; ``rate_limit()`` wraps it in ``Depends``."""

    __slots__ = ("_charges", "_plain", "_plans", "dependency", "rule")

    def __init__(self, rule: RateLimitRule) -> None:
        self.rule = rule
        # By address, at one rate, enforced: the common case, checked without the general machinery.
        plain = rule.user_limit is None and rule.key is None and rule.dry_run is not True
        self._plain = rule.ip_limit if plain and isinstance(rule.ip_limit, Quota) else None
        # Per matched route (by id, with the route and limiter kept to confirm it): what the common case
        # needs, or None where the route has other limits too and they must be charged together.
        self._plans: dict[int, tuple[object, FastLimit, str, _Plan | None, _Direct | None]] = {}
        # The routes whose check is one native call: a memory limiter, the client resolved natively.
        self._charges = RouteCharges()
        self.dependency = self._dependency()

    def __repr__(self) -> str:
        return f"RateLimit({self.rule!r})"

    def _dependency(self) -> Callable[[HTTPConnection, Response], Awaitable[None]]:
        """What ``rate_limit()`` hands to ``Depends``: a function (FastAPI calls one more cheaply than an object)
        that takes the common case in one native call (this route's only limit, in memory, the client resolved
        there too) and leaves the rest to ``self``. It takes an ``HTTPConnection``, so that a limit among the
        app's or a router's dependencies serves their WebSocket routes too (limiting connection attempts)."""
        admit = self._charges.admit
        plans = self._plans

        async def rate_limit(request: HTTPConnection, response: Response) -> None:
            decided = admit(request.scope)
            if decided is True:
                return
            if decided is None:
                await self(request, response)
                return
            decision, client_key = decided
            _, engine, _, _, direct = plans[id(request.scope["route"])]
            assert direct is not None, "a route is charged natively only with its plan"
            charge, counts, name, dry_run = direct
            if engine.settle(decision, counts, dry_run, name, charge.prefix + client_key):
                raise _refusal(request.scope, decision, name)

        rate_limit.__ferrolimit__ = self  # type: ignore[attr-defined]
        return rate_limit

    def _plan(self, engine: "FastLimit", scope: Scope) -> "_Plan | None":
        route = matched_route(scope)
        mount = mount_path(scope)
        cached = self._plans.get(id(route))
        if cached is not None and cached[0] is route and cached[1] is engine and cached[2] == mount:
            return cached[3]
        group, route_name = engine.route_limits(scope)
        plan = direct = None
        if self._plain is not None and group in ((), (self,)):
            name = self.rule.name or route_name
            counts = engine.counts(name)
            limiter = engine.limiter
            plan = (f"{name}:ip:", self._plain, self.rule.cost, counts, name, limiter.is_remote)
            # A Limiter subclass may override hit(): it is asked through its methods, never natively.
            if type(limiter) is Limiter and not limiter.is_remote:
                dry_run = engine.dry_run if self.rule.dry_run is None else self.rule.dry_run
                charge = Charge(
                    limiter,
                    plan[0],
                    self._plain,
                    self.rule.cost,
                    engine.renderer,
                    name,
                    counts,
                    engine.identifier.native,
                    engine.exempt_native,
                    dry_run,
                )
                direct = (charge, counts, name, dry_run)
        if route is not None:
            # One app mounted at two paths: its routes' plan and charge follow the last path (the native call
            # checks it, and leaves a request under the other path to this method).
            self._plans[id(route)] = (route, engine, mount, plan, direct)
            self._charges.set(route, engine, direct[0] if direct is not None else None, mount)
        return plan

    async def __call__(self, request: HTTPConnection, response: Response) -> None:
        scope = request.scope
        pending = scope.get(_PENDING)
        engine = scope.get(_ENGINE)
        if engine is None:
            engine = get_limiter(request)
        client = scope.get("client")
        peer = client[0] if client else None
        if engine.direct_peers and peer and ":" not in peer:
            address = client_key = peer  # an IPv4 peer and no proxy: nothing to resolve
        else:
            address, client_key = engine.identifier.resolve(peer, scope.get("headers") or ())
        if engine.has_exempt and engine.is_exempt(address):
            return
        if pending is not None and _CHECKED not in scope and self._plain is not None:
            plan = self._plan(engine, scope)
            if plan is not None and not (engine.dry_run and self.rule.dry_run is None):
                prefix, quota, cost, counts, name, remote = plan
                key = prefix + client_key
                if remote:
                    decision = await engine.limiter.hit_many_async([(key, quota)], cost)
                else:
                    decision = engine.limiter.hit_many([(key, quota)], cost)  # in memory: never blocks
                engine.renderer.offer(pending, decision, name)
                if decision.allowed:
                    counts.add(allowed=1)
                    return
                engine.settle(decision, counts, False, name, key)
                raise _refusal(scope, decision, name)
        checked = scope.get(_CHECKED)
        if checked is not None and self in checked:
            return  # an earlier limit of this route checked this one with it, in the same call
        group, route_name = engine.route_limits(scope)
        if self not in group:
            group = (self,)
        scope[_CHECKED] = group
        user_id = None
        if engine.user_id_func is not None and any(dep.rule.user_limit is not None for dep in group):
            # On a WebSocket route the request is a WebSocket: the same headers, client, state and scope.
            user_id = await _maybe_await(engine.user_id_func(cast(Request, request)))
        # Limits that can refuse are charged together, all or nothing, in one call, each at its own cost; a
        # dry-run limit is charged on its own, so its would-be refusals do not stop the others.
        enforced: list[tuple[str, str, Quota, int]] = []
        trials: list[tuple[int, str, str, Quota]] = []
        for dep in group:
            limit_rule = dep.rule
            name = limit_rule.name or route_name
            key, quota = await dep._limit(engine, request, name, client_key, user_id)
            if engine.dry_run if limit_rule.dry_run is None else limit_rule.dry_run:
                trials.append((limit_rule.cost, name, key, quota))
            else:
                enforced.append((name, key, quota, limit_rule.cost))
        shown: Pending = pending if pending is not None else Pending()
        counted: set[str] = set()  # limits sharing a name (stacked unnamed ones) count a request once
        for cost, name, key, quota in trials:
            decision = await _decide(engine.limiter, [(key, quota)], cost)
            engine.settle(decision, engine.counts(name) if name not in counted else Counts(), True, name, key)
            counted.add(name)
            if decision.allowed:
                engine.renderer.offer(shown, decision, name)
        if enforced:
            cost = enforced[0][3]
            if all(limit[3] == cost for limit in enforced):
                # One cost for all: the call a Limiter subclass (a custom backend) that predates per-limit
                # costs still understands.
                decision = await _decide(engine.limiter, [(key, quota) for _, key, quota, _ in enforced], cost)
            else:
                decision = await _decide(engine.limiter, [(key, quota, cost) for _, key, quota, cost in enforced], 1)
            name, key = _binding(enforced, decision)
            if not decision.allowed:
                engine.settle(decision, engine.counts(name), False, name, key)
                engine.renderer.offer(shown, decision, name)
                raise _refusal(scope, decision, name)
            for allowed in dict.fromkeys(limit[0] for limit in enforced):
                if allowed not in counted:
                    counted.add(allowed)
                    engine.counts(allowed).add(allowed=1)
            engine.renderer.offer(shown, decision, name)
        if pending is None:
            for header, value in shown.fields:
                response.headers[header.decode()] = value.decode()

    async def _limit(
        self, engine: "FastLimit", request: HTTPConnection, name: str, client_key: str, user_id: object
    ) -> tuple[str, Quota]:
        """The (key, rate) this rule charges for ``request``."""
        limit_rule = self.rule
        if limit_rule.user_limit is not None:
            if user_id:
                assert isinstance(limit_rule.user_limit, Quota)
                return f"{name}:user:{user_id}", limit_rule.user_limit
            if engine.user_id_func is None and limit_rule.ip_limit is None:
                raise MissingUserID(name)
        if limit_rule.key is not None:
            custom = await _maybe_await(limit_rule.key(cast(Request, request)))  # a WebSocket on its routes
            if custom is not None:
                client_key = f"key:{custom}"
        # An anonymous caller of a user-only limit is limited by address at the user rate.
        quota = limit_rule.ip_limit or limit_rule.user_limit
        assert isinstance(quota, Quota)  # a BucketConfig became a Quota in RateLimitRule.__post_init__
        return f"{name}:ip:{client_key}", quota


def _refusal(scope: Scope, decision: Decision, name: str) -> Exception:
    """What a refused request raises: ``RateLimitExceeded`` (a 429), or for a WebSocket connection attempt a
    close with 1008 (policy violation) before it is accepted."""
    if scope["type"] == "websocket":
        return WebSocketException(1008, exceeded_detail(decision))
    return RateLimitExceeded.from_decision(decision, name)


def _binding(limits: list[tuple[str, str, Quota, int]], decision: Decision) -> tuple[str, str]:
    """The name and key of the limit that bound ``decision`` (the first, if a custom limiter names none of them)."""
    index = decision.index
    name, key, _, _ = limits[index] if 0 <= index < len(limits) else limits[0]
    return name, key


async def _handle_exceeded(request: Request, exc: RateLimitExceeded) -> Response:
    """The app's handler for ``RateLimitExceeded``: the 429 of the limiter serving the request."""
    engine = request.scope.get(_ENGINE)
    if not isinstance(engine, FastLimit):
        engine = get_limiter(request)
    return await engine._exception_handler(request, exc)


def get_limiter(request: HTTPConnection) -> FastLimit:
    """The ``FastLimit`` attached to the request's app."""
    engine = getattr(request.app.state, "fastlimit", None)
    if not isinstance(engine, FastLimit):
        raise FastLimitNotInitialized()
    return engine


def rate_limit(
    default: Rate | RateLimitRule | None = None,
    *,
    ip: Rate | None = None,
    user: Rate | None = None,
    cost: int = 1,
    name: str | None = None,
    scope: str | None = None,
    key: KeyFunc | None = None,
    dry_run: bool | None = None,
) -> Any:
    """A dependency that limits a route, a router or an app: ``dependencies=[rate_limit("10/min")]``.

    ``rate_limit("10/min")`` is ``rate_limit(ip="10/min")``; ``rate_limit(ip="5/min", user="50/min")``
    limits anonymous callers by address and authenticated ones by user; ``"10/s;1000/day"`` checks both
    rates at once; ``cost`` is what one request takes. See ``rule`` for ``name``/``scope``, ``key`` and
    ``dry_run``.
    """
    if isinstance(default, RateLimitRule):
        return Depends(RateLimit(default).dependency)
    return Depends(
        RateLimit(
            rule(default, ip=ip, user=user, name=name, cost=cost, scope=scope, key=key, dry_run=dry_run)
        ).dependency
    )


_DEPENDENCY_PREFIX = "_ferrolimit_dep_"


def limit(
    default: Rate | RateLimitRule | None = None,
    *,
    ip: Rate | None = None,
    user: Rate | None = None,
    cost: int = 1,
    name: str | None = None,
    scope: str | None = None,
    key: KeyFunc | None = None,
    dry_run: bool | None = None,
) -> Callable[[F], F]:
    """``rate_limit`` as a decorator, placed under ``@app.get(...)``; the handler needs no ``Request``
    parameter, may be ``async def`` or ``def``, and decorators stack."""
    dependency = rate_limit(default, ip=ip, user=user, cost=cost, name=name, scope=scope, key=key, dry_run=dry_run)

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        parameters = list(signature.parameters.values())
        taken = sum(1 for parameter in parameters if parameter.name.startswith(_DEPENDENCY_PREFIX))
        injected = f"{_DEPENDENCY_PREFIX}{taken}"
        position = next(
            (i for i, p in enumerate(parameters) if p.kind is inspect.Parameter.VAR_KEYWORD), len(parameters)
        )
        parameters.insert(position, inspect.Parameter(injected, inspect.Parameter.KEYWORD_ONLY, default=dependency))

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                kwargs.pop(injected, None)
                return await func(*args, **kwargs)

            wrapper: Callable[..., Any] = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                kwargs.pop(injected, None)
                return func(*args, **kwargs)

            wrapper = sync_wrapper
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _collect(dependant: Dependant, found: list["RateLimit"]) -> None:
    for dep in dependant.dependencies:
        limit = _rate_limit_of(dep.call)
        if limit is not None and limit not in found:
            found.append(limit)
        _collect(dep, found)


def _limits_in(dependant: Dependant) -> bool:
    return any(_rate_limit_of(dep.call) is not None or _limits_in(dep) for dep in dependant.dependencies)


def _rate_limit_of(call: object) -> "RateLimit | None":
    """The ``RateLimit`` behind a dependency: one given to ``Depends`` itself, or ``rate_limit()``'s function."""
    if isinstance(call, RateLimit):
        return call
    limit = getattr(call, "__ferrolimit__", None)
    return limit if isinstance(limit, RateLimit) else None


def _api_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """Every API route, with FastAPI's included routers expanded to their effective routes."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        else:
            contexts = getattr(route, "effective_route_contexts", None)  # included routers (FastAPI >= 0.160)
            if callable(contexts):
                yield from (context for context in contexts() if isinstance(context.original_route, APIRoute))


def _check_rates(app: FastAPI, limiter: FastLimit) -> None:
    """Refuses a limit of the app's routes that ``limiter`` cannot enforce as written (a log limit above
    100,000 per period, say), naming the route: at configuration, rather than as a 500 on the route's first
    request."""
    native = limiter.limiter
    if not isinstance(native, Limiter):
        return
    for route in _api_routes(app.routes):
        dependant = getattr(route, "dependant", None)
        if not isinstance(dependant, Dependant):
            continue
        found: list[RateLimit] = []
        _collect(dependant, found)
        for dependency in found:
            for quota in (dependency.rule.ip_limit, dependency.rule.user_limit):
                if not isinstance(quota, Quota):
                    continue
                try:
                    native.check_rate(quota)
                except ValueError as error:
                    where = getattr(route, "path_format", None) or getattr(route, "path", "?")
                    raise ValueError(f"the rate limit of {where}: {error}") from None


def _check_rates_on_startup(app: FastAPI) -> None:
    """Runs `_check_rates` as the app starts, when every route is declared (most are after ``init_app``)."""
    starting = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(started: Any) -> AsyncIterator[Any]:
        _check_rates(app, app.state.fastlimit)
        async with starting(started) as state:
            yield state

    app.router.lifespan_context = lifespan


def _document_429(app: FastAPI) -> None:
    """Adds the 429 response, with the header names of the app's limiter, to the OpenAPI operation of every
    limited route."""
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build_schema()
        response = _response_429(app.state.fastlimit.header_config)
        paths = schema.get("paths", {})
        for route in _api_routes(app.routes):
            dependant = getattr(route, "dependant", None)
            if not isinstance(dependant, Dependant) or not _limits_in(dependant):
                continue
            operations = paths.get(getattr(route, "path_format", None), {})
            for method in getattr(route, "methods", None) or ():
                operation = operations.get(method.lower())
                if operation is not None:
                    operation.setdefault("responses", {}).setdefault("429", response)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _response_429(config: HeaderConfig) -> dict[str, Any]:
    """The OpenAPI description of a 429 with these header names."""
    fields = [
        (config.limit, "integer", "The quota of the limit"),
        (config.remaining, "integer", "Units left"),
        (config.reset, "integer", "When the quota is fully restored, in Unix seconds"),
        (config.retry_after, "integer", "Seconds to wait before retrying"),
    ]
    if config.ietf:
        fields += [(config.policy, "string", "IETF quota policy"), (config.ratelimit, "string", "IETF quota state")]
    headers = {
        name: {"description": description, "schema": {"type": kind}}
        for name, kind, description in fields
        if config.enabled and name
    }
    return {
        "description": "Too Many Requests: a rate limit was exceeded",
        "headers": headers,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}, "retry_after": {"type": "integer"}},
                    "required": ["detail", "retry_after"],
                }
            }
        },
    }
