"""A FastMCP server with per-tool rate limits.

python examples/fastmcp_server.py          serves it over streamable HTTP at http://127.0.0.1:8000/mcp
python examples/fastmcp_server.py --demo   calls it through an in-memory client and prints what an agent sees
"""

from __future__ import annotations

import asyncio
import sys

import mcp
from fastmcp import Client, FastMCP

from ferrolimit import FakeClock
from ferrolimit.fastmcp import ToolRateLimitingMiddleware


def build(clock: FakeClock | None = None) -> FastMCP:
    limits = ToolRateLimitingMiddleware(
        tools={"search": "3/min", "*": "30/min"},  # search has its own 3 a minute; other tools share 30
        tool_costs={"summarize": 10},  # a summary takes 10 of those 30
        clock=clock,  # tests pass a FakeClock; leave it out to use real time
    )
    server = FastMCP("docs", middleware=[limits])

    @server.tool
    def search(query: str) -> str:
        return f"3 pages about {query}"

    @server.tool
    def summarize(page: str) -> str:
        return f"{page}, in one line"

    return server


async def demo(clock: FakeClock | None = None) -> list[str]:
    lines = []
    async with Client(build(clock)) as client:  # connecting and listing tools cost nothing
        calls = [("search", {"query": q}) for q in ("rust", "pyo3", "maturin", "tokio")]
        calls += [("summarize", {"page": f"page {n}"}) for n in (1, 2, 3, 4)]
        for tool, arguments in calls:
            try:
                lines.append(f"{tool}: {(await client.call_tool(tool, arguments)).data}")
            except mcp.MCPError as error:  # code -32000; data tells when to come back
                lines.append(f"{tool}: error {error.code}, retry after {error.data['retry_after']} s")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    if "--demo" in sys.argv:
        asyncio.run(demo())
    else:
        build().run(transport="http", host="127.0.0.1", port=8000)
