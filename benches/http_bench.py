"""HTTP throughput of a FastAPI hello endpoint: no limiter vs ferrolimit's middleware, an empty dependency vs
ferrolimit's dependency, and slowapi and fastlimit (in-memory) on the same endpoint, all in one run. Every
request carries an X-Forwarded-For header, as behind a proxy; the "1 proxy" apps trust one hop and key the
client by it, the others ignore it.

Each app runs under uvicorn (one worker, pinned to CPU 0 when there are two or more) and is loaded by `wrk`
(pinned to CPU 1) over loopback keep-alive connections, or by a small asyncio client when `wrk` is missing.
Each app is served by several processes: where the code and data land in memory changes from process to
process (ASLR), and with it an app's speed, by as much as 10% between two processes of the same app. All the
servers start first; then every process is loaded in turn, round after round, each round in a new order so
that a burst of load from elsewhere falls on different apps, and the median over all runs of an app is
reported. On a shared machine these loopback figures still move by several percent from run to run; the
in-process CPU times and the instruction counts below them are the steadier. The server's own CPU time per
request is read from /proc as well. The
limits are so high that nothing is refused: every request pays for the full allowed path (the check and its
headers). Where valgrind and gcc are installed, the instructions of each request are counted too, under
callgrind: a figure that does not move with the machine's load. `make bench` runs it;
`python benches/http_bench.py --help` lists the knobs.
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
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
# The middleware's default algorithm is the timestamp log, which takes at most 100,000 per period: a server here
# answers some 15,000 requests a second, so this is never reached either.
HUGE_LOG = "100000/s"
CONNECTIONS = 32
# Every request comes through one proxy, as most deployed apps' do: the apps configured with trusted_proxies=1
# key it by the address in the header; the others ignore the header (so all pay for parsing it alike).
FORWARDED_FOR = "203.0.113.7"
REQUEST = f"GET /hello HTTP/1.1\r\nHost: bench\r\nX-Forwarded-For: {FORWARDED_FOR}\r\n\r\n".encode()


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
    app.add_middleware(RateLimitMiddleware, limit=HUGE_LOG)
    return app


class _FixedHeaders:
    """Pure ASGI: appends three constant X-RateLimit-* fields to every response, checking nothing, as cheaply as
    Python can (no coroutine of its own, per request or per message). The cost of carrying the headers at all
    (uvicorn validates and writes each one), without any limiter: a floor for the middleware's ratio."""

    HEADERS = (
        (b"x-ratelimit-limit", b"100000000"),
        (b"x-ratelimit-remaining", b"99999999"),
        (b"x-ratelimit-reset", b"1795365005"),
    )

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        def send_with_headers(message: Any) -> Any:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self.HEADERS]
            return send(message)

        return self.app(scope, receive, send_with_headers)


class _NoHeaders(_FixedHeaders):
    """`_FixedHeaders` appending no fields: what the pure ASGI layer costs by itself, so that the cost of the
    three fields (uvicorn checks each with two regular expressions) shows apart from it."""

    HEADERS = ()


def app_middleware_behind_proxy() -> Any:
    from ferrolimit import RateLimitMiddleware

    app = hello_app()
    app.add_middleware(RateLimitMiddleware, limit=HUGE_LOG, trusted_proxies=1)
    return app


def app_fixed_headers() -> Any:
    app = hello_app()
    app.add_middleware(_FixedHeaders)
    return app


def app_no_headers() -> Any:
    app = hello_app()
    app.add_middleware(_NoHeaders)
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


def app_dependency_behind_proxy() -> Any:
    from ferrolimit import FastLimit, rate_limit

    app = hello_app([rate_limit(HUGE)])
    FastLimit(algorithm="gcra", trusted_proxies=1).init_app(app)
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
    "pass-through layer, no limit": (app_no_headers, "no limiter", None),
    "3 fixed headers, no limit": (app_fixed_headers, "no limiter", None),
    "ferrolimit middleware": (app_middleware, "no limiter", None),
    "ferrolimit middleware, 1 proxy": (app_middleware_behind_proxy, "no limiter", None),
    "empty dependency": (app_empty_dependency, "no limiter", None),
    "ferrolimit dependency": (app_dependency, "empty dependency", None),
    "ferrolimit dependency, 1 proxy": (app_dependency_behind_proxy, "empty dependency", None),
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
        sock.sendall(REQUEST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
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
            f"-d{max(1, round(seconds))}s",  # whole seconds only
            "-H",
            f"X-Forwarded-For: {FORWARDED_FOR}",
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
    request = REQUEST

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


class _LoopbackTransport(asyncio.Transport):
    """What uvicorn's protocol writes to, in memory: no sockets, no load generator, no scheduler noise."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: Any) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def in_process_us(names: list[str], http: str, requests: int, rounds: int) -> dict[str, float]:
    """Least CPU microseconds per keep-alive request through uvicorn's own HTTP protocol and each app, in memory.
    The apps take turns in short batches, and each keeps its best batch: noise from elsewhere only adds."""

    async def run() -> dict[str, float]:
        connections = {name: _protocol(name, http) for name in names}
        best = dict.fromkeys(names, float("inf"))
        for round_number in range(-3, rounds):  # three rounds to warm up
            turn = round_number % len(names)
            for name in names[turn:] + names[:turn]:  # a different app goes first each round
                protocol, state = connections[name]
                start = time.thread_time()  # CPU time of this thread: what other processes take is not counted
                await _serve_in_memory(protocol, state, requests)
                if round_number >= 0:
                    best[name] = min(best[name], (time.thread_time() - start) / requests * 1e6)
        for protocol, _ in connections.values():
            protocol.connection_lost(None)
        return best

    return asyncio.run(run())


def in_process_median(names: list[str], http: str, requests: int, rounds: int, processes: int) -> dict[str, float]:
    """`in_process_us` in `processes` fresh processes, one after the other (pinned like the servers); the
    median of each app's figures."""
    figures: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(processes):
        command = [*pinned(0), sys.executable, __file__, "--in-process", json.dumps(names), "--http", http]
        command += ["--requests", str(requests), "--batches", str(rounds)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        for name, microseconds in json.loads(done.stdout).items():
            figures[name].append(microseconds)
    return {name: statistics.median(values) for name, values in figures.items()}


def _protocol(name: str, http: str) -> tuple[Any, Any]:
    """uvicorn's HTTP protocol serving app `name` over an in-memory transport, and its server state."""
    import uvicorn
    from uvicorn.server import ServerState

    config = uvicorn.Config(APPS[name][0](), http=http, log_level="error", access_log=False)
    config.load()
    state = ServerState()
    protocol = config.http_protocol_class(config=config, server_state=state, app_state={})  # type: ignore[call-arg]
    protocol.connection_made(_LoopbackTransport())
    return protocol, state


async def _serve_in_memory(protocol: Any, state: Any, requests: int) -> None:
    request = REQUEST
    for _ in range(requests):
        done = state.total_requests + 1
        protocol.data_received(request)
        while state.total_requests < done:
            await asyncio.sleep(0)


# Each app is counted once per hash seed 0..HASH_SEEDS-1, and the mean reported.
HASH_SEEDS = 3

# Turns callgrind's counting on and off around the measured requests (valgrind's client requests).
_CALLGRIND_HELPER = """
#include <valgrind/callgrind.h>
void ferrolimit_bench_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_TOGGLE_COLLECT; }
void ferrolimit_bench_stop(void) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_STOP_INSTRUMENTATION; }
"""


def count_instructions_child(name: str, http: str, requests: int, helper: str) -> None:
    """Runs under callgrind: warms app `name` up, then serves `requests` requests with counting on."""
    import ctypes

    library = ctypes.CDLL(helper)

    async def run() -> None:
        protocol, state = _protocol(name, http)
        await _serve_in_memory(protocol, state, 300)
        library.ferrolimit_bench_start()
        await _serve_in_memory(protocol, state, requests)
        library.ferrolimit_bench_stop()
        protocol.connection_lost(None)

    asyncio.run(run())


def instructions_per_request(names: list[str], http: str, requests: int) -> dict[str, float] | str:
    """Machine instructions per request for each app, counted by valgrind's callgrind: the same count on every
    run of the same build, however busy the machine is. A str says why it could not be counted."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    if not shutil.which("valgrind") or not shutil.which("gcc"):
        return "valgrind and gcc are needed"
    workdir = tempfile.mkdtemp(prefix="ferrolimit-callgrind-")
    source, helper = os.path.join(workdir, "helper.c"), os.path.join(workdir, "helper.so")
    with open(source, "w") as file:
        file.write(_CALLGRIND_HELPER)
    built = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", helper, source], capture_output=True, text=True)
    if built.returncode != 0:
        return f"the callgrind helper did not build (valgrind's headers missing?): {built.stderr.strip()[-300:]}"

    def count(job: tuple[str, int]) -> float:
        name, seed = job
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            f"--callgrind-out-file={os.path.join(workdir, 'callgrind.%p')}",
            sys.executable,
            __file__,
            "--count-instructions",
            name,
            "--http",
            http,
            "--requests",
            str(requests),
            "--helper",
            helper,
        ]
        # A given hash seed repeats the count exactly; different seeds lay dicts out differently (±0.5%).
        environment = {**os.environ, "PYTHONHASHSEED": str(seed)}
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
        collected = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or collected is None:
            raise RuntimeError(f"{name}: callgrind failed: {done.stderr[-1000:]}")
        return int(collected.group(1)) / requests

    jobs = [(name, seed) for name in names for seed in range(HASH_SEEDS)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = dict(zip(jobs, pool.map(count, jobs), strict=True))
    counts = {name: statistics.mean(results[name, seed] for seed in range(HASH_SEEDS)) for name in names}
    shutil.rmtree(workdir, ignore_errors=True)
    return counts


def available(package: str | None) -> bool:
    if package is None:
        return True
    with contextlib.suppress(ImportError):
        __import__(package)
        return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=1, help="load per server per round (default 1)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds over all servers, each in a new order (8)")
    parser.add_argument("--processes", type=int, default=3, help="server processes per app (default 3)")
    parser.add_argument(
        "--http",
        choices=["h11", "httptools"],
        help="uvicorn's HTTP implementation (default: httptools with uvloop if installed, as uvicorn[standard])",
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per in-process batch (default 200)")
    parser.add_argument("--batches", type=int, default=60, help="in-process batches per app (default 60)")
    parser.add_argument(
        "--instructions",
        type=int,
        default=400,
        metavar="N",
        help="requests per app counted under valgrind's callgrind (default 400; 0 skips the count)",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count-instructions", help=argparse.SUPPRESS)
    parser.add_argument("--in-process", help=argparse.SUPPRESS)
    parser.add_argument("--helper", help=argparse.SUPPRESS)
    options = parser.parse_args()
    http = options.http or ("httptools" if available("httptools") else "h11")
    if options.serve:
        serve(options.serve, options.port, http)
        return
    if options.in_process:
        print(json.dumps(in_process_us(json.loads(options.in_process), http, options.requests, options.batches)))
        return
    if options.count_instructions:
        count_instructions_child(options.count_instructions, http, options.requests, options.helper)
        return

    names = [name for name, (_, _, package) in APPS.items() if available(package)]
    skipped = [name for name in APPS if name not in names]
    load = load_wrk if shutil.which("wrk") else load_asyncio
    generator = f"wrk -t1 -c{CONNECTIONS}" if load is load_wrk else f"asyncio client, {CONNECTIONS} connections"
    server_kind = "httptools + uvloop" if http == "httptools" and available("uvloop") else http
    print(
        f"HTTP bench: FastAPI GET /hello, uvicorn ({server_kind}, 1 worker) + {generator}, {options.processes} "
        f"server processes per app, {options.seconds:g} s x {options.rounds} rounds each"
    )
    # (app, process) -> the runs' requests per second and CPU microseconds per request
    shuffler = random.Random(42)
    rates: dict[tuple[str, int], list[float]] = {}
    cpu_us: dict[tuple[str, int], list[float]] = {}
    with contextlib.ExitStack() as servers:
        running = {
            (name, copy): servers.enter_context(server(name, http))
            for name in names
            for copy in range(options.processes)
        }
        for (name, _), (port, _) in running.items():
            check(port, name)
            load(port, 1.0)  # warm up
        for round_number in range(options.rounds):
            order = list(running.items())
            shuffler.shuffle(order)  # a burst of load from elsewhere falls on different apps each round
            for (name, copy), (port, pid) in order:
                cpu_before = cpu_seconds(pid)
                requests, elapsed, errors = load(port, options.seconds)
                cpu = cpu_seconds(pid) - cpu_before
                assert errors == 0, f"{name}: {errors} responses were not 2xx"
                rates.setdefault((name, copy), []).append(requests / elapsed)
                cpu_us.setdefault((name, copy), []).append(cpu / requests * 1e6)
                print(
                    f"  round {round_number + 1}: {name:<32} process {copy + 1} {requests / elapsed:>7,.0f} req/s "
                    f"{cpu / requests * 1e6:>6.1f} us CPU/request",
                    flush=True,
                )

    def runs(samples: dict[tuple[str, int], list[float]], name: str) -> list[float]:
        return [value for copy in range(options.processes) for value in samples[name, copy]]

    median = {name: statistics.median(runs(rates, name)) for name in names}
    spread = {name: [statistics.median(rates[name, copy]) for copy in range(options.processes)] for name in names}
    cost = {name: statistics.median(runs(cpu_us, name)) for name in names}
    print()
    print("Over loopback: the median of all runs of each app (every process, every round), the range of its")
    print("processes' own medians (where each landed in memory), and the server's median CPU time per request.")
    print()
    rows = []
    for name in names:
        baseline = APPS[name][1]
        low, high = min(spread[name]), max(spread[name])
        row = [name, f"{median[name]:,.0f}", f"{low:,.0f}-{high:,.0f}", f"{cost[name]:.1f}", baseline or "", "", ""]
        if baseline in median:
            row[5] = f"{median[name] / median[baseline]:.3f}"
            row[6] = goal_text(name, median[name] / median[baseline])
        rows.append(row)
    table(["app", "median req/s", "processes", "CPU us/req", "vs", "ratio", "goal"], rows)

    print()
    print(f"In process: uvicorn's {http} protocol and the app, fed from memory in batches of {options.requests}")
    print("requests, the apps taking turns; each app's least CPU time per request (steady on a busy machine), in")
    print(f"{options.processes} processes (each lands in memory differently), and the median of them:")
    print()
    in_process = in_process_median(names, http, options.requests, options.batches, options.processes)
    rows = []
    for name in names:
        baseline = APPS[name][1]
        row = [name, f"{in_process[name]:.1f}", f"{1e6 / in_process[name]:,.0f}", baseline or "", "", ""]
        if baseline in in_process:
            ratio = in_process[baseline] / in_process[name]
            row[4:] = [f"{ratio:.3f}", goal_text(name, ratio)]
        rows.append(row)
    table(["app", "us/request", "req/s on one core", "vs", "ratio", "goal"], rows)
    print()
    if {"ferrolimit middleware", "3 fixed headers, no limit"} <= set(in_process):
        fixed, ours = in_process["3 fixed headers, no limit"], in_process["ferrolimit middleware"]
        print(f"ferrolimit middleware vs the same 3 headers written without a limiter: {fixed / ours:.3f}")
    for peer in ("slowapi (decorator)", "fastlimit (dependency)"):
        if peer in in_process and "ferrolimit dependency" in in_process:
            ours = "ferrolimit dependency"
            print(
                f"{ours} vs {peer}: {in_process[peer] / in_process[ours]:.2f}x the throughput in process, "
                f"{median[ours] / median[peer]:.2f}x over loopback"
            )
    if options.instructions > 0:
        print_instructions(names, http, options.instructions)
    for name in skipped:
        print(f"skipped {name}: {APPS[name][2]} is not installed")


def print_instructions(names: list[str], http: str, requests: int) -> None:
    print()
    print(f"Instructions: machine instructions per request, counted by valgrind's callgrind over {requests} requests")
    print(f"in process as above, the mean of {HASH_SEEDS} hash seeds. The count does not move with the machine's load;")
    print("instructions are not all equally fast (uvicorn's header checks are tight regex loops, cheaper per")
    print("instruction than calls into Python).")
    print()
    counts = instructions_per_request(names, http, requests)
    if isinstance(counts, str):
        print(f"skipped: {counts}")
        return
    rows = []
    for name in names:
        baseline = APPS[name][1]
        row = [name, f"{counts[name]:,.0f}", baseline or "", "", ""]
        if baseline in counts:
            ratio = counts[baseline] / counts[name]
            row[3:] = [f"{ratio:.3f}", goal_text(name, ratio)]
        rows.append(row)
    table(["app", "instructions/request", "vs", "ratio", "goal"], rows)
    print()
    if {"ferrolimit middleware", "3 fixed headers, no limit", "pass-through layer, no limit"} <= set(counts):
        plain, layer = counts["no limiter"], counts["pass-through layer, no limit"]
        fixed, ours = counts["3 fixed headers, no limit"], counts["ferrolimit middleware"]
        print(
            f"A pure ASGI layer that passes every message on costs {layer - plain:,.0f} instructions; with the 3 "
            f"headers added it costs {fixed - plain:,.0f} ({plain / fixed:.3f} of no limiter), most of it uvicorn "
            f"checking each field; the middleware adds {ours - fixed:,.0f} to that."
        )
    if {"ferrolimit dependency", "empty dependency"} <= set(counts):
        baseline = counts["empty dependency"]
        added = [f"{name} {counts[name] - baseline:,.0f}" for name in names if APPS[name][1] == "empty dependency"]
        print(f"Instructions added to the empty dependency's: {', '.join(added)}.")


def goal_text(name: str, ratio: float) -> str:
    if name not in GOALS:
        return ""
    return f">= {GOALS[name]:.2f}: {'met' if ratio >= GOALS[name] else 'missed'}"


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * width for width in widths], *rows]:
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
