"""The pure ASGI middleware on Starlette apps: headers, per-path rules, streaming, WebSockets, on a fake clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from ferrolimit import (
    Decision,
    FakeClock,
    FastLimit,
    HeaderConfig,
    Limiter,
    Quota,
    RateLimitExceeded,
    RateLimitMiddleware,
    WebSocketRateLimit,
)
from tests.conftest import TIME_ALGORITHMS

T0 = 1_700_000_040


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def fail(request: Request) -> Response:
    return PlainTextResponse("broken", status_code=500)


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"one ", b"two ", b"three"):
            yield chunk

    return StreamingResponse(chunks(), media_type="text/plain")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


ROUTES = [
    Route("/", hello),
    Route("/login", hello, methods=["GET", "POST"]),
    Route("/api/{rest:path}", hello),
    Route("/users/{user_id}", hello),
    Route("/health", hello),
    Route("/fail", fail),
    Route("/stream", stream),
    WebSocketRoute("/ws", echo),
]


def app_with(**options: object) -> tuple[TestClient, RateLimitMiddleware]:
    middleware = RateLimitMiddleware(Starlette(routes=ROUTES), **options)  # type: ignore[arg-type]
    return TestClient(middleware), middleware


def rate_headers(response: object) -> dict[str, str]:
    headers = response.headers  # type: ignore[attr-defined]
    return {k: v for k, v in headers.items() if "ratelimit" in k or k == "retry-after"}


@pytest.mark.parametrize("algorithm", TIME_ALGORITHMS)
def test_tutorial_behaviour_headers_on_every_response_then_429(algorithm: str, clock: FakeClock) -> None:
    client, _ = app_with(limit="3/min", algorithm=algorithm, clock=clock)
    paths = ["/", "/fail", "/users/1", "/"]
    responses = [client.get(path) for path in paths]
    assert [r.status_code for r in responses] == [200, 500, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert all(r.headers["x-ratelimit-limit"] == "3" for r in responses)
    assert [r.headers.get("retry-after") for r in responses[:3]] == [None, None, None]
    denied = responses[3]
    retry_after = int(denied.headers["retry-after"])
    assert retry_after >= 1
    assert denied.json() == {"detail": "Rate limit exceeded: 3 per 1 minute", "retry_after": retry_after}
    clock.advance(retry_after)
    assert client.get("/").status_code == 200


def test_exact_values_of_a_token_bucket(clock: FakeClock) -> None:
    # The tutorial's RateLimiterStore(max_tokens=10, refill_rate=2, interval=1.0) is "10/5s" as a bucket.
    client, _ = app_with(limit="10/5s", algorithm="token_bucket", clock=clock)
    responses = [client.get("/") for _ in range(11)]
    assert [r.status_code for r in responses] == [200] * 10 + [429]
    assert rate_headers(responses[0]) == {
        "x-ratelimit-limit": "10",
        "x-ratelimit-remaining": "9",
        "x-ratelimit-reset": str(T0 + 1),
    }
    assert rate_headers(responses[10]) == {
        "x-ratelimit-limit": "10",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": str(T0 + 5),
        "retry-after": "1",
    }
    clock.advance(0.5)
    assert client.get("/").headers["x-ratelimit-remaining"] == "0"
    assert client.get("/").status_code == 429


def test_path_rules_add_to_the_app_limit_and_none_exempts(clock: FakeClock) -> None:
    rules = {"/login": "2/min", "/api/*": "3/min", "/users/{user_id}": "1/min", "/health": None}
    client, middleware = app_with(limit="100/min", rules=rules, clock=clock)
    assert [client.post("/login").status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/login").headers["x-ratelimit-limit"] == "2", "the same rule for every method"
    assert [client.get(f"/api/v1/thing/{n}").status_code for n in range(4)] == [200, 200, 200, 429]
    assert [client.get(f"/users/{n}").status_code for n in range(2)] == [200, 429], "a template, not the path"
    health = [client.get("/health") for _ in range(200)]
    assert {r.status_code for r in health} == {200} and "x-ratelimit-limit" not in health[0].headers
    home = client.get("/")
    # The app-wide limit was charged by the 6 allowed requests and this one; refused and exempt ones took nothing.
    assert (home.headers["x-ratelimit-limit"], home.headers["x-ratelimit-remaining"]) == ("100", "93")
    assert middleware.stats()["/login"] == {"allowed": 2, "limited": 2, "dry_run_limited": 0}


def test_streaming_responses_pass_through_untouched(clock: FakeClock) -> None:
    client, _ = app_with(limit="5/min", clock=clock)
    with client.stream("GET", "/stream") as response:
        assert response.headers["x-ratelimit-remaining"] == "4"
        assert list(response.iter_bytes()) == [b"one ", b"two ", b"three"]


def test_websocket_connections_are_refused_before_accept(clock: FakeClock) -> None:
    client, _ = app_with(limit="2/min", clock=clock)
    for _ in range(2):
        with client.websocket_connect("/ws") as websocket:
            websocket.send_text("ping")
            assert websocket.receive_text() == "ping"
    with pytest.raises(WebSocketDenialResponse) as refused:
        with client.websocket_connect("/ws"):
            pass
    denial = refused.value
    assert denial.status_code == 429
    assert denial.headers["retry-after"] == "30"
    assert denial.json() == {"detail": "Rate limit exceeded: 2 per 1 minute", "retry_after": 30}


def test_websocket_without_the_http_response_extension_is_closed_1008(clock: FakeClock) -> None:
    async def never(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("a refused connection must not reach the app")

    middleware = RateLimitMiddleware(never, limit="1/min", clock=clock)
    assert isinstance(middleware.limiter, Limiter)
    middleware.limiter.hit_many([("default:198.51.100.1", "1/min")])
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [], "client": ("198.51.100.1", 1)}
    asyncio.run(middleware(scope, receive, send))  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "Rate limit exceeded: 1 per 1 minute"}]


def test_websocket_message_helper(clock: FakeClock) -> None:
    per_client = WebSocketRateLimit("2/min", clock=clock)

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            try:
                text = await websocket.receive_text()
            except WebSocketDisconnect:
                return
            decision = await per_client.hit(websocket)
            if decision.allowed:
                await websocket.send_json({"echo": text, "remaining": decision.remaining})
            else:
                await websocket.send_json({"error": "slow down", "retry_after": decision.retry_after})

    client = TestClient(Starlette(routes=[WebSocketRoute("/chat", chat)]))
    with client.websocket_connect("/chat") as websocket:
        replies = []
        for text in ["a", "b", "c"]:
            websocket.send_text(text)
            replies.append(websocket.receive_json())
    assert replies == [
        {"echo": "a", "remaining": 1},
        {"echo": "b", "remaining": 0},
        {"error": "slow down", "retry_after": 30.0},
    ]
    assert per_client.engine.stats() == {"websocket": {"allowed": 2, "limited": 1, "dry_run_limited": 0}}


def test_error_handler_exempt_ips_and_key_function(clock: FakeClock) -> None:
    async def handler(request: Request, exc: RateLimitExceeded) -> Response:
        return JSONResponse({"error": exc.detail, "wait": exc.retry_after}, status_code=429)

    def by_api_key(connection: HTTPConnection) -> str | None:
        return connection.headers.get("x-api-key")

    _, middleware = app_with(limit="1/min", error_handler=handler, exempt_ips=["10.0.0.0/8", "::1"], clock=clock)
    for address in ["10.1.2.3", "::1"]:
        exempt = TestClient(middleware, client=(address, 1))
        assert {exempt.get("/").status_code for _ in range(3)} == {200}
        assert "x-ratelimit-limit" not in exempt.get("/").headers
    assert [TestClient(middleware, client=("11.0.0.1", 1)).get("/").status_code for _ in range(2)] == [200, 429]

    client, _ = app_with(limit="1/min", error_handler=handler, key=by_api_key, clock=clock)
    assert client.get("/", headers={"x-api-key": "a"}).status_code == 200
    denied = client.get("/", headers={"x-api-key": "a"})
    assert denied.json() == {"error": "Rate limit exceeded: 1 per 1 minute", "wait": 60}
    assert denied.headers["retry-after"] == "60" and denied.headers["x-ratelimit-limit"] == "1"
    assert client.get("/", headers={"x-api-key": "b"}).status_code == 200


def test_dry_run_counts_and_logs_without_refusing(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    client, middleware = app_with(limit="1/min", dry_run=True, clock=clock)
    with caplog.at_level(logging.WARNING, logger="ferrolimit"):
        responses = [client.get("/") for _ in range(3)]
    assert [response.status_code for response in responses] == [200, 200, 200]
    assert responses[0].headers["x-ratelimit-remaining"] == "0"
    assert rate_headers(responses[2]) == {}, "a request let through by the dry run carries no refusal's fields"
    assert middleware.stats() == {"default": {"allowed": 1, "limited": 0, "dry_run_limited": 2}}
    assert sum("[dry run]: would have limited 'default'" in r.getMessage() for r in caplog.records) == 2


def test_ietf_fields_name_the_binding_rule(clock: FakeClock) -> None:
    client, _ = app_with(limit="10/min", rules={"/login": "2/min"}, headers=HeaderConfig(ietf=True), clock=clock)
    assert client.get("/").headers["ratelimit-policy"] == '"default";q=10;w=60'
    login = client.get("/login")
    assert (login.headers["ratelimit-policy"], login.headers["ratelimit"]) == ('"/login";q=2;w=60', '"/login";r=1;t=30')


def test_lifespan_and_other_scopes_pass_through(clock: FakeClock) -> None:
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    middleware = RateLimitMiddleware(inner, limit="1/min", clock=clock)

    async def nothing() -> dict[str, object]:
        return {}

    async def discard(message: object) -> None:
        return None

    asyncio.run(middleware({"type": "lifespan"}, nothing, discard))
    assert seen == ["lifespan"]


def test_configuration_errors() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    with pytest.raises(ValueError, match="must start with '/'"):
        RateLimitMiddleware(app, rules={"login": "1/min"})
    with pytest.raises(ValueError, match="invalid rate"):
        RateLimitMiddleware(app, limit="lots")
    with pytest.raises(ValueError, match="a cost of 5 can never pass 2 per 1 minute"):
        RateLimitMiddleware(app, limit="10/min", rules={"/login": "2/min"}, cost=5)
    with pytest.raises(TypeError, match="limiter must be a FastLimit"):
        RateLimitMiddleware(app, limiter=object())  # type: ignore[arg-type]


class _Cycle:
    """One request as an ASGI server holds it: the scope, and ``send`` bound to the object holding it."""

    def __init__(self, scope: dict[str, object], started: list[dict[str, object]]) -> None:
        self.scope = scope
        self.started = started

    async def receive(self) -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            self.started.append(message)


def _asgi_requests(app: object, count: int) -> list[dict[str, object]]:
    """Sends ``count`` GET / straight through the ASGI interface (no test client) and returns the response
    start messages."""
    started: list[dict[str, object]] = []

    async def run() -> None:
        for _ in range(count):
            scope: dict[str, object] = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": "/",
                "raw_path": b"/",
                "root_path": "",
                "query_string": b"",
                "headers": [(b"host", b"test")],
                "client": ("203.0.113.9", 50000),
                "server": ("127.0.0.1", 80),
            }
            cycle = _Cycle(scope, started)
            await app(scope, cycle.receive, cycle.send)  # type: ignore[operator]

    asyncio.run(run())
    return started


def test_requests_through_the_middleware_leave_no_reference_cycles() -> None:
    """The request's pending headers live in its scope; nothing there may point back at the server's
    objects, or every request would leave a cycle for the garbage collector (and memory would grow)."""
    import gc

    clock = FakeClock(T0)
    middleware = RateLimitMiddleware(Starlette(routes=ROUTES), limit="1000/min", clock=clock)
    _asgi_requests(middleware, 5)  # warm up: imports, caches
    gc.collect()
    gc.disable()
    try:
        started = _asgi_requests(middleware, 50)
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert started[-1]["status"] == 200
    assert (b"x-ratelimit-remaining", b"945") in started[-1]["headers"]  # type: ignore[operator]


def test_servers_take_the_middleware_served_on_its_own_for_an_asgi3_app() -> None:
    """``uvicorn.run(RateLimitMiddleware(app, ...))``: servers tell ASGI 3 from ASGI 2 by
    ``inspect.iscoroutinefunction(app.__call__)``."""
    import inspect

    import uvicorn

    middleware = RateLimitMiddleware(Starlette(routes=ROUTES), limit="2/min", clock=FakeClock(T0))
    assert inspect.iscoroutinefunction(middleware.__call__)
    config = uvicorn.Config(middleware, lifespan="off", proxy_headers=False)
    config.load()
    assert config.interface == "asgi3"
    started = _asgi_requests(config.loaded_app, 3)
    assert [message["status"] for message in started] == [200, 200, 429]
    assert dict(started[0]["headers"])[b"x-ratelimit-remaining"] == b"1"  # type: ignore[call-overload]


def test_the_middleware_and_a_fastapi_dependency_report_the_tighter_of_their_limits() -> None:
    """Both write into one set of pending fields per request: the response shows whichever limit binds."""
    from fastapi import FastAPI

    from ferrolimit import FastLimit, rate_limit

    clock = FakeClock(T0)
    app = FastAPI()

    @app.get("/", dependencies=[rate_limit("5/min")])
    async def index() -> dict[str, str]:
        return {"hello": "world"}

    FastLimit(algorithm="fixed_window", clock=clock).init_app(app)
    app.add_middleware(RateLimitMiddleware, limit="3/min", algorithm="fixed_window", clock=clock)
    client = TestClient(app)
    first = client.get("/")
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == ("3", "2")
    client.get("/")
    client.get("/")
    denied = client.get("/")
    assert denied.status_code == 429
    assert denied.headers["x-ratelimit-limit"] == "3" and denied.headers["retry-after"] == "60"


def test_a_limiter_subclass_is_asked_through_its_own_methods() -> None:
    """The native shortcut of the common path is taken only for ferrolimit's own Limiter: a subclass that
    overrides hit() (to log, to meter) sees every request, through the middleware and the dependency."""
    from fastapi import FastAPI

    from ferrolimit import FastLimit, rate_limit

    seen: list[str] = []

    class Metered(Limiter):
        def hit(self, key: str, cost: int = 1) -> Decision:
            seen.append(key)
            return super().hit(key, cost)

        def hit_many(
            self,
            limits: Sequence[tuple[str, str | Quota | None] | tuple[str, str | Quota | None, int]],
            cost: int = 1,
        ) -> Decision:
            seen.extend(limit[0] for limit in limits)
            return super().hit_many(limits, cost)

    clock = FakeClock(T0)
    client, _ = app_with(limit="3/min", backend=Metered("3/min", clock=clock))
    assert [client.get("/").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert seen == ["default:testclient"] * 4

    seen.clear()
    app = FastAPI()

    @app.get("/", dependencies=[rate_limit("2/min")])
    async def index() -> dict[str, str]:
        return {"hello": "world"}

    FastLimit(backend=Metered("1/s", clock=clock)).init_app(app)
    api = TestClient(app)
    assert [api.get("/").status_code for _ in range(3)] == [200, 200, 429]
    assert seen == ["GET /:ip:testclient"] * 3


def test_rules_match_the_path_the_app_routes_on_under_a_root_path_or_a_mount(clock: FakeClock) -> None:
    rules = {"/login": "2/min", "/health": None}
    # uvicorn --root-path /svc: the path keeps the prefix, and the app routes on what follows it.
    served = RateLimitMiddleware(Starlette(routes=ROUTES), limit="100/min", rules=rules, clock=clock)
    client = TestClient(served, root_path="/svc")
    assert [client.post("/svc/login").status_code for _ in range(3)] == [200, 200, 429]
    assert "x-ratelimit-limit" not in client.get("/svc/health").headers
    # The same middleware around an app mounted at /v1.
    limited = RateLimitMiddleware(Starlette(routes=ROUTES), limit="100/min", rules=rules, clock=clock)
    client = TestClient(Starlette(routes=[Mount("/v1", limited)]))
    assert [client.post("/v1/login").status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/v1/login").headers["x-ratelimit-limit"] == "2"
    assert "x-ratelimit-limit" not in client.get("/v1/health").headers


def test_the_most_specific_pattern_applies_whatever_the_order(clock: FakeClock) -> None:
    rules = {"/api/*": "2/min", "/api/public/*": None, "/users/*": "5/min", "/users/{user_id}": "1/min"}
    client, _ = app_with(rules=rules, clock=clock)
    assert {client.get("/api/public/x").status_code for _ in range(5)} == {200}
    assert [client.get("/api/private").status_code for _ in range(3)] == [200, 200, 429]
    assert [client.get("/users/7").status_code for _ in range(2)] == [200, 429], "the template is more specific"


def test_a_shared_limiter_takes_no_options_of_its_own(clock: FakeClock) -> None:
    shared = FastLimit(clock=clock)
    RateLimitMiddleware(Starlette(), limit="5/min", limiter=shared, max_keys=1_000_000)  # the default: harmless
    with pytest.raises(TypeError, match="set algorithm on the FastLimit instead"):
        RateLimitMiddleware(Starlette(), limiter=shared, algorithm="gcra")  # a str: given, though equal to the default
    with pytest.raises(TypeError, match="set exempt_ips, trusted_proxies, dry_run on the FastLimit instead"):
        RateLimitMiddleware(Starlette(), limiter=shared, exempt_ips=["10.0.0.1"], dry_run=True, trusted_proxies=1)


def test_a_field_the_response_sets_itself_is_not_repeated(clock: FakeClock) -> None:
    async def upstream(request: Request) -> Response:
        return JSONResponse({}, headers={"X-RateLimit-Limit": "5000", "x-ratelimit-remaining": "4999"})

    client, _ = app_with(limit="100/min", clock=clock, headers=HeaderConfig(ietf=True))
    client.app.app.routes.append(Route("/upstream", upstream))  # type: ignore[attr-defined]
    response = client.get("/upstream")
    assert response.headers.get_list("x-ratelimit-limit") == ["5000"]
    assert response.headers.get_list("x-ratelimit-remaining") == ["4999"]
    assert response.headers.get_list("x-ratelimit-reset") == [str(T0 + 1)], "the fields it left out are added"
    assert response.headers["ratelimit"] == '"default";r=99;t=1'


def test_a_response_naming_its_headers_in_str_still_gets_the_fields(clock: FakeClock) -> None:
    """Not ASGI, but uvicorn's h11 protocol takes str names: the layer must not fail on them."""
    from ferrolimit._core import HeaderRenderer, Pending, send_with_headers

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    pending = Pending()
    HeaderRenderer().offer(pending, Limiter("5/min", clock=clock).hit("k"), "default")
    headers = [("content-type", "text/plain"), ("X-RateLimit-Limit", "7")]
    start = {"type": "http.response.start", "status": 200, "headers": headers}

    async def respond() -> None:
        await send_with_headers(send, pending)(start)

    asyncio.run(respond())
    names = [name.lower() if isinstance(name, str) else name.decode() for name, _ in sent[0]["headers"]]
    assert names == ["content-type", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"]


def test_a_template_followed_by_a_wildcard_is_a_rule_too(clock: FakeClock) -> None:
    client, _ = app_with(rules={"/users/{user_id}/*": "1/min"}, clock=clock)
    client.app.app.routes.append(Route("/users/{user_id}/{rest:path}", hello))  # type: ignore[attr-defined]
    assert [client.get("/users/5/posts").status_code for _ in range(2)] == [200, 429]
    assert client.get("/users/6/posts/1").status_code == 429, "one rule: one quota per client"
    assert "x-ratelimit-limit" not in client.get("/users/5").headers
