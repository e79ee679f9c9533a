"""Spoofing and flooding: forged forwarding headers, IPv6 rotation, hostile headers and paths, bounded memory."""

from __future__ import annotations

import asyncio
import random

from fastapi import FastAPI
from fastapi.testclient import TestClient

from ferrolimit import FakeClock, FastLimit, Limiter, RateLimitMiddleware, rate_limit
from ferrolimit.keys import _group_ipv6, _parse_address


def limited_app(clock: FakeClock, **options: object) -> FastAPI:
    app = FastAPI()
    FastLimit(clock=clock, **options).init_app(app)  # type: ignore[arg-type]

    @app.get("/", dependencies=[rate_limit("3/min")])
    async def root() -> dict[str, bool]:
        return {"ok": True}

    return app


def test_rotating_x_forwarded_for_without_a_trusted_proxy_changes_nothing(clock: FakeClock) -> None:
    client = TestClient(limited_app(clock), client=("198.51.100.7", 5000))
    statuses = [client.get("/", headers={"x-forwarded-for": f"203.0.113.{n}"}).status_code for n in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]
    forwarded = [client.get("/", headers={"forwarded": f"for=203.0.113.{n}"}).status_code for n in range(2)]
    assert forwarded == [429, 429]


def test_behind_one_proxy_the_rightmost_untrusted_address_is_the_client(clock: FakeClock) -> None:
    for trusted in (1, ["10.0.0.0/8"]):
        proxy = TestClient(limited_app(clock, trusted_proxies=trusted), client=("10.0.0.2", 5000))
        # The client forges the left part; the proxy appends the address it saw.
        forged = [
            proxy.get("/", headers={"x-forwarded-for": f"203.0.113.{n}, 198.51.100.7"}).status_code for n in range(4)
        ]
        assert forged == [200, 200, 200, 429], trusted
        other = proxy.get("/", headers={"x-forwarded-for": "203.0.113.1, 198.51.100.8"})
        assert other.status_code == 200, "another client behind the same proxy has its own quota"


def test_a_trusted_proxy_list_ignores_headers_from_anyone_else(clock: FakeClock) -> None:
    app = limited_app(clock, trusted_proxies=["10.0.0.0/8"])
    direct = TestClient(app, client=("198.51.100.9", 5000))
    statuses = [direct.get("/", headers={"x-forwarded-for": f"203.0.113.{n}"}).status_code for n in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_ipv6_clients_rotating_within_a_64_share_a_limit(clock: FakeClock) -> None:
    app = limited_app(clock)
    statuses = [TestClient(app, client=(f"2001:db8:1:2::{n:x}", 5000)).get("/").status_code for n in range(1, 5)]
    assert statuses == [200, 200, 200, 429]
    assert TestClient(app, client=("2001:db8:1:3::1", 5000)).get("/").status_code == 200
    narrow = limited_app(clock, ipv6_prefix=128)
    statuses = [TestClient(narrow, client=(f"2001:db8:1:2::{n:x}", 5000)).get("/").status_code for n in range(1, 5)]
    assert statuses == [200, 200, 200, 200]


def test_hostile_headers_and_paths_never_crash(clock: FakeClock) -> None:
    app = limited_app(clock, trusted_proxies=2)

    @app.get("/items/{item_id}", dependencies=[rate_limit("1000/min")])
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    client = TestClient(app, client=("10.0.0.2", 5000))
    rng = random.Random(7)
    for _ in range(200):
        junk = bytes(rng.randrange(32, 256) for _ in range(rng.randrange(0, 80)))
        headers = {b"x-forwarded-for": junk, b"forwarded": junk, b"x-real-ip": junk}
        path = "/items/" + "".join(rng.choice("abc%20/é..;,[]:") for _ in range(rng.randrange(1, 30)))
        assert client.get(path, headers=headers).status_code in {200, 404, 429}
        assert client.get("/", headers=headers).status_code in {200, 429}


def test_100k_requests_with_random_forwarded_for_and_paths_stay_bounded() -> None:
    max_keys = 5_000

    async def hello(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    middleware = RateLimitMiddleware(
        hello,
        limit="5/min",
        rules={"/items/{item_id}": "2/min", "/static/*": None},
        trusted_proxies=1,
        max_keys=max_keys,
        clock=FakeClock(),
    )
    rng = random.Random(42)
    statuses: dict[int, int] = {}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            status = int(message["status"])  # type: ignore[call-overload]
            statuses[status] = statuses.get(status, 0) + 1

    async def flood() -> None:
        for n in range(100_000):
            forwarded = f"{rng.getrandbits(32) >> 24}.{rng.getrandbits(8)}.{rng.getrandbits(8)}.{rng.getrandbits(8)}"
            if n % 3 == 0:
                forwarded = f"2001:db8:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}"
            path = rng.choice(["/items/", "/static/", "/x/"]) + str(rng.getrandbits(40))
            scope = {
                "type": "http",
                "method": "GET",
                "path": path,
                "headers": [(b"x-forwarded-for", forwarded.encode())],
                "client": ("10.0.0.1", 40000 + n % 1000),
            }
            await middleware(scope, receive, send)  # type: ignore[arg-type]

    asyncio.run(flood())
    assert sum(statuses.values()) == 100_000 and set(statuses) <= {200, 429}
    store = middleware.limiter
    assert isinstance(store, Limiter)
    assert len(store) <= max_keys, "the store holds at most max_keys keys"
    assert store.stats()["store_full"] > 0, "new keys beyond the cap were let through untracked"
    assert set(middleware.stats()) == {"default", "/items/{item_id}"}, "counts are per rule, never per key or path"
    assert _parse_address.cache_info().currsize <= 8192 and _group_ipv6.cache_info().currsize <= 8192


def test_a_proxy_named_by_its_address_is_trusted_when_a_dual_stack_server_maps_it(clock: FakeClock) -> None:
    """uvicorn --host :: reports an IPv4 proxy as ::ffff:10.0.0.1: the proxy is still trusted, on the native path
    (one plain limit) and on the general one (an ip + user limit), so its clients are not pooled as one."""
    app = FastAPI()
    FastLimit(clock=clock, trusted_proxies=["10.0.0.1"], user_id_func=lambda r: r.headers.get("x-user")).init_app(app)

    @app.get("/plain", dependencies=[rate_limit("2/min")])
    async def plain() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/dual", dependencies=[rate_limit(ip="2/min", user="50/min")])
    async def dual() -> dict[str, bool]:
        return {"ok": True}

    proxy = TestClient(app, client=("::ffff:10.0.0.1", 5000))
    for path in ("/plain", "/dual"):
        statuses = [proxy.get(path, headers={"x-forwarded-for": f"198.51.100.{n}"}).status_code for n in range(4)]
        assert statuses == [200] * 4, path
        same = [proxy.get(path, headers={"x-forwarded-for": "198.51.100.9"}).status_code for _ in range(3)]
        assert same == [200, 200, 429], path
