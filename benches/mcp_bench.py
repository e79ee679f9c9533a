"""Per-call overhead of rate limiting on a FastMCP server: ferrolimit's middleware, FastMCP's own
RateLimitingMiddleware and no middleware, in one run.

Two measures:
- end to end: ``call_tool_mcp`` through the in-memory ``fastmcp.Client`` (legacy handshake), the variants
  taking turns round after round; a variant's overhead is the median, over rounds, of its per-call time
  minus that of the server without middleware in the same round (paired, so drift cancels out), and its
  per-call time that of its fastest round. A whole MCP round trip costs hundreds of microseconds, so these
  numbers carry a few microseconds of noise;
- the hooks alone: inside a live ``tools/call`` request (so the identity lookups see what they would in
  production), each middleware's ``on_request`` and ``on_call_tool`` are awaited around a ``call_next`` that
  returns at once, on a legacy-handshake session and on a 2026-07-28 connection.

Limits are set high enough that nothing is ever refused: this measures the cost of the check itself.
Run: ``make bench`` (release build), or ``.venv/bin/python benches/mcp_bench.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import fastmcp
from fastmcp import Client, FastMCP
from fastmcp.server.middleware import Middleware, MiddlewareContext
from fastmcp.server.middleware import rate_limiting as fastmcp_rate_limiting

import ferrolimit
import ferrolimit.fastmcp as ours

HIGH_RATE = 1_000_000.0  # requests per second: nothing is refused


def variants() -> dict[str, Middleware | None]:
    return {
        "no middleware": None,
        "FastMCP RateLimitingMiddleware": fastmcp_rate_limiting.RateLimitingMiddleware(HIGH_RATE),
        "ferrolimit RateLimitingMiddleware": ours.RateLimitingMiddleware(HIGH_RATE),
        'ferrolimit RateLimitingMiddleware, get_client_id="global"': ours.RateLimitingMiddleware(
            HIGH_RATE, get_client_id=lambda context: "global"
        ),
        "ferrolimit ToolRateLimitingMiddleware": ours.ToolRateLimitingMiddleware(
            {"search": "1000000/s", "*": "1000000/s"}
        ),
    }


def server(middleware: Middleware | None) -> FastMCP:
    app = FastMCP("bench", middleware=[] if middleware is None else [middleware])

    @app.tool
    def search() -> str:
        return "found"

    return app


async def end_to_end(rounds: int, calls: int) -> tuple[dict[str, float], dict[str, float]]:
    """Per variant: seconds per call in its fastest round, and its median paired overhead."""
    per_call: dict[str, list[float]] = {}
    clients = {name: Client(server(middleware), mode="legacy") for name, middleware in variants().items()}
    async with AsyncExitStack() as stack:
        for client in clients.values():
            await stack.enter_async_context(client)
        for client in clients.values():  # warm up: schemas listed, code paths hot
            for _ in range(50):
                await client.call_tool_mcp("search", {})
        names = list(clients)
        for round_index in range(rounds):
            for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
                client = clients[name]
                start = time.perf_counter()
                for _ in range(calls):
                    await client.call_tool_mcp("search", {})
                per_call.setdefault(name, []).append((time.perf_counter() - start) / calls)
    baseline = per_call["no middleware"]
    overhead = {
        name: statistics.median(t - b for t, b in zip(times, baseline, strict=True)) for name, times in per_call.items()
    }
    return {name: min(times) for name, times in per_call.items()}, overhead


class HookTimer(Middleware):
    """Times the other middlewares' hooks from inside a live tools/call request."""

    def __init__(self, middlewares: dict[str, Middleware], calls: int) -> None:
        self.middlewares, self.calls = middlewares, calls
        self.seconds: dict[str, float] = {}

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        for name, middleware in self.middlewares.items():
            self.seconds[name] = await self.time(middleware, context)
        return await call_next(context)

    async def time(self, middleware: Middleware, context: MiddlewareContext[Any]) -> float:
        async def return_at_once(context: MiddlewareContext[Any]) -> None:
            return None

        done: Any = return_at_once

        async def typed(context: MiddlewareContext[Any]) -> Any:
            return await middleware.on_call_tool(context, done)

        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(self.calls):
                await middleware.on_request(context, typed)
            best = min(best, (time.perf_counter() - start) / self.calls)
        return best


async def hooks_alone(mode: str, calls: int) -> dict[str, float]:
    """Seconds per pass through each middleware's hooks, best of 5 runs of ``calls``."""
    timer = HookTimer({name: mw for name, mw in variants().items() if mw is not None}, calls)
    async with Client(server(timer), mode=mode) as client:
        await client.call_tool_mcp("search", {})
    return timer.seconds


async def main(quick: bool) -> None:
    logging.getLogger("mcp").setLevel(logging.CRITICAL)
    rounds, calls, hook_calls = (5, 100, 5_000) if quick else (40, 200, 50_000)
    print(f"ferrolimit {ferrolimit.__version__}, fastmcp {fastmcp.__version__}, Python {sys.version.split()[0]}")
    print(f"in-memory client, call_tool_mcp on a tool without arguments; {rounds} rounds of {calls} calls each\n")
    per_call, overhead = await end_to_end(rounds, calls)
    legacy, modern = await hooks_alone("legacy", hook_calls), await hooks_alone("auto", hook_calls)
    columns = ["per call (µs)", "overhead end to end (µs)", "hooks, legacy session (µs)", "hooks, 2026-07-28 (µs)"]
    print("| middleware | " + " | ".join(columns) + " |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in per_call.items():
        if name == "no middleware":
            print(f"| {name} | {seconds * 1e6:.1f} | | | |")
            continue
        print(
            f"| {name} | {seconds * 1e6:.1f} | {overhead[name] * 1e6:+.1f} | {legacy[name] * 1e6:.2f} "
            f"| {modern[name] * 1e6:.2f} |"
        )


if __name__ == "__main__":
    asyncio.run(main(quick="--quick" in sys.argv))
