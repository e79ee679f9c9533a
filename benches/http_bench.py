"""HTTP throughput of a FastAPI hello endpoint: no limiter vs ferrolimit's middleware, an empty dependency vs
ferrolimit's dependency, and slowapi and fastlimit (in-memory) on the same endpoint, all in one run.

Each app runs under uvicorn (one worker, pinned to CPU 0 when there are two or more) and is loaded by `wrk`
(pinned to CPU 1) over loopback keep-alive connections, or by a small asyncio client when `wrk` is missing.
All the servers start first; then the apps take turns, round after round, so drift hits all alike, and the
best and median runs are reported. The server's own CPU time per request is read from /proc as well. The
limits are so high that nothing is refused: every request pays for the full allowed path (the check and its
headers). `make bench` runs it; `python benches/http_bench.py --help` lists the knobs.
"""

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request, Response

HUGE = "100000000/min"  # never reached within a run
CONNECTIONS = 32


def hello_app(dependencies: list[Any] | None = None) -> Any:
    from fastapi import FastAPI

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/hello", dependencies=dependencies or [])
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def app_plain() -> Any:
    return hello_app()


def app_middleware() -> Any:
    from ferrolimit import RateLimitMiddleware

    app = hello_app()
    app.add_middleware(RateLimitMiddleware, limit=HUGE)
    return app


def app_empty_dependency() -> Any:
    from fastapi import Depends

    async def empty(request: Request, response: Response) -> None:
        return None

    return hello_app([Depends(empty)])


def app_dependency() -> Any:
    from ferrolimit import FastLimit, rate_limit

    app = hello_app([rate_limit(HUGE)])
    FastLimit(algorithm="gcra").init_app(app)
    return app


def app_slowapi() -> Any:
    from fastapi import FastAPI
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.get("/hello")
    @limiter.limit("100000000/minute")
    async def hello(request: Request) -> dict[str, str]:
        return {"hello": "world"}

    return app


def app_fastlimit() -> Any:
    from fastlimit import FastLimit, rate_limit

    app = hello_app([rate_limit(HUGE)])
    FastLimit().init_app(app)
    return app


# name -> (factory, what it is compared with, whether it needs a peer package)
APPS: dict[str, tuple[Callable[[], Any], str | None, str | None]] = {
    "no limiter": (app_plain, None, None),
    "ferrolimit middleware": (app_middleware, "no limiter", None),
    "empty dependency": (app_empty_dependency, "no limiter", None),
    "ferrolimit dependency": (app_dependency, "empty dependency", None),
    "slowapi (decorator)": (app_slowapi, "empty dependency", "slowapi"),
    "fastlimit (dependency)": (app_fastlimit, "empty dependency", "fastlimit"),
}
GOALS = {"ferrolimit middleware": 0.97, "ferrolimit dependency": 0.95}


def serve(name: str, port: int, http: str) -> None:
    import uvicorn

    loop = "uvloop" if http == "httptools" and available("uvloop") else "asyncio"
    uvicorn.run(APPS[name][0](), host="127.0.0.1", port=port, http=http, loop=loop, log_level="error", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


@contextlib.contextmanager
def server(name: str, http: str = "h11") -> Any:
    port = free_port()
    command = [*pinned(0), sys.executable, __file__, "--serve", name, "--port", str(port), "--http", http]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name}: the server did not start: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.05)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check(port: int, name: str) -> None:
    """One request: must be a 200, with rate-limit headers when ferrolimit is in the app."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    assert head.startswith("http/1.1 200"), f"{name}: {head}"
    assert "x-ratelimit-remaining" in head or not name.startswith("ferrolimit"), f"{name}: {head}"


def load_wrk(port: int, seconds: float) -> tuple[int, float, int]:
    """(requests answered, seconds, non-2xx answers)"""
    output = subprocess.run(
        [
            *pinned(1),
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{max(1, round(seconds))}s",
            f"http://127.0.0.1:{port}/hello",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", output)
    assert done is not None, output
    elapsed = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return int(done.group(1)), elapsed, int(errors.group(1)) if errors else 0


def load_asyncio(port: int, seconds: float) -> tuple[int, float, int]:
    """(requests answered, seconds, non-2xx answers)"""
    request = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"

    async def connection(deadline: float, counts: list[int]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            counts[0 if head.startswith(b"HTTP/1.1 200") else 1] += 1
        writer.close()

    async def run() -> tuple[int, float, int]:
        counts = [0, 0]
        start = time.monotonic()
        await asyncio.gather(*(connection(start + seconds, counts) for _ in range(CONNECTIONS)))
        return sum(counts), time.monotonic() - start, counts[1]

    return asyncio.run(run())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux), or 0 where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def available(package: str | None) -> bool:
    if package is None:
        return True
    with contextlib.suppress(ImportError):
        __import__(package)
        return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="load per app per round (default 2)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds over all apps (default 8)")
    parser.add_argument(
        "--http",
        choices=["h11", "httptools"],
        help="uvicorn's HTTP implementation (default: httptools with uvloop if installed, as uvicorn[standard])",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    http = options.http or ("httptools" if available("httptools") else "h11")
    if options.serve:
        serve(options.serve, options.port, http)
        return

    names = [name for name, (_, _, package) in APPS.items() if available(package)]
    skipped = [name for name in APPS if name not in names]
    load = load_wrk if shutil.which("wrk") else load_asyncio
    generator = f"wrk -t1 -c{CONNECTIONS}" if load is load_wrk else f"asyncio client, {CONNECTIONS} connections"
    server_kind = "httptools + uvloop" if http == "httptools" and available("uvloop") else http
    print(
        f"HTTP bench: FastAPI GET /hello, uvicorn ({server_kind}, 1 worker) + {generator}, "
        f"{options.seconds:g} s x {options.rounds} rounds"
    )
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu_us: dict[str, list[float]] = {name: [] for name in names}
    with contextlib.ExitStack() as servers:
        running = {name: servers.enter_context(server(name, http)) for name in names}
        for name, (port, _) in running.items():
            check(port, name)
            load(port, 1.0)  # warm up
        for round_number in range(options.rounds):
            for name, (port, pid) in running.items():
                cpu_before = cpu_seconds(pid)
                requests, elapsed, errors = load(port, options.seconds)
                cpu = cpu_seconds(pid) - cpu_before
                assert errors == 0, f"{name}: {errors} responses were not 2xx"
                rates[name].append(requests / elapsed)
                cpu_us[name].append(cpu / requests * 1e6)
                print(
                    f"  round {round_number + 1}: {name:<24} {requests / elapsed:>7,.0f} req/s "
                    f"{cpu / requests * 1e6:>6.1f} us CPU/request",
                    flush=True,
                )

    best = {name: max(values) for name, values in rates.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}
    cost = {name: min(values) for name, values in cpu_us.items()}
    print()
    print("Best and median of the rounds. Other work on the machine only ever slows a run down, so the best run")
    print("is the least disturbed; `ratio` compares best runs. `CPU ratio` is the baseline's least server CPU time")
    print("per request over this app's: the throughput one core would reach.")
    print()
    header = ["app", "best req/s", "median req/s", "CPU us/req", "vs", "ratio", "median ratio", "CPU ratio", "goal"]
    rows = []
    for name in names:
        baseline = APPS[name][1]
        row = [name, f"{best[name]:,.0f}", f"{median[name]:,.0f}", f"{cost[name]:.1f}", baseline or "", "", "", "", ""]
        if baseline in best:
            row[5] = f"{best[name] / best[baseline]:.3f}"
            row[6] = f"{median[name] / median[baseline]:.3f}"
            row[7] = f"{cost[baseline] / cost[name]:.3f}" if cost[name] else ""
            if name in GOALS:
                met = best[name] / best[baseline] >= GOALS[name]
                row[8] = f">= {GOALS[name]:.2f}: {'met' if met else 'MISSED'}"
        rows.append(row)
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * width for width in widths], *rows]:
        print("| " + " | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")
    if "ferrolimit dependency" in best:
        for peer in ("slowapi (decorator)", "fastlimit (dependency)"):
            if peer in best:
                ours = "ferrolimit dependency"
                print(
                    f"{ours} vs {peer}: {best[ours] / best[peer]:.2f}x the throughput, "
                    f"{cost[peer] / cost[ours]:.2f}x less server CPU per request"
                )
    for name in skipped:
        print(f"skipped {name}: {APPS[name][2]} is not installed")


if __name__ == "__main__":
    main()
