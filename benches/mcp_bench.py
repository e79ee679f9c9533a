"""Per-call overhead of rate limiting on a FastMCP server: ferrolimit's middleware, FastMCP's own
RateLimitingMiddleware and no middleware, in one run.

Two measures:
- end to end: ``call_tool_mcp`` through the in-memory ``fastmcp.Client``, the variants taking turns
  round after round, so that drift hits them alike; each variant's per-call time is that of its fastest
  round (the least disturbed by anything else on the machine), and its overhead that time minus the one
  of the server without middleware;
- the hook alone: the middleware's ``on_request`` / ``on_call_tool`` awaited directly with a
  ``tools/call`` context and a ``call_next`` that returns at once, which is the overhead without the noise
  of a whole MCP round trip.

Limits are set high enough that nothing is ever refused: this measures the cost of the check itself.
Run: ``make bench`` (release build), or ``.venv/bin/python benches/mcp_bench.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import fastmcp
import mcp_types as mt
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


async def end_to_end(rounds: int, calls: int) -> dict[str, float]:
    """Seconds per call in each variant's fastest round."""
    per_call: dict[str, list[float]] = {}
    clients = {name: Client(server(middleware), mode="legacy") for name, middleware in variants().items()}
    for client in clients.values():
        await client.__aenter__()
    try:
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
    finally:
        for client in clients.values():
            await client.__aexit__(None, None, None)
    return {name: min(times) for name, times in per_call.items()}


async def hook_alone(middleware: Middleware, calls: int) -> float:
    """Seconds per awaited hook (on_request, then on_call_tool, as FastMCP chains them) around a no-op."""
    context: MiddlewareContext[Any] = MiddlewareContext(
        message=mt.CallToolRequestParams(name="search", arguments={}), method="tools/call"
    )

    async def call_next(context: MiddlewareContext[Any]) -> None:
        return None

    async def typed(context: MiddlewareContext[Any]) -> Any:
        return await middleware.on_call_tool(context, call_next)

    hook: Callable[[], Awaitable[Any]] = lambda: middleware.on_request(context, typed)  # noqa: E731
    for _ in range(1000):
        await hook()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            await hook()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


async def main(quick: bool) -> None:
    logging.getLogger("mcp").setLevel(logging.CRITICAL)
    rounds, calls, hook_calls = (5, 100, 20_000) if quick else (40, 200, 200_000)
    print(f"ferrolimit {ferrolimit.__version__}, fastmcp {fastmcp.__version__}, Python {sys.version.split()[0]}")
    print(f"in-memory client, call_tool_mcp on a tool without arguments; {rounds} rounds of {calls} calls each\n")
    results = await end_to_end(rounds, calls)
    baseline = results["no middleware"]
    hooks = {name: await hook_alone(mw, hook_calls) for name, mw in variants().items() if mw is not None}
    print("| middleware | per call (µs) | overhead end to end (µs) | hook alone (µs) |")
    print("|---|---:|---:|---:|")
    for name, seconds in results.items():
        overhead = "" if name == "no middleware" else f"{(seconds - baseline) * 1e6:+.1f}"
        hook = f"{hooks[name] * 1e6:.2f}" if name in hooks else ""
        print(f"| {name} | {seconds * 1e6:.1f} | {overhead} | {hook} |")


if __name__ == "__main__":
    asyncio.run(main(quick="--quick" in sys.argv))
