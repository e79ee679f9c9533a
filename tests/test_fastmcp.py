"""ferrolimit.fastmcp next to FastMCP's own rate limiting, through the clients a user would run."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import runpy
import socket
import subprocess
import sys
import types
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp
import pytest
from fastmcp import Client, FastMCP
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.exceptions import FastMCPDeprecationWarning
from fastmcp.server.auth.providers.jwt import StaticTokenVerifier
from fastmcp.server.middleware import Middleware, MiddlewareContext
from fastmcp.server.middleware import rate_limiting as fastmcp_rate_limiting

import ferrolimit.fastmcp as ours
from ferrolimit import FakeClock
from tests.redis_server import RedisServer

MODES = ["auto", "legacy"]
# What the client saw for one step: "ok", or the error's code and message ("connect" first if connecting failed).
Outcome = str | tuple[Any, ...]
# A script step: "call" (call_tool with arguments), "bare" (call_tool_mcp without), "list", "ping",
# "connect" (close this client and open a new one), or seconds to move the clock.
Step = str | float


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> FakeClock:
    """One clock for both: ferrolimit takes it as ``clock=``, FastMCP's middleware reads it as time.monotonic."""
    monkeypatch.setattr(fastmcp_rate_limiting, "time", types.SimpleNamespace(monotonic=clock.now))
    return clock


def echo_server(*middleware: Middleware, auth: StaticTokenVerifier | None = None) -> FastMCP:
    server = FastMCP("echo", middleware=list(middleware), auth=auth)

    @server.tool
    def echo(text: str = "") -> str:
        return text

    @server.tool
    def search(query: str = "") -> str:
        return f"results for {query}"

    @server.tool
    def render() -> str:
        return "rendered"

    @server.prompt
    def summarize(topic: str) -> str:
        return f"Summarize {topic}"

    @server.resource("data://{name}")
    def data(name: str) -> str:
        return f"data {name}"

    return server


async def outcome(step: Awaitable[Any]) -> Outcome:
    try:
        await step
    except mcp.MCPError as error:
        return (error.code, error.message)
    return "ok"


async def play(server: FastMCP, mode: str, clock: FakeClock, script: Sequence[Step]) -> list[Outcome]:
    """Runs ``script`` against ``server`` and returns what the client saw at each step."""
    outcomes: list[Outcome] = []
    remaining = list(script)
    while remaining:
        try:
            async with Client(server, mode=mode) as client:
                outcomes.append("ok")  # connected
                while remaining:
                    step = remaining.pop(0)
                    if step == "connect":
                        break
                    if isinstance(step, float):
                        clock.advance(step)
                        continue
                    actions: dict[str, Callable[[], Awaitable[Any]]] = {
                        "call": lambda: client.call_tool("echo", {"text": "hi"}),
                        "bare": lambda: client.call_tool_mcp("render", {}),
                        "list": client.list_tools,
                        "ping": client.ping,
                    }
                    outcomes.append(await outcome(actions[str(step)]()))
        except mcp.MCPError as error:
            outcomes.append(("connect", error.code, error.message))
            while remaining and remaining[0] != "connect":
                remaining.pop(0)
            if remaining:
                remaining.pop(0)
    return outcomes


def fixed_id(context: MiddlewareContext[Any]) -> str:
    return "agent-7"


async def async_id(context: MiddlewareContext[Any]) -> str:
    return "agent-8"


BURST_SCRIPT: list[Step] = ["call", "call", "call", "bare", 0.25, "bare", 0.25, "bare", "list", "bare", 2.0, "bare"]
DROP_IN_CASES: list[tuple[str, dict[str, Any], list[Step]]] = [
    ("token bucket", {"max_requests_per_second": 2, "burst_capacity": 4}, BURST_SCRIPT),
    ("defaults", {}, [*["bare"] * 22, 0.125, "bare", "bare"]),
    ("slow rate", {"max_requests_per_second": 0.25}, ["bare", 3.5, "bare", 0.5, "bare", "bare"]),
    (
        "burst 0 means default",
        {"max_requests_per_second": 1, "burst_capacity": 0},
        ["bare", "bare", "bare", 1.0, "bare"],
    ),
    ("global limit", {"max_requests_per_second": 2, "burst_capacity": 3, "global_limit": True}, BURST_SCRIPT),
    ("sync client id", {"max_requests_per_second": 2, "burst_capacity": 4, "get_client_id": fixed_id}, BURST_SCRIPT),
    ("async client id", {"max_requests_per_second": 2, "burst_capacity": 4, "get_client_id": async_id}, BURST_SCRIPT),
    (
        "connect refused",
        {"max_requests_per_second": 1, "burst_capacity": 3, "get_client_id": fixed_id},
        ["bare", "connect", "bare", 1.0, "bare"],
    ),
    (
        "zero rate with a burst",
        {"max_requests_per_second": 0, "burst_capacity": 4, "get_client_id": fixed_id},
        ["bare", "bare", 1e8, "bare", 2e8, "bare"],  # 3 and 9.5 years on: the bucket never refills
    ),
]
SLIDING_CASES: list[tuple[str, dict[str, Any], list[Step]]] = [
    ("sliding window", {"max_requests": 3}, ["bare", "bare", "bare", 30.0, "list", 29.5, "list", 1.0, "bare", "bare"]),
    (
        "sliding 2 min",
        {"max_requests": 2, "window_minutes": 2, "get_client_id": fixed_id},
        ["call", 119.0, "call", 2.0, "bare"],
    ),
]


def same_client(message: str) -> str:
    """ferrolimit names a legacy session where FastMCP says "global" (see test_default_identity_*)."""
    return re.sub(r"session:[0-9a-f-]+$", "global", message)


def normalised(outcomes: list[Outcome]) -> list[Outcome]:
    return [item if isinstance(item, str) else (*item[:-1], same_client(item[-1])) for item in outcomes]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("name", "options", "script"), [pytest.param(*case, id=case[0]) for case in DROP_IN_CASES + SLIDING_CASES]
)
def test_drop_in_matches_fastmcp_step_for_step(
    fake_time: FakeClock, mode: str, name: str, options: dict[str, Any], script: list[Step]
) -> None:
    sliding = (name, options, script) in SLIDING_CASES
    theirs_class = (
        fastmcp_rate_limiting.SlidingWindowRateLimitingMiddleware
        if sliding
        else fastmcp_rate_limiting.RateLimitingMiddleware
    )
    ours_class = ours.SlidingWindowRateLimitingMiddleware if sliding else ours.RateLimitingMiddleware
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FastMCPDeprecationWarning)
        theirs = asyncio.run(play(echo_server(theirs_class(**options)), mode, fake_time, script))
        fake_time.advance(1000)
        mine = asyncio.run(play(echo_server(ours_class(**options, clock=fake_time)), mode, fake_time, script))
    assert any(item != "ok" for item in theirs), "the script never reaches the limit"
    assert normalised(mine) == normalised(theirs)
    if mode == "auto" or "get_client_id" in options:
        assert mine == theirs  # word for word, client names included


def test_concurrent_calls_never_pass_more_than_the_burst(clock: FakeClock) -> None:
    middleware = ours.RateLimitingMiddleware(1, 10, get_client_id=fixed_id, clock=clock)

    async def scenario() -> list[Outcome]:
        async with Client(echo_server(middleware), mode="legacy") as client:  # 1
            await client.call_tool_mcp("render", {})  # 2 more: the call and the listing of tools
            return await asyncio.gather(*(outcome(client.call_tool_mcp("render", {})) for _ in range(30)))

    outcomes = asyncio.run(scenario())
    assert outcomes.count("ok") == 7
    assert outcomes.count((-32000, "Rate limit exceeded for client: agent-7")) == 23


def test_over_the_limit_errors_carry_retry_after(clock: FakeClock) -> None:
    middleware = ours.RateLimitingMiddleware(2, 4, get_client_id=fixed_id, clock=clock)

    async def scenario() -> list[Any]:
        seen: list[Any] = []
        async with Client(echo_server(middleware), mode="legacy") as client:  # initialize: 1 token
            await client.call_tool_mcp("render", {})  # 2: the client lists the tools once to read their schemas
            await client.call_tool_mcp("render", {})  # 1
            for advance in (0.0, 0.2, 0.3):
                clock.advance(advance)
                with pytest.raises(mcp.MCPError) as caught:
                    await client.call_tool_mcp("render", {})
                    await client.call_tool_mcp("render", {})
                seen.append((caught.value.code, caught.value.message, caught.value.data))
        return seen

    assert asyncio.run(scenario()) == [
        (-32000, "Rate limit exceeded for client: agent-7", {"retry_after": 0.5}),
        (-32000, "Rate limit exceeded for client: agent-7", {"retry_after": 0.3}),
        (-32000, "Rate limit exceeded for client: agent-7", {"retry_after": 0.5}),  # one passed at 0.5 s
    ]


def test_sliding_window_retry_after_is_when_the_oldest_request_leaves(clock: FakeClock) -> None:
    middleware = ours.SlidingWindowRateLimitingMiddleware(3, window_minutes=1, get_client_id=fixed_id, clock=clock)

    async def scenario() -> Any:
        async with Client(echo_server(middleware), mode="legacy") as client:  # 1 at 0 s
            clock.advance(10)
            await client.call_tool_mcp("render", {})  # 2 at 10 s: the call, and the client's listing of tools
            clock.advance(5)
            with pytest.raises(mcp.MCPError) as caught:
                await client.call_tool_mcp("render", {})
            return caught.value.message, caught.value.data

    assert asyncio.run(scenario()) == (
        "Rate limit exceeded: 3 requests per 1 minutes for client: agent-7",
        {"retry_after": 45.0},
    )


def test_rate_limit_error_is_fastmcps_error_with_retry_data() -> None:
    error = ours.RateLimitError("Rate limit exceeded for client: x", retry_after=1.5)
    assert isinstance(error, fastmcp_rate_limiting.RateLimitError) and isinstance(error, mcp.MCPError)
    assert (error.code, error.message, error.data) == (
        -32000,
        "Rate limit exceeded for client: x",
        {"retry_after": 1.5},
    )
    assert error.retry_after == 1.5 and str(error) == "Rate limit exceeded for client: x"
    default = ours.RateLimitError()
    assert (default.code, default.message, default.retry_after) == (-32000, "Rate limit exceeded", None)


@pytest.mark.parametrize(
    ("rate", "burst"),
    [
        (10.0, None),
        (2.5, None),
        (0.3, None),
        (0.0, None),
        (1.0, 0),
        (3.0, 7),
        (0.5, 1),
        (0.0, 5),
        (-1.0, 5),
        (-1.0, None),
        (1 / 86400, 5000),
        (1e-9, 5),
        (1e12, 5),
    ],
)
def test_drop_in_attributes_match_fastmcp(rate: float, burst: int | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FastMCPDeprecationWarning)
        theirs = fastmcp_rate_limiting.RateLimitingMiddleware(rate, burst)
        mine = ours.RateLimitingMiddleware(rate, burst)
    assert (mine.max_requests_per_second, mine.burst_capacity, mine.get_client_id, mine.global_limit) == (
        theirs.max_requests_per_second,
        theirs.burst_capacity,
        theirs.get_client_id,
        theirs.global_limit,
    )


def test_burst_below_one_warns_like_fastmcp_and_refuses_everything(clock: FakeClock) -> None:
    with pytest.warns(FastMCPDeprecationWarning, match=r"burst_capacity=0\.5.*Pass burst_capacity=1"):
        middleware = ours.RateLimitingMiddleware(5, 0.5, get_client_id=fixed_id, clock=clock)  # type: ignore[arg-type]
    outcomes = asyncio.run(play(echo_server(middleware), "legacy", clock, ["bare"]))
    assert outcomes == [("connect", -32000, "Rate limit exceeded for client: agent-7")]


def test_zero_rate_refuses_everything_with_no_retry_time(clock: FakeClock) -> None:
    middleware = ours.RateLimitingMiddleware(0)
    assert middleware.burst_capacity == 0

    async def scenario() -> Any:
        with pytest.raises(mcp.MCPError) as caught:
            async with Client(echo_server(middleware), mode="legacy"):
                pass
        return caught.value.data

    assert asyncio.run(scenario()) == {"retry_after": None}


def test_zero_rate_with_a_burst_admits_the_burst_then_refuses_for_years_with_no_retry_time(clock: FakeClock) -> None:
    middleware = ours.RateLimitingMiddleware(0, 4, get_client_id=fixed_id, clock=clock)

    async def scenario() -> tuple[list[Outcome], Any]:
        async with Client(echo_server(middleware), mode="legacy") as client:  # 1
            calls = [await outcome(client.call_tool_mcp("render", {})) for _ in range(3)]  # 2, 1, then none
            clock.advance(9 * 365 * 86400)
            with pytest.raises(mcp.MCPError) as caught:
                await client.call_tool_mcp("render", {})
        return calls, (caught.value.code, caught.value.message, caught.value.data)

    assert asyncio.run(scenario()) == (
        ["ok", "ok", (-32000, "Rate limit exceeded for client: agent-7")],
        (-32000, "Rate limit exceeded for client: agent-7", {"retry_after": None}),
    )


async def consume_all(bucket: Any, clock: FakeClock, script: Sequence[int | float]) -> list[bool]:
    """Integers are requests for that many tokens, floats are seconds to wait."""
    results = []
    for step in script:
        if isinstance(step, float):
            clock.advance(step)
        else:
            results.append(await bucket.consume(step))
    return results


def test_token_bucket_rate_limiter_matches_fastmcp(fake_time: FakeClock) -> None:
    script: list[int | float] = [1, 1, 3, 1, 0.5, 1, 1, 0.25, 2, 0.75, 2, 1, 0, 6, 10.0, 5, 1, 0.125, 1]
    theirs = asyncio.run(consume_all(fastmcp_rate_limiting.TokenBucketRateLimiter(5, 2.0), fake_time, script))
    mine = asyncio.run(consume_all(ours.TokenBucketRateLimiter(5, 2.0, clock=fake_time), fake_time, script))
    assert mine == theirs
    assert mine.count(False) >= 4


@pytest.mark.parametrize(
    ("capacity", "refill_rate", "script"),
    [
        (5, 0.0, [1, 1, 3, 1, 1e8, 1, 2e8, 1, 0]),  # never refills: 3 and 9.5 years on, still empty
        (5, -1.0, [2, 3, 1, 1e8, 1]),  # taken as 0; FastMCP's drains, which no wait here shows before it is empty
        # The burst, then a token a day (here every 17.5 hours: 5000 per ten years, the closest the core allows).
        (5000, 1 / 86400, [4999, 1, 1, 86400.0, 1, 1]),
        (3, 1e-9, [3, 1, 2e8, 1]),  # a token would take 31 years to come back
    ],
)
def test_token_bucket_rate_limiter_with_slow_or_no_refill_matches_fastmcp(
    fake_time: FakeClock, capacity: int, refill_rate: float, script: list[int | float]
) -> None:
    theirs = asyncio.run(
        consume_all(fastmcp_rate_limiting.TokenBucketRateLimiter(capacity, refill_rate), fake_time, script)
    )
    mine = asyncio.run(
        consume_all(ours.TokenBucketRateLimiter(capacity, refill_rate, clock=fake_time), fake_time, script)
    )
    assert mine == theirs
    assert mine.count(False) >= 2


def test_token_bucket_rate_limiter_reports_its_tokens(clock: FakeClock) -> None:
    bucket = ours.TokenBucketRateLimiter(capacity=3, refill_rate=1.0, clock=clock)
    assert (bucket.capacity, bucket.refill_rate, bucket.tokens) == (3, 1.0, 3.0)
    assert asyncio.run(bucket.consume(2)) and bucket.tokens == 1.0
    assert not asyncio.run(bucket.consume(2))
    assert bucket.tokens == 1.0  # a refused request takes nothing
    with pytest.raises(ValueError, match="tokens must be 0 or more"):
        asyncio.run(bucket.consume(-1))


def test_sliding_window_rate_limiter_matches_fastmcp(fake_time: FakeClock) -> None:
    async def run(limiter: Any) -> list[bool]:
        results = []
        for step in [None, None, 3.0, None, None, 7.5, None, None, None, 3.0, None, 10.0, None]:
            if step is None:
                results.append(await limiter.is_allowed())
            else:
                fake_time.advance(step)
        return results

    theirs = asyncio.run(run(fastmcp_rate_limiting.SlidingWindowRateLimiter(3, 10)))
    mine = asyncio.run(run(ours.SlidingWindowRateLimiter(3, 10, clock=fake_time)))
    assert mine == theirs == [True, True, True, False, True, True, False, True, True]


def test_windows_longer_than_ten_years_count_for_ten_years(clock: FakeClock) -> None:
    limiter = ours.SlidingWindowRateLimiter(2, 10**10, clock=clock)
    middleware = ours.SlidingWindowRateLimitingMiddleware(3, window_minutes=10**8, get_client_id=fixed_id, clock=clock)

    async def scenario() -> list[Any]:
        seen: list[Any] = [await limiter.is_allowed() for _ in range(3)]
        async with Client(echo_server(middleware), mode="legacy") as client:  # 1
            seen.append(await outcome(client.call_tool_mcp("render", {})))  # 2 more: the call and the listing
            clock.advance(9 * 365 * 86400)
            seen.append(await limiter.is_allowed())
            seen.append(await outcome(client.call_tool_mcp("render", {})))
        return seen

    assert asyncio.run(scenario()) == [
        True,
        True,
        False,
        "ok",
        False,
        (-32000, "Rate limit exceeded: 3 requests per 100000000 minutes for client: agent-7"),
    ]


# ----- identity -----


def test_default_identity_is_global_without_a_session_and_the_session_on_legacy_connections(clock: FakeClock) -> None:
    middleware = ours.RateLimitingMiddleware(0.001, 2, clock=clock)
    server = echo_server(middleware)

    async def first_refusal(mode: str) -> str:
        async with Client(server, mode=mode) as client:
            while True:
                result = await outcome(client.call_tool_mcp("render", {}))
                if result != "ok":
                    return result[1]

    assert asyncio.run(first_refusal("auto")) == "Rate limit exceeded for client: global"
    # Each legacy session is its own client, with its own two tokens; FastMCP's would share "global".
    first = asyncio.run(first_refusal("legacy"))
    second = asyncio.run(first_refusal("legacy"))
    assert re.fullmatch(r"Rate limit exceeded for client: session:[0-9a-f-]{36}", first)
    assert re.fullmatch(r"Rate limit exceeded for client: session:[0-9a-f-]{36}", second) and first != second


# ----- the tool-level middleware -----


def tool_limits(clock: FakeClock, **options: Any) -> ours.ToolRateLimitingMiddleware:
    return ours.ToolRateLimitingMiddleware(clock=clock, get_client_id=fixed_id, **options)


@pytest.mark.parametrize("mode", MODES)
def test_tool_limits_and_costs(clock: FakeClock, mode: str) -> None:
    middleware = tool_limits(clock, tools={"search": "2/min", "*": "4/min"}, tool_costs={"render": 3})

    async def scenario() -> list[Outcome]:
        async with Client(echo_server(middleware), mode=mode) as client:
            steps = [
                client.call_tool("search", {"query": "a"}),
                client.call_tool("search", {"query": "b"}),
                client.call_tool("search", {"query": "c"}),  # search's own 2/min is spent
                client.call_tool("render", {}),  # 3 of the shared 4/min
                client.call_tool("echo", {"text": "x"}),  # the 4th
                client.call_tool("echo", {"text": "y"}),
            ]
            return [await outcome(step) for step in steps]

    assert asyncio.run(scenario()) == [
        "ok",
        "ok",
        (-32000, "Rate limit exceeded for tool 'search' (2 per 60 s) for client: agent-7. Retry after 30 s."),
        "ok",
        "ok",
        (-32000, "Rate limit exceeded for tool 'echo' (4 per 60 s) for client: agent-7. Retry after 15 s."),
    ]


def test_a_call_that_costs_more_than_is_left_is_refused_and_takes_nothing(clock: FakeClock) -> None:
    middleware = tool_limits(clock, tools={"*": "4/min"}, tool_costs={"render": 3})

    async def scenario() -> tuple[Any, ...]:
        async with Client(echo_server(middleware), mode="legacy") as client:
            await client.call_tool("echo", {"text": "x"})
            await client.call_tool("echo", {"text": "x"})
            with pytest.raises(mcp.MCPError) as caught:
                await client.call_tool("render", {})
            refused = caught.value.data
            assert (await client.call_tool("echo", {"text": "x"})).data == "x"  # the refusal took nothing
            clock.advance(45)  # three units back
            return refused, (await client.call_tool("render", {})).data

    assert asyncio.run(scenario()) == ({"retry_after": 15.0}, "rendered")


@pytest.mark.parametrize("mode", MODES)
def test_connect_lists_and_ping_are_not_charged(clock: FakeClock, mode: str) -> None:
    middleware = tool_limits(clock, tools={"*": "1/min"}, prompts={"*": "1/min"}, resources={"*": "1/min"})

    async def scenario() -> list[Outcome]:
        results = []
        for _ in range(5):
            async with Client(echo_server(middleware), mode=mode) as client:
                for _ in range(5):
                    await client.list_tools()
                    await client.list_prompts()
                    await client.list_resources()
                    await client.list_resource_templates()
                    if mode == "legacy":
                        await client.ping()
        async with Client(echo_server(middleware), mode=mode) as client:
            results.append(await outcome(client.call_tool("echo", {"text": "x"})))
            results.append(await outcome(client.call_tool("echo", {"text": "x"})))
        return results

    first, second = asyncio.run(scenario())
    assert first == "ok" and second != "ok"


def test_every_request_puts_one_limit_on_connects_lists_and_calls(clock: FakeClock) -> None:
    middleware = tool_limits(clock, tools={"search": "1/min"}, every_request="4/min")

    async def scenario() -> list[Outcome]:
        async with Client(echo_server(middleware), mode="legacy") as client:  # 1
            return [
                await outcome(client.list_tools()),  # 2
                await outcome(client.call_tool_mcp("search", {})),  # 3
                await outcome(client.call_tool_mcp("search", {})),  # refused by search's limit, takes nothing
                await outcome(client.ping()),  # 4
                await outcome(client.call_tool_mcp("render", {})),  # render has no limit of its own
                await outcome(client.list_tools()),
            ]

    over = (-32000, "Rate limit exceeded (4 per 60 s) for client: agent-7. Retry after 15 s.")
    assert asyncio.run(scenario()) == [
        "ok",
        "ok",
        (-32000, "Rate limit exceeded for tool 'search' (1 per 60 s) for client: agent-7. Retry after 60 s."),
        "ok",
        over,
        over,
    ]


@pytest.mark.parametrize("echo_limit", ["10/min", "3/min"])
def test_a_call_refused_by_every_request_names_that_limit_not_the_tools(clock: FakeClock, echo_limit: str) -> None:
    middleware = tool_limits(clock, tools={"echo": echo_limit}, every_request="3/min")

    async def scenario() -> list[Outcome]:
        async with Client(echo_server(middleware), mode="legacy") as client:  # 1
            return [await outcome(client.call_tool("echo", {"text": "x"})) for _ in range(3)]  # 2 + 3: list, call

    # With "3/min" both limits have the rate, but only every_request is spent: echo was called once.
    over = (-32000, "Rate limit exceeded (3 per 60 s) for client: agent-7. Retry after 20 s.")
    assert asyncio.run(scenario()) == ["ok", over, over]


def test_every_request_charges_requests_that_fail_before_their_hook(clock: FakeClock) -> None:
    middleware = tool_limits(clock, tools={"echo": "100/min"}, every_request="3/min")

    async def scenario() -> tuple[dict[Outcome, int], list[Outcome]]:
        async with Client(echo_server(middleware), mode="legacy") as client:  # 1
            send = client.session._dispatcher.send_raw_request
            counts: dict[Outcome, int] = {}
            for _ in range(50):  # no "name": FastMCP refuses the call before on_call_tool
                seen = await outcome(send("tools/call", {"nme": "echo"}, {"timeout": 5}))
                counts[seen] = counts.get(seen, 0) + 1
            clock.advance(60)  # all 3 back
            malformed = [
                await outcome(send("prompts/get", {}, {"timeout": 5})),
                await outcome(send("resources/read", {}, {"timeout": 5})),
                await outcome(send("tools/call", {}, {"timeout": 5})),
                await outcome(client.ping()),
            ]
        return counts, malformed

    invalid = (-32602, "Invalid request parameters")
    over = (-32000, "Rate limit exceeded (3 per 60 s) for client: agent-7. Retry after 20 s.")
    assert asyncio.run(scenario()) == ({invalid: 2, over: 48}, [invalid, invalid, invalid, over])


def test_prompts_and_resource_patterns(clock: FakeClock) -> None:
    middleware = tool_limits(clock, prompts={"summarize": "1/min"}, resources={"data://*": "2/min"})

    async def scenario() -> list[Outcome]:
        async with Client(echo_server(middleware), mode="legacy") as client:
            return [
                await outcome(client.get_prompt("summarize", {"topic": "a"})),
                await outcome(client.get_prompt("summarize", {"topic": "b"})),
                await outcome(client.read_resource("data://a")),
                await outcome(client.read_resource("data://b")),
                await outcome(client.read_resource("data://c")),  # the same pattern, so the same bucket
                await outcome(client.call_tool_mcp("render", {})),  # tools are not limited here
            ]

    assert asyncio.run(scenario()) == [
        "ok",
        (-32000, "Rate limit exceeded for prompt 'summarize' (1 per 60 s) for client: agent-7. Retry after 60 s."),
        "ok",
        "ok",
        (-32000, "Rate limit exceeded for resource 'data://c' (2 per 60 s) for client: agent-7. Retry after 30 s."),
        "ok",
    ]


def test_invented_tool_names_do_not_grow_memory(clock: FakeClock) -> None:
    middleware = tool_limits(clock, tools={"search": "5/min", "*": "1000/min"})

    async def scenario() -> None:
        async with Client(echo_server(middleware), mode="legacy") as client:
            for index in range(200):
                assert (await client.call_tool_mcp(f"no_such_tool_{index}", {})).is_error
            await client.call_tool_mcp("search", {})

    asyncio.run(scenario())
    assert len(middleware.limiter) == 2  # one bucket for "*" and one for "search", for the one client


def test_bad_configuration_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="10/fortnight"):
        ours.ToolRateLimitingMiddleware(tools={"search": "10/fortnight"})
    with pytest.raises(ValueError, match="tool 'render' costs 5, more than its limit"):
        ours.ToolRateLimitingMiddleware(tools={"*": "4/min"}, tool_costs={"render": 5})
    with pytest.raises(ValueError, match="cost of tool 'render' must be a whole number"):
        ours.ToolRateLimitingMiddleware(tools={"*": "4/min"}, tool_costs={"render": 0})
    with pytest.raises(ValueError, match="either storage= or redis_url="):
        ours.RateLimitingMiddleware(storage="memory://x", redis_url="redis://localhost:6379/0")


# ----- Redis: replicas share limits -----


def test_two_server_instances_share_tool_limits_through_redis(redis_server: RedisServer, clock: FakeClock) -> None:
    prefix = f"t-{uuid.uuid4().hex[:12]}:"

    def replica() -> tuple[FastMCP, ours.ToolRateLimitingMiddleware]:
        middleware = ours.ToolRateLimitingMiddleware(
            tools={"*": "3/min"}, redis_url=redis_server.url, key_prefix=prefix, get_client_id=fixed_id, clock=clock
        )
        return echo_server(middleware), middleware

    (first, first_limits), (second, _) = replica(), replica()

    async def scenario() -> list[Outcome]:
        async with Client(first) as one, Client(second) as other:
            return [
                await outcome(one.call_tool("echo", {"text": "a"})),
                await outcome(one.call_tool("echo", {"text": "b"})),
                await outcome(other.call_tool("echo", {"text": "c"})),
                await outcome(other.call_tool("echo", {"text": "d"})),
                await outcome(one.call_tool("echo", {"text": "e"})),
            ]

    over = (-32000, "Rate limit exceeded for tool 'echo' (3 per 60 s) for client: agent-7. Retry after 20 s.")
    assert first_limits.limiter.is_remote
    assert asyncio.run(scenario()) == ["ok", "ok", "ok", over, over]
    assert redis_server.command("KEYS", prefix + "*"), "the counters live in Redis"


@pytest.mark.parametrize(
    ("refill_rate", "wait_s", "retry_after"),
    [(0.001, 0, 1000.0), (0, 9 * 365 * 86400, None)],  # the second bucket never refills: no time to name
    ids=["refills", "never-refills"],
)
def test_two_drop_in_instances_share_a_bucket_through_redis(
    refill_rate: float, wait_s: float, retry_after: float | None, redis_server: RedisServer, clock: FakeClock
) -> None:
    prefix = f"t-{uuid.uuid4().hex[:12]}:"
    url = redis_server.url
    first = echo_server(
        ours.RateLimitingMiddleware(refill_rate, 4, fixed_id, storage=url, key_prefix=prefix, clock=clock)
    )
    second = echo_server(
        ours.RateLimitingMiddleware(refill_rate, 4, fixed_id, redis_url=url, key_prefix=prefix, clock=clock)
    )

    async def scenario() -> tuple[list[Outcome], Any]:
        seen: list[Outcome] = []
        async with Client(first, mode="legacy") as one:  # 1
            seen.append(await outcome(one.call_tool_mcp("render", {})))  # 3: the call and the client's listing
            clock.advance(wait_s)
            async with Client(second, mode="legacy") as other:  # 4
                seen.append(await outcome(other.call_tool_mcp("render", {})))
            with pytest.raises(mcp.MCPError) as caught:
                await one.call_tool_mcp("render", {})
        return seen, caught.value.data

    assert asyncio.run(scenario()) == (
        ["ok", (-32000, "Rate limit exceeded for client: agent-7")],
        {"retry_after": retry_after},
    )


# ----- over streamable HTTP -----


@asynccontextmanager
async def serving(server: FastMCP) -> AsyncIterator[str]:
    """Serves ``server`` over streamable HTTP on a free 127.0.0.1 port, in this event loop.

    Uvicorn's own proxy-header handling is off: it trusts X-Forwarded-For from 127.0.0.1 by default, which
    would hide what ferrolimit does with the header from a test whose client connects from 127.0.0.1.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    task = asyncio.create_task(
        server.run_http_async(
            show_banner=False, log_level="error", sockets=[listener], uvicorn_config={"proxy_headers": False}
        )
    )
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        listener.close()


TOKENS = {"tok-alice": {"client_id": "app", "sub": "alice"}, "tok-bob": {"client_id": "bob-cli"}}


def test_over_http_each_bearer_token_has_its_own_bucket(clock: FakeClock) -> None:
    middleware = ours.ToolRateLimitingMiddleware(tools={"*": "2/min"}, clock=clock)
    server = echo_server(middleware, auth=StaticTokenVerifier(tokens=TOKENS))

    async def scenario() -> dict[str, list[Outcome]]:
        seen: dict[str, list[Outcome]] = {}
        async with serving(server) as url:
            for token in ("tok-alice", "tok-bob", "tok-alice"):
                async with Client(url, auth=token) as client:
                    seen.setdefault(token, []).extend(
                        [await outcome(client.call_tool("echo", {"text": "x"})) for _ in range(2)]
                    )
        return seen

    seen = asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    alice_over = (
        -32000,
        "Rate limit exceeded for tool 'echo' (2 per 60 s) for client: token:app/alice. Retry after 30 s.",
    )
    assert seen == {"tok-alice": ["ok", "ok", alice_over, alice_over], "tok-bob": ["ok", "ok"]}


def test_over_http_the_drop_in_keys_by_token_then_peer_address_and_ignores_spoofed_headers(clock: FakeClock) -> None:
    # initialize takes 1 token, the first call 2 (the client lists the tools to read their schemas), then 1 each.
    by_token = echo_server(ours.RateLimitingMiddleware(0.001, 4, clock=clock), auth=StaticTokenVerifier(tokens=TOKENS))
    by_address = echo_server(ours.RateLimitingMiddleware(0.001, 5, clock=clock))

    async def refusals(url: str, auth: str | None = None, headers: dict[str, str] | None = None) -> list[Outcome]:
        transport = StreamableHttpTransport(url, headers=headers or {}, auth=auth)
        try:
            async with Client(transport, mode="legacy") as client:  # initialize: 1
                return [await outcome(client.call_tool_mcp("render", {})) for _ in range(3)]
        except mcp.MCPError as error:
            return [("connect", error.code, error.message)]

    async def scenario() -> list[list[Outcome]]:
        async with serving(by_token) as token_url, serving(by_address) as address_url:
            return [
                await refusals(token_url, "tok-alice"),
                await refusals(token_url, "tok-bob"),
                await refusals(address_url),
                await refusals(address_url, headers={"X-Forwarded-For": "198.51.100.9"}),
            ]

    alice, bob, first, spoofed = asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    assert alice == ["ok", "ok", (-32000, "Rate limit exceeded for client: token:app/alice")]
    assert bob == ["ok", "ok", (-32000, "Rate limit exceeded for client: token:bob-cli")]
    assert first == ["ok", "ok", "ok"]
    # A forwarding header from a peer that is not a trusted proxy changes nothing: the same client, no tokens left.
    assert spoofed == [("connect", -32000, "Rate limit exceeded for client: ip:127.0.0.1")]


def test_client_identity_reads_forwarding_headers_and_api_keys_only_when_told(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    proxied = ours.ClientIdentity(trusted_proxies=["127.0.0.1"], api_key_header="X-API-Key")

    class Record(Middleware):
        async def on_request(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
            seen.append(proxied(context))
            return await call_next(context)

    server = echo_server(Record())
    requests = [
        {"X-Forwarded-For": "198.51.100.9, 2001:db8::1"},
        {"X-API-Key": "secret-1"},
        {"X-Forwarded-For": "not-an-address"},  # from a trusted proxy: nothing to key by but the session
    ]

    async def scenario() -> None:
        async with serving(server) as url:
            for headers in requests:
                async with Client(StreamableHttpTransport(url, headers=headers), mode="legacy") as client:
                    await client.ping()  # initialize and ping: two requests each

    with caplog.at_level(logging.WARNING, logger="ferrolimit"):
        asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    assert seen[:4] == ["ip:2001:db8::/64"] * 2 + ["apikey:" + hashlib.sha256(b"secret-1").hexdigest()[:24]] * 2
    assert len(seen) == 6 and seen[4] == seen[5] and re.fullmatch(r"session:[0-9a-f]{32}", seen[4])
    assert [record.getMessage().split(";")[0] for record in caplog.records] == [
        "ferrolimit: an HTTP request to the MCP server has no resolvable client address (peer '127.0.0.1')"
    ]


@pytest.fixture(autouse=True)
def quiet_servers() -> None:
    for name in ("mcp", "uvicorn.error", "fastmcp"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


# ----- the example -----

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastmcp_server.py"


def test_example_limits_search_and_charges_summaries_ten(clock: FakeClock) -> None:
    demo = runpy.run_path(str(EXAMPLE))["demo"]
    assert asyncio.run(demo(clock)) == [
        "search: 3 pages about rust",
        "search: 3 pages about pyo3",
        "search: 3 pages about maturin",
        "search: error -32000, retry after 20.0 s",
        "summarize: page 1, in one line",
        "summarize: page 2, in one line",
        "summarize: page 3, in one line",
        "summarize: error -32000, retry after 20.0 s",
    ]


def test_example_runs_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--demo"], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.count("error -32000") == 2 and result.stdout.count("3 pages about") == 3
