"""FastAPI: fastlimit's documented API, exact headers and bodies, on a fake clock."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from ferrolimit import (
    Algorithm,
    BucketConfig,
    FakeClock,
    FastLimit,
    FastLimitNotInitialized,
    HeaderConfig,
    Limiter,
    MissingUserID,
    RateLimitExceeded,
    limit,
    rate_limit,
    rule,
)
from tests.conftest import TIME_ALGORITHMS

T0 = 1_700_000_040  # the conftest clock's start, on a minute boundary

# (remaining, X-RateLimit-Reset) for four requests at "3/min" at T0, then Retry-After of the fourth.
EXPECTED_BURST = {
    "gcra": ([(2, T0 + 20), (1, T0 + 40), (0, T0 + 60), (0, T0 + 60)], 20),
    "token_bucket": ([(2, T0 + 20), (1, T0 + 40), (0, T0 + 60), (0, T0 + 60)], 20),
    "leaky_bucket": ([(2, T0 + 20), (1, T0 + 40), (0, T0 + 60), (0, T0 + 60)], 20),
    "fixed_window": ([(2, T0 + 60), (1, T0 + 60), (0, T0 + 60), (0, T0 + 60)], 60),
    # the weighted counter forgets the previous window gradually: the 4th fits once 1/3 of it has gone by
    "sliding_window_counter": ([(2, T0 + 120), (1, T0 + 120), (0, T0 + 120), (0, T0 + 120)], 80),
    "sliding_window_log": ([(2, T0 + 60), (1, T0 + 60), (0, T0 + 60), (0, T0 + 60)], 60),
}


def make_app(limiter: FastLimit, **app_options: Any) -> FastAPI:
    app = FastAPI(**app_options)
    limiter.init_app(app)
    return app


def limits(response: Any) -> tuple[int, str | None, str | None, str | None, str | None]:
    headers = response.headers
    return (
        response.status_code,
        headers.get("x-ratelimit-limit"),
        headers.get("x-ratelimit-remaining"),
        headers.get("x-ratelimit-reset"),
        headers.get("retry-after"),
    )


@pytest.mark.parametrize("algorithm", TIME_ALGORITHMS)
def test_burst_exact_headers_and_refill(algorithm: str, clock: FakeClock) -> None:
    app = make_app(FastLimit(algorithm=algorithm, clock=clock))

    @app.get("/items", dependencies=[rate_limit("3/min")])
    async def items() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    expected, retry_after = EXPECTED_BURST[algorithm]
    responses = [client.get("/items") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [
        (int(r.headers["x-ratelimit-remaining"]), int(r.headers["x-ratelimit-reset"])) for r in responses
    ] == expected
    assert all(r.headers["x-ratelimit-limit"] == "3" for r in responses)
    assert all("retry-after" not in r.headers for r in responses[:3]), "Retry-After only on 429"
    denied = responses[3]
    assert denied.headers["retry-after"] == str(retry_after)
    assert denied.json() == {"detail": "Rate limit exceeded: 3 per 1 minute", "retry_after": retry_after}
    assert denied.headers["content-type"] == "application/json"
    clock.advance(retry_after - 1)
    assert client.get("/items").status_code == 429
    clock.advance(1)
    assert client.get("/items").status_code == 200, "Retry-After is never earlier than the real refill"


@pytest.mark.parametrize("algorithm", TIME_ALGORITHMS)
def test_retry_after_is_never_zero_and_never_early(algorithm: str, clock: FakeClock) -> None:
    app = make_app(FastLimit(algorithm=algorithm, clock=clock))

    @app.get("/", dependencies=[rate_limit("10/s")])
    async def root() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    clock.advance(0.05)  # off the second boundary, so the wait is a fraction of a second
    for _ in range(10):
        assert client.get("/").status_code == 200
    denied = client.get("/")
    # A wait of a fraction of a second is announced as 1 (the weighted counter's 1.05 s as 2), never 0.
    expected = "2" if algorithm == "sliding_window_counter" else "1"
    assert (denied.status_code, denied.headers["retry-after"]) == (429, expected)
    assert denied.json()["retry_after"] == int(expected)
    clock.advance(int(expected))
    assert client.get("/").status_code == 200


def test_cost(clock: FakeClock) -> None:
    app = make_app(FastLimit(clock=clock))

    @app.post("/export", dependencies=[rate_limit("100/hour", cost=10)])
    async def export() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    remaining = [client.post("/export").headers["x-ratelimit-remaining"] for _ in range(10)]
    assert remaining == ["90", "80", "70", "60", "50", "40", "30", "20", "10", "0"]
    assert client.post("/export").status_code == 429


def global_and_export_app(limiter: FastLimit) -> TestClient:
    """An app-wide limit at cost 1 and an export route whose own limit costs 60."""
    app = make_app(limiter, dependencies=[rate_limit("10/min", name="global")])

    @app.post("/export", dependencies=[rate_limit("100/min", cost=60, name="export")])
    async def export() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    return TestClient(app)


def test_limits_of_different_costs_are_charged_together(clock: FakeClock, storage: str) -> None:
    limiter = FastLimit(storage=storage, key_prefix=f"t-{uuid.uuid4().hex[:12]}", clock=clock)
    client = global_and_export_app(limiter)
    responses = [client.post("/export") for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 429, 429, 429, 429]
    # fastlimit's default algorithm, a fixed window: everything comes back at the next minute.
    assert limits(responses[0]) == (200, "10", "9", str(T0 + 60), None), "global binds: 9 of 10 left, export 40"
    assert limits(responses[1]) == (429, "100", "40", str(T0 + 60), "60")
    assert responses[1].json()["detail"] == "Rate limit exceeded: 100 per 1 minute"
    # The refused exports took nothing from the global limit: 10 - 1 export - 1 ping.
    assert limits(client.get("/ping"))[:3] == (200, "10", "8")
    assert limiter.stats() == {
        "global": {"allowed": 2, "limited": 0, "dry_run_limited": 0},
        "export": {"allowed": 1, "limited": 4, "dry_run_limited": 0},
    }


def shared_limit_app(limiter: FastLimit) -> TestClient:
    """/x has a limit of its own and a shared one of the same rate; /y only the shared one."""
    app = make_app(limiter)
    search = rate_limit("3/min", name="search")

    @app.get("/x", dependencies=[rate_limit("3/min", name="x-own"), search])
    async def x() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/y", dependencies=[search])
    async def y() -> dict[str, bool]:
        return {"ok": True}

    return TestClient(app)


def assert_the_shared_limit_is_named(limiter: FastLimit, client: TestClient) -> None:
    assert [client.get("/y").status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get("/x")
    assert refused.status_code == 429
    # x-own has the same rate and room left: the refusal is search's, not the first limit's of that rate.
    assert refused.headers["ratelimit-policy"] == '"search";q=3;w=60'
    assert refused.headers["ratelimit"].startswith('"search";r=0;')
    stats = limiter.stats()
    assert stats["search"] == {"allowed": 3, "limited": 1, "dry_run_limited": 0}
    assert stats.get("x-own", {}).get("limited", 0) == 0


def test_a_refusal_names_the_shared_limit_of_an_equal_rate(clock: FakeClock, storage: str) -> None:
    limiter = FastLimit(
        storage=storage, key_prefix=f"t-{uuid.uuid4().hex[:12]}", headers=HeaderConfig(ietf=True), clock=clock
    )
    assert_the_shared_limit_is_named(limiter, shared_limit_app(limiter))


def test_a_custom_backends_refusal_names_the_shared_limit_of_an_equal_rate(clock: FakeClock) -> None:
    limiter = FastLimit(backend=CountingBackend(clock), headers=HeaderConfig(ietf=True), clock=clock)
    assert_the_shared_limit_is_named(limiter, shared_limit_app(limiter))


def test_a_custom_backend_is_asked_for_each_limits_own_cost(clock: FakeClock) -> None:
    backend = CountingBackend(clock)
    client = global_and_export_app(FastLimit(backend=backend, clock=clock))
    assert client.post("/export").status_code == 200
    assert sorted(backend.calls) == [("export:ip:testclient", 100, 60, 60), ("global:ip:testclient", 10, 60, 1)]


@pytest.mark.parametrize("algorithm", TIME_ALGORITHMS)
def test_several_rates_and_a_denial_takes_nothing(algorithm: str, clock: FakeClock) -> None:
    app = make_app(FastLimit(algorithm=algorithm, clock=clock))

    @app.get("/", dependencies=[rate_limit("3/s;5/min")])
    async def root() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    assert [client.get("/").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert client.get("/").headers["x-ratelimit-limit"] == "3", "the per-second rate refused it"
    clock.advance(2)
    first = client.get("/")
    # 4 of 5 per minute are used only if the two refused requests took nothing.
    assert limits(first)[:3] == (200, "5", "1")
    assert client.get("/").headers["x-ratelimit-remaining"] == "0"
    denied = client.get("/")
    assert (denied.status_code, denied.headers["x-ratelimit-limit"]) == (429, "5")
    assert denied.json()["detail"] == "Rate limit exceeded: 5 per 1 minute"


def user_from_header(request: Request) -> str | None:
    return request.headers.get("x-user")


def test_ip_and_user_buckets_as_fastlimit_documents(clock: FakeClock) -> None:
    app = make_app(FastLimit(user_id_func=user_from_header, clock=clock))

    @app.post("/upload", dependencies=[rate_limit(ip="2/min", user="3/min")])
    async def upload() -> dict[str, bool]:
        return {"ok": True}

    alice_home = TestClient(app, client=("198.51.100.1", 1000))
    alice_work = TestClient(app, client=("198.51.100.2", 1000))
    # Anonymous callers are limited by address.
    assert [alice_home.post("/upload").status_code for _ in range(3)] == [200, 200, 429]
    assert alice_home.post("/upload").headers["x-ratelimit-limit"] == "2"
    # Authenticated ones by user, wherever they come from, and not by the exhausted address.
    as_alice = {"x-user": "alice"}
    responses = [alice_home.post("/upload", headers=as_alice), alice_work.post("/upload", headers=as_alice)]
    responses.append(alice_work.post("/upload", headers=as_alice))
    assert [limits(r)[:3] for r in responses] == [(200, "3", "2"), (200, "3", "1"), (200, "3", "0")]
    assert alice_home.post("/upload", headers=as_alice).status_code == 429
    assert alice_home.post("/upload", headers={"x-user": "bob"}).status_code == 200


async def async_user(request: Request) -> str | None:
    return request.headers.get("x-user")


def test_async_user_id_func_and_anonymous_on_a_user_only_limit(clock: FakeClock) -> None:
    app = make_app(FastLimit(user_id_func=async_user, clock=clock))

    @app.get("/me", dependencies=[rate_limit(user="2/min")])
    async def me() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    assert [client.get("/me", headers={"x-user": "u1"}).status_code for _ in range(3)] == [200, 200, 429]
    # Anonymous callers of a user-only limit are limited by address at the user rate (fastlimit: a 500).
    assert [client.get("/me").status_code for _ in range(3)] == [200, 200, 429]


def test_user_only_limit_without_user_id_func_is_a_clear_error(clock: FakeClock) -> None:
    app = make_app(FastLimit(clock=clock))

    @app.get("/me", dependencies=[rate_limit(user="2/min", name="me")])
    async def me() -> dict[str, bool]:
        return {"ok": True}

    with pytest.raises(MissingUserID, match="'me' has a user limit but FastLimit has no user_id_func"):
        TestClient(app).get("/me")


def test_scope_shares_a_quota_and_routes_are_keyed_by_template(clock: FakeClock) -> None:
    limiter = FastLimit(clock=clock)
    app = make_app(limiter)
    search = rate_limit("2/min", scope="search")

    @app.get("/a", dependencies=[search])
    async def a() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/b", dependencies=[rate_limit("2/min", scope="search")])
    async def b() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/users/{user_id}", dependencies=[rate_limit("2/min")])
    async def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.get("/other", dependencies=[rate_limit("2/min")])
    async def other() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    assert [client.get(path).status_code for path in ["/a", "/b", "/a", "/b"]] == [200, 200, 429, 429]
    assert [client.get(f"/users/{n}").status_code for n in range(3)] == [200, 200, 429], "one quota per template"
    assert client.get("/other").status_code == 200, "unnamed limits of different routes are separate"
    assert limiter.stats() == {
        "search": {"allowed": 2, "limited": 2, "dry_run_limited": 0},
        "GET /users/{user_id}": {"allowed": 2, "limited": 1, "dry_run_limited": 0},
        "GET /other": {"allowed": 1, "limited": 0, "dry_run_limited": 0},
    }


def test_router_and_app_level_dependencies(clock: FakeClock) -> None:
    limiter = FastLimit(clock=clock)
    app = make_app(limiter, dependencies=[rate_limit("5/min", name="global")])
    router = APIRouter(prefix="/api", dependencies=[rate_limit("3/min", name="api")])

    @router.get("/x")
    async def x() -> dict[str, bool]:
        return {"ok": True}

    @router.get("/y")
    async def y() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/free")
    async def free() -> dict[str, bool]:
        return {"ok": True}

    app.include_router(router)
    client = TestClient(app)
    # Each response reports the tightest of the limits that apply to it.
    assert limits(client.get("/api/x"))[:3] == (200, "3", "2")
    assert limits(client.get("/free"))[:3] == (200, "5", "3")
    assert limits(client.get("/api/y"))[:3] == (200, "3", "1")
    assert limits(client.get("/api/x"))[:3] == (200, "3", "0")
    assert limits(client.get("/api/y"))[:3] == (429, "3", "0")
    assert limits(client.get("/free"))[:3] == (200, "5", "0"), "the refused request took nothing from global"
    assert limits(client.get("/free"))[:3] == (429, "5", "0")
    assert limiter.stats()["api"] == {"allowed": 3, "limited": 1, "dry_run_limited": 0}
    assert "429" in client.get("/openapi.json").json()["paths"]["/api/x"]["get"]["responses"]


def test_unnamed_limits_in_routers_use_the_full_template(clock: FakeClock) -> None:
    limiter = FastLimit(clock=clock)
    app = make_app(limiter)
    router = APIRouter(prefix="/api")

    @router.get("/items/{item_id}", dependencies=[rate_limit("1/min")])
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app.include_router(router)
    client = TestClient(app)
    assert [client.get(f"/api/items/{n}").status_code for n in range(2)] == [200, 429]
    assert list(limiter.stats()) == ["GET /api/items/{item_id}"]
    responses = client.get("/openapi.json").json()["paths"]["/api/items/{item_id}"]["get"]["responses"]
    assert responses["429"]["description"] == "Too Many Requests: a rate limit was exceeded"


def test_unnamed_limits_of_mounted_apps_are_named_with_the_mount_path(clock: FakeClock) -> None:
    # Two versions of an API mounted side by side, with the same route templates: each endpoint has its own
    # quota, and so does one app mounted at two paths. `root_path` (uvicorn --root-path) is not part of it.
    limiter = FastLimit(clock=clock)
    app = make_app(limiter)

    def version(number: int) -> FastAPI:
        sub = FastAPI()

        @sub.get("/items/{item_id}", dependencies=[rate_limit("1/min")])
        async def item(item_id: int) -> dict[str, int]:
            return {"version": number, "id": item_id}

        return sub

    shared = version(3)
    app.mount("/v1", version(1))
    app.mount("/v2", version(2))
    app.mount("/v3", shared)
    app.mount("/latest", shared)

    @app.get("/items/{item_id}", dependencies=[rate_limit("1/min")])
    async def item(item_id: int) -> dict[str, int]:
        return {"version": 0, "id": item_id}

    client = TestClient(app, root_path="/api")
    for path in ("/v1/items", "/v2/items", "/v3/items", "/latest/items", "/items"):
        assert [client.get(f"/api{path}/{n}").status_code for n in range(2)] == [200, 429], path
    assert sorted(limiter.stats()) == [
        "GET /items/{item_id}",
        "GET /latest/items/{item_id}",
        "GET /v1/items/{item_id}",
        "GET /v2/items/{item_id}",
        "GET /v3/items/{item_id}",
    ]
    assert client.get("/api/v3/items/9").status_code == 429, "still its own quota after the other mount was used"
    assert client.get("/api/latest/items/9").status_code == 429


def test_exempt_ips_and_networks(clock: FakeClock) -> None:
    app = make_app(FastLimit(exempt_ips={"127.0.0.1", "10.0.0.0/8"}, clock=clock))

    @app.get("/", dependencies=[rate_limit("1/min")])
    async def root() -> dict[str, bool]:
        return {"ok": True}

    for address in ["127.0.0.1", "10.20.30.40"]:
        client = TestClient(app, client=(address, 1000))
        responses = [client.get("/") for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert "x-ratelimit-limit" not in responses[0].headers
    outsider = TestClient(app, client=("198.51.100.1", 1000))
    # Without a trusted proxy, claiming an exempt address in X-Forwarded-For does nothing.
    spoofed = {"x-forwarded-for": "127.0.0.1"}
    assert [outsider.get("/", headers=spoofed).status_code for _ in range(2)] == [200, 429]


def test_dry_run_globally_and_per_limit(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    limiter = FastLimit(dry_run=True, clock=clock)
    app = make_app(limiter)

    @app.get("/", dependencies=[rate_limit("1/min", name="root")])
    async def root() -> dict[str, bool]:
        return {"ok": True}

    with caplog.at_level(logging.WARNING, logger="ferrolimit"):
        responses = [TestClient(app).get("/") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[0].headers["x-ratelimit-remaining"] == "0"
    assert "retry-after" not in responses[2].headers and "x-ratelimit-remaining" not in responses[2].headers
    assert limiter.stats() == {"root": {"allowed": 1, "limited": 0, "dry_run_limited": 2}}
    assert sum("would have limited 'root'" in record.getMessage() for record in caplog.records) == 2

    # A limit that opts out of the limiter's dry run is enforced.
    @app.get("/strict", dependencies=[rate_limit("1/min", name="strict", dry_run=False)])
    async def strict() -> dict[str, bool]:
        return {"ok": True}

    assert [TestClient(app).get("/strict").status_code for _ in range(3)] == [200, 429, 429]
    assert limiter.stats()["strict"] == {"allowed": 1, "limited": 2, "dry_run_limited": 0}

    enforcing = FastLimit(clock=clock)
    app = make_app(enforcing)

    @app.get("/trial", dependencies=[rate_limit("1/min", name="trial", dry_run=True)])
    async def trial() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/real", dependencies=[rate_limit("1/min", name="real")])
    async def real() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    assert [client.get("/trial").status_code for _ in range(2)] == [200, 200]
    assert [client.get("/real").status_code for _ in range(2)] == [200, 429]
    assert enforcing.stats()["trial"]["dry_run_limited"] == 1


@pytest.mark.parametrize("asynchronous", [False, True])
def test_custom_error_handler(asynchronous: bool, clock: FakeClock) -> None:
    def body(exc: RateLimitExceeded) -> dict[str, Any]:
        return {"error": "rate_limit_exceeded", "message": exc.detail, "retry_after_seconds": exc.retry_after}

    def sync_handler(request: Request, exc: RateLimitExceeded) -> JSONResponse:
        return JSONResponse(status_code=429, content=body(exc), headers={"Retry-After": "3600"})

    async def async_handler(request: Request, exc: RateLimitExceeded) -> JSONResponse:
        return sync_handler(request, exc)

    app = make_app(FastLimit(error_handler=async_handler if asynchronous else sync_handler, clock=clock))

    @app.get("/", dependencies=[rate_limit("1/min")])
    async def root() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    client.get("/")
    denied = client.get("/")
    assert denied.status_code == 429
    assert denied.json() == {
        "error": "rate_limit_exceeded",
        "message": "Rate limit exceeded: 1 per 1 minute",
        "retry_after_seconds": 60,
    }
    assert denied.headers.get_list("retry-after") == ["3600"], "the handler's own header wins, once"
    assert limits(denied)[1:4] == ("1", "0", str(T0 + 60))


def test_headers_survive_http_exceptions_own_responses_and_streaming(clock: FakeClock) -> None:
    app = make_app(FastLimit(clock=clock))

    async def require_token(request: Request) -> None:
        if request.headers.get("authorization") != "Bearer ok":
            raise HTTPException(status_code=401, detail="no token")

    @app.get("/later", dependencies=[rate_limit("5/min", name="later"), Depends(require_token)])
    async def later() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/missing", dependencies=[rate_limit("5/min", name="missing")])
    async def missing() -> None:
        raise HTTPException(status_code=404, detail="nope")

    @app.get("/text", dependencies=[rate_limit("5/min", name="text")])
    async def text() -> PlainTextResponse:
        return PlainTextResponse("hello")

    @app.get("/stream", dependencies=[rate_limit("5/min", name="stream")])
    async def stream() -> StreamingResponse:
        def chunks() -> Iterator[bytes]:
            yield from (b"a", b"b", b"c")

        return StreamingResponse(chunks(), media_type="text/plain")

    client = TestClient(app)
    for path, status, body in [("/later", 401, None), ("/missing", 404, None), ("/text", 200, "hello")]:
        response = client.get(path)
        assert limits(response) == (status, "5", "4", str(T0 + 60), None), path
        if body:
            assert response.text == body
    streamed = client.get("/stream")
    assert limits(streamed)[:3] == (200, "5", "4") and streamed.text == "abc"


def test_limit_decorator_without_request_sync_and_stacked(clock: FakeClock) -> None:
    app = make_app(FastLimit(clock=clock))

    @app.get("/feed")
    @limit("2/min")
    async def feed() -> dict[str, list[int]]:
        return {"items": []}

    @app.get("/sync/{n}")
    @limit("2/min")
    def sync(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/stacked")
    @limit("3/min", name="outer")
    @limit("1/min", name="inner")
    async def stacked() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    assert [client.get("/feed").status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/sync/7").json() == {"n": 7}
    assert [client.get(f"/sync/{n}").status_code for n in range(2)] == [200, 429]
    assert limits(client.get("/stacked"))[:3] == (200, "1", "0")
    assert client.get("/stacked").status_code == 429
    assert "_ferrolimit" not in str(app.openapi()), "the injected parameter is not a documented query parameter"

    @app.get("/unnamed")
    @limit("10/min")
    @limit("100/hour")
    async def unnamed() -> dict[str, bool]:
        return {"ok": True}

    assert [client.get("/unnamed").status_code for _ in range(3)] == [200] * 3
    limiter = app.state.fastlimit
    assert limiter.stats()["GET /unnamed"]["allowed"] == 3, "two limits of one name count a request once"

    @app.get("/trial", dependencies=[rate_limit("100/min", dry_run=True), rate_limit("50/min")])
    async def trial() -> dict[str, bool]:
        return {"ok": True}

    assert client.get("/trial").status_code == 200
    assert limiter.stats()["GET /trial"]["allowed"] == 1, "a dry-run limit of the same name too"


def test_rule_objects_and_async_key(clock: FakeClock) -> None:
    async def api_key(request: Request) -> str | None:
        return request.headers.get("x-api-key")

    photo_download = rule(ip="2/min", name="photo_download", key=api_key)
    limiter = FastLimit(clock=clock)
    app = make_app(limiter)

    @app.get("/photo", dependencies=[rate_limit(photo_download)])
    async def photo() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/thumb", dependencies=[rate_limit(photo_download)])
    async def thumb() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    assert [client.get("/photo", headers={"x-api-key": "k1"}).status_code for _ in range(2)] == [200, 200]
    assert client.get("/thumb", headers={"x-api-key": "k1"}).status_code == 429
    assert client.get("/thumb", headers={"x-api-key": "k2"}).status_code == 200, "keyed by API key, not address"
    assert [client.get("/photo").status_code for _ in range(3)] == [200, 200, 429], "no key: by address"


def test_openapi_documents_429_on_limited_routes_only(clock: FakeClock) -> None:
    app = make_app(FastLimit(headers=HeaderConfig(ietf=True), clock=clock))

    @app.get("/limited", dependencies=[rate_limit("1/min")])
    async def limited() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/decorated")
    @limit("1/min")
    async def decorated() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/free")
    async def free() -> dict[str, bool]:
        return {"ok": True}

    paths = TestClient(app).get("/openapi.json").json()["paths"]
    for path in ["/limited", "/decorated"]:
        response = paths[path]["get"]["responses"]["429"]
        assert set(response["headers"]) == {
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "Retry-After",
            "RateLimit-Policy",
            "RateLimit",
        }
        schema = response["content"]["application/json"]["schema"]
        assert schema["properties"]["retry_after"] == {"type": "integer"}
    assert "429" not in paths["/free"]["get"]["responses"]


def test_header_names_ietf_fields_and_disabling(clock: FakeClock) -> None:
    custom = HeaderConfig(limit="RateLimit-Limit", remaining="RateLimit-Remaining", reset="RateLimit-Reset", ietf=True)
    app = make_app(FastLimit(headers=custom, clock=clock))

    @app.get("/", dependencies=[rate_limit("2/min", name="burst")])
    async def root() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    first = client.get("/")
    assert {k: v for k, v in first.headers.items() if "ratelimit" in k} == {
        "ratelimit-limit": "2",
        "ratelimit-remaining": "1",
        "ratelimit-reset": str(T0 + 60),
        "ratelimit-policy": '"burst";q=2;w=60',
        "ratelimit": '"burst";r=1;t=60',
    }
    client.get("/")
    denied = client.get("/")
    assert denied.headers["ratelimit"] == '"burst";r=0;t=60' and denied.headers["retry-after"] == "60"

    app = make_app(FastLimit(headers=HeaderConfig(enabled=False), clock=clock))

    @app.get("/", dependencies=[rate_limit("1/min")])
    async def quiet() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    client.get("/")
    denied = client.get("/")
    assert denied.status_code == 429 and denied.json()["retry_after"] == 60
    assert not [k for k in denied.headers if "ratelimit" in k or k == "retry-after"]


def algorithm_of(limiter: FastLimit) -> str:
    assert isinstance(limiter.limiter, Limiter)
    return limiter.limiter.algorithm


def test_algorithm_names_map_to_the_core() -> None:
    assert algorithm_of(FastLimit()) == "sliding_window_log", "fastlimit's default tracks exact timestamps"
    expected = {
        Algorithm.SLIDING_WINDOW: "sliding_window_log",
        Algorithm.FIXED_WINDOW: "fixed_window",
        Algorithm.TOKEN_BUCKET: "token_bucket",
        Algorithm.GCRA: "gcra",
        Algorithm.LEAKY_BUCKET: "leaky_bucket",
        Algorithm.SLIDING_WINDOW_COUNTER: "sliding_window_counter",
    }
    for algorithm, native in expected.items():
        assert algorithm_of(FastLimit(algorithm=algorithm)) == native
    assert algorithm_of(FastLimit(algorithm="token_bucket")) == "token_bucket"
    assert Algorithm.SLIDING_WINDOW.value == "sliding_window" and str(Algorithm.GCRA) == "gcra"
    assert Algorithm("token_bucket") is Algorithm.TOKEN_BUCKET
    with pytest.raises(ValueError, match='unknown algorithm "tokenbucket"'):
        FastLimit(algorithm="tokenbucket")


def test_configuration_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="Cannot set both 'default' and 'ip'"):
        rate_limit("1/min", ip="2/min")
    with pytest.raises(ValueError, match="At least one of 'default', 'ip', or 'user' must be set"):
        rate_limit()
    with pytest.raises(ValueError, match="cost must be >= 1, got 0"):
        rate_limit("1/min", cost=0)
    with pytest.raises(ValueError, match="a cost of 11 can never pass 10 per 1 minute"):
        rate_limit("10/min", cost=11)
    with pytest.raises(ValueError, match=r'invalid rate "10/fortnight".*10/min'):
        rate_limit("10/fortnight")
    with pytest.raises(ValueError, match="name and scope are the same thing"):
        rate_limit("1/min", name="a", scope="b")
    with pytest.raises(ValueError, match='"Bad Name" is not a valid field name'):
        FastLimit(headers=HeaderConfig(limit="Bad Name"))
    with pytest.raises(ValueError, match="'nonsense' is not an IP address or network"):
        FastLimit(exempt_ips={"nonsense"})
    with pytest.raises(TypeError, match=r"backend must be a ferrolimit\.Limiter"):
        FastLimit(backend=object())


def test_without_init_app_the_error_says_so() -> None:
    app = FastAPI()

    @app.get("/", dependencies=[rate_limit("1/min")])
    async def root() -> dict[str, bool]:
        return {"ok": True}

    with pytest.raises(FastLimitNotInitialized, match=r"forget to call limiter.init_app\(app\)"):
        TestClient(app).get("/")


def test_fastlimit_readme_example_runs_unchanged(clock: FakeClock) -> None:
    app = FastAPI()
    limiter = FastLimit(
        user_id_func=lambda request: getattr(request.state, "user_id", None),
        clock=clock,
    )
    limiter.init_app(app)

    @app.post("/upload", dependencies=[rate_limit(ip="10/min", user="50/min")])
    async def upload() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    statuses = [client.post("/upload").status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]


class CountingBackend:
    """A fastlimit-style custom backend: a fixed window kept in a dict, on the test's clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.counts: dict[tuple[str, int], int] = {}
        self.calls: list[tuple[str, int, int, int]] = []

    async def check_and_increment(self, key: str, bucket: BucketConfig, cost: int) -> Any:
        from types import SimpleNamespace

        self.calls.append((key, bucket.limit, bucket.window_sec, cost))
        window = int(self.clock.now() // bucket.window_sec)
        reset_ms = (window + 1) * bucket.window_sec * 1000
        used = self.counts.get((key, window), 0)
        if used + cost > bucket.limit:
            retry_after_ms = reset_ms - int(self.clock.now() * 1000)
            return SimpleNamespace(
                allowed=False, limit=bucket.limit, remaining=0, reset_ms=reset_ms, retry_after_ms=retry_after_ms
            )
        self.counts[(key, window)] = used + cost
        return SimpleNamespace(
            allowed=True, limit=bucket.limit, remaining=bucket.limit - used - cost, reset_ms=reset_ms
        )


def test_a_custom_fastlimit_backend_gets_the_same_headers(clock: FakeClock) -> None:
    backend = CountingBackend(clock)
    app = make_app(FastLimit(backend=backend, clock=clock))

    @app.get("/", dependencies=[rate_limit(rule(ip="2/min", name="root"))])
    async def root() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    responses = [client.get("/") for _ in range(3)]
    assert [limits(r) for r in responses] == [
        (200, "2", "1", str(T0 + 60), None),
        (200, "2", "0", str(T0 + 60), None),
        (429, "2", "0", str(T0 + 60), "60"),
    ]
    assert backend.calls[0] == ("root:ip:testclient", 2, 60, 1), "keys as fastlimit gives them to a backend"


def test_fastlimit_rule_objects_with_bucket_configs(clock: FakeClock) -> None:
    from ferrolimit import RateLimitRule

    app = make_app(FastLimit(clock=clock))
    upload = RateLimitRule(name="upload", ip_limit=BucketConfig(window_sec=60, limit=2))

    @app.get("/", dependencies=[rate_limit(upload)])
    async def root() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
    with pytest.raises(ValueError, match="window_sec must be positive, got 0"):
        BucketConfig(window_sec=0, limit=1)


def test_requests_through_the_dependency_leave_no_reference_cycles() -> None:
    """The dependency's pending headers live in the request's scope; nothing there may point back at the
    server's objects, or every request would leave a cycle for the garbage collector."""
    import gc

    from tests.test_starlette import _asgi_requests

    app = FastAPI()

    @app.get("/", dependencies=[rate_limit("1000/min")])
    async def index() -> dict[str, str]:
        return {"hello": "world"}

    FastLimit(algorithm="gcra", clock=FakeClock(T0)).init_app(app)
    _asgi_requests(app, 5)  # warm up: FastAPI builds its middleware stack and caches
    gc.collect()
    gc.disable()
    try:
        started = _asgi_requests(app, 50)
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert started[-1]["status"] == 200
    assert (b"x-ratelimit-remaining", b"945") in started[-1]["headers"]  # type: ignore[operator]


def test_route_caches_stay_one_entry_per_route_through_included_routers() -> None:
    """The per-route caches are keyed by the matched route; FastAPI builds a router's effective routes once
    per inclusion, so many requests (to two inclusions of one router) leave one entry per inclusion."""
    limited = rate_limit("1000/min")
    router = APIRouter()

    @router.get("/items/{item_id}", dependencies=[limited])
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    app = FastAPI()
    app.include_router(router, prefix="/v1")
    app.include_router(router, prefix="/v2")
    fastlimit = FastLimit(clock=FakeClock(T0))
    fastlimit.init_app(app)
    client = TestClient(app)
    for n in range(30):
        assert client.get(f"/v1/items/{n}").headers["x-ratelimit-remaining"] == str(999 - n)
        assert client.get(f"/v2/items/{n}").headers["x-ratelimit-remaining"] == str(999 - n)
    assert len(limited.dependency.__ferrolimit__._plans) == 2
    assert len(fastlimit._route_limits) == 2
    assert set(fastlimit.stats()) == {"GET /v1/items/{item_id}", "GET /v2/items/{item_id}"}


def test_a_rate_limit_exceeded_the_app_raises_itself_is_a_429_as_fastlimit_makes_it(clock: FakeClock) -> None:
    app = make_app(FastLimit(clock=clock))

    @app.get("/quota")
    async def quota() -> None:
        raise RateLimitExceeded(retry_after=30, detail="Monthly quota used up")

    @app.get("/plan")
    async def plan() -> None:
        raise RateLimitExceeded(7, "Plan limit reached", limit=1000, reset_ms=(T0 + 3600) * 1000)

    client = TestClient(app)
    used_up = client.get("/quota")
    assert limits(used_up) == (429, None, None, None, "30")
    assert used_up.json() == {"detail": "Monthly quota used up", "retry_after": 30}
    plan_reached = client.get("/plan")
    assert limits(plan_reached) == (429, "1000", "0", str(T0 + 3600), "7")
    assert plan_reached.json() == {"detail": "Plan limit reached", "retry_after": 7}


def test_init_app_again_on_the_same_app_replaces_the_limiter(clock: FakeClock) -> None:
    """As a test fixture does, making a fresh limiter for each test of one module-level app."""
    app = FastAPI()

    @app.get("/x", dependencies=[rate_limit("2/min")])
    async def x() -> dict[str, bool]:
        return {"ok": True}

    statuses = []
    for number in range(3):
        handler = (lambda request, exc, n=number: PlainTextResponse(f"slow down {n}", 429)) if number else None
        FastLimit(clock=clock, error_handler=handler).init_app(app)  # the 2nd and 3rd after the app started
        client = TestClient(app)
        responses = [client.get("/x") for _ in range(3)]
        statuses.append([response.status_code for response in responses])
        assert responses[1].headers["x-ratelimit-remaining"] == "0", "the headers come from the new limiter"
        if number:
            assert responses[2].text == f"slow down {number}", "the new limiter's error handler answers"
    assert statuses == [[200, 200, 429]] * 3


def test_init_app_after_the_app_started_still_limits_and_says_what_is_lost(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()

    @app.get("/x", dependencies=[rate_limit("1/min")])
    async def x() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    with pytest.raises(FastLimitNotInitialized):
        client.get("/x")
    with caplog.at_level(logging.WARNING, logger="ferrolimit"):
        FastLimit(clock=clock, error_handler=lambda request, exc: PlainTextResponse("unused", 429)).init_app(app)
    assert "after the app started" in caplog.text and "error_handler is not used" in caplog.text
    assert client.get("/x").status_code == 200
    refused = client.get("/x")
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "60")
    assert refused.json() == {"detail": "Rate limit exceeded: 1 per 1 minute"}, "FastAPI's own HTTPException body"


def test_a_limit_on_the_app_serves_its_websocket_routes_too(clock: FakeClock) -> None:
    app = make_app(FastLimit(clock=clock), dependencies=[rate_limit("2/min")])

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    @app.get("/x")
    async def x() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    for _ in range(2):
        with client.websocket_connect("/ws") as websocket:
            websocket.send_text("hi")
            assert websocket.receive_text() == "hi"
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws"):
        pass
    assert (refused.value.code, refused.value.reason) == (1008, "Rate limit exceeded: 2 per 1 minute")
    assert client.get("/x").headers["x-ratelimit-remaining"] == "1", "HTTP routes have their own quota"


def test_a_field_the_handler_sets_itself_is_not_repeated(clock: FakeClock) -> None:
    app = make_app(FastLimit(clock=clock))

    @app.get("/relay", dependencies=[rate_limit("5/min")])
    async def relay(response: Response) -> dict[str, bool]:
        response.headers["X-RateLimit-Limit"] = "999"  # the upstream's limit, relayed
        return {"ok": True}

    response = TestClient(app).get("/relay")
    assert response.headers.get_list("x-ratelimit-limit") == ["999"]
    assert response.headers.get_list("x-ratelimit-remaining") == ["4"]


def test_a_rate_the_algorithm_cannot_hold_fails_at_configuration_naming_the_route(clock: FakeClock) -> None:
    """The default algorithm keeps a timestamp per unit, up to 100,000 per period: a larger limit is refused
    when the app starts (or at init_app, for the routes declared by then), never as a 500 on a request."""
    limiter = FastLimit(clock=clock)
    app = make_app(limiter)

    @app.get("/bulk", dependencies=[rate_limit("200000/day")])
    async def bulk() -> dict[str, bool]:
        return {"ok": True}

    with pytest.raises(ValueError, match=r"^the rate limit of /bulk: the sliding_window_log algorithm keeps one"):
        with TestClient(app):
            pass
    with pytest.raises(ValueError, match="the rate limit of /bulk"):
        FastLimit(clock=clock).init_app(app)
    fine = FastAPI()

    @fine.get("/bulk", dependencies=[rate_limit("200000/day")])
    async def also_bulk() -> dict[str, bool]:
        return {"ok": True}

    FastLimit(algorithm="gcra", clock=clock).init_app(fine)
    with TestClient(fine) as client:
        assert client.get("/bulk").headers["x-ratelimit-remaining"] == "199999"


def test_the_documented_custom_backend_imports_work(clock: FakeClock) -> None:
    """fastlimit's guide writes a backend with `from fastlimit.backends import Backend, BackendResult` and
    `from fastlimit.rules import BucketConfig`: with the import switched, the same backend runs."""
    from ferrolimit.backends import Backend, BackendResult
    from ferrolimit.rules import BucketConfig as RulesBucketConfig
    from ferrolimit.rules import RateLimitRule, rule

    class MyBackend:
        async def check_and_increment(self, key: str, bucket: RulesBucketConfig, cost: int) -> BackendResult:
            reset_ms = int(clock.now() * 1000) + bucket.window_sec * 1000
            if key.endswith(":blocked"):
                return BackendResult(
                    allowed=False, limit=bucket.limit, remaining=0, reset_ms=reset_ms, retry_after_ms=30_000
                )
            return BackendResult(allowed=True, limit=bucket.limit, remaining=9, reset_ms=reset_ms)

    assert isinstance(MyBackend(), Backend)
    assert RulesBucketConfig is BucketConfig and isinstance(rule("10/min"), RateLimitRule)
    app = make_app(FastLimit(backend=MyBackend(), clock=clock))

    @app.get("/", dependencies=[rate_limit("10/min", key=lambda request: request.query_params.get("k"))])
    async def root() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    assert limits(client.get("/")) == (200, "10", "9", str(T0 + 60), None)
    assert limits(client.get("/?k=blocked")) == (429, "10", "0", str(T0 + 60), "30")
    result = BackendResult(allowed=True, limit=5, remaining=4, reset_ms=1)
    assert (result.allowed, result.limit, result.remaining, result.reset_ms, result.retry_after_ms) == (
        True,
        5,
        4,
        1,
        0,
    )


def test_rate_limit_exceeded_reads_as_its_detail() -> None:
    """fastlimit's RateLimitExceeded is an Exception whose text is its detail: an error handler or a log line
    that prints it shows the detail, not "429: ..."."""
    exc = RateLimitExceeded(retry_after=5, detail="slow down")
    assert str(exc) == "slow down" and exc.args == ("slow down",)
    assert (exc.retry_after, exc.detail, exc.limit, exc.reset_ms, exc.status_code) == (5, "slow down", None, None, 429)
    assert str(RateLimitExceeded(7)) == "Too many requests."


def test_rate_limit_exceeded_copies_and_pickles_with_its_fields() -> None:
    """`args` is `(detail,)` as fastlimit's: copying or pickling the exception (an error reporter, a process
    pool) rebuilds it from its fields, not by passing the detail as `retry_after`."""
    import copy
    import pickle

    exc = RateLimitExceeded(retry_after=5, detail="slow down", limit=10, reset_ms=1_000)
    for clone in (copy.copy(exc), copy.deepcopy(exc), pickle.loads(pickle.dumps(exc))):
        assert (str(clone), clone.args, clone.retry_after, clone.limit, clone.reset_ms) == (
            "slow down",
            ("slow down",),
            5,
            10,
            1_000,
        )
        assert clone.headers == {"Retry-After": "5"}
