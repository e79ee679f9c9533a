"""The HTTP examples do what they say: examples/fastapi_app.py, starlette_app.py and tutorial_middleware.py."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from ferrolimit import FakeClock, RateLimiterStore

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fastapi_example_limits_ip_user_and_api_key(clock: FakeClock) -> None:
    client = TestClient(load("fastapi_app").create_app(clock))
    anonymous = [client.get("/hello") for _ in range(6)]
    assert [r.status_code for r in anonymous] == [200] * 5 + [429]
    assert anonymous[5].headers["retry-after"] == "60"
    signed_in = [client.get("/hello", headers={"x-user": "ada"}) for _ in range(21)]
    assert [r.status_code for r in signed_in] == [200] * 20 + [429]
    assert signed_in[0].headers["x-ratelimit-limit"] == "20"
    key = {"x-api-key": "k1"}
    shared = [client.get(path, headers=key).status_code for path in ["/search", "/suggest", "/search", "/suggest"]]
    assert shared == [200, 200, 200, 429], "one quota for both routes"
    assert client.get("/search", headers={"x-api-key": "k2"}).status_code == 200


def test_fastapi_example_demo_serves_a_burst(capsys: pytest.CaptureFixture[str]) -> None:
    load("fastapi_app").demo(burst=7)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines] == ["200"] * 5 + ["429"] * 2
    assert "x-ratelimit-remaining: 0" in lines[4] and "retry-after: 60" in lines[5]


def test_starlette_example_rules_exemptions_and_websocket_messages(clock: FakeClock) -> None:
    from starlette.testclient import TestClient as StarletteClient

    client = StarletteClient(load("starlette_app").create_app(clock))
    assert [client.post("/login").status_code for _ in range(6)] == [200] * 5 + [429]
    assert [client.get(f"/api/hello/{n}").status_code for n in range(21)] == [200] * 20 + [429]
    health = [client.get("/health") for _ in range(150)]
    assert {r.status_code for r in health} == {200} and "x-ratelimit-limit" not in health[0].headers
    assert client.get("/").headers["x-ratelimit-remaining"] == "74", "100/min minus the 25 allowed before and this one"
    with client.websocket_connect("/chat") as websocket:
        replies = []
        for n in range(6):
            websocket.send_text(str(n))
            replies.append(websocket.receive_json())
    assert replies[:5] == [{"echo": str(n)} for n in range(5)]
    assert replies[5] == {"error": "slow down", "retry_after": 0.2}


def test_tutorial_app_runs_unchanged_on_ferrolimit() -> None:
    tutorial = load("tutorial_middleware")
    store = RateLimiterStore(max_tokens=10, refill_rate=2, interval=1.0, clock=FakeClock(time.time()))
    tutorial.limiter = store  # type: ignore[attr-defined]
    client = TestClient(tutorial.app)
    responses = [client.get("/data") for _ in range(11)]
    assert [r.status_code for r in responses] == [200] * 10 + [429]
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == [str(n) for n in range(9, -1, -1)] + ["0"]
    assert responses[0].headers["x-ratelimit-limit"] == "10"
    assert responses[10].json() == {"detail": "Too many requests. Try again later."}
    assert responses[10].headers["retry-after"] == "1"
