"""Server time per decision of each Redis script, as Redis itself reports it (INFO commandstats usec_per_call).

Starts its own redis-server on a free port, loads every algorithm's script exactly as the Rust store builds it
(prelude.lua + <algorithm>.lua + main.lua, as `script_text` in src/store/redis.rs; concurrency.lua after the
prelude only), then per algorithm runs N EVALSHA hits of one limit and N hits of two limits (time from the
server's TIME, limits high enough that every hit passes and commits) and prints the microseconds per call.
Each figure is the median over several rounds. Two reference rows bound what a script can cost: `return 1`
and a hand-written GCRA that only does TIME + GET + SET PX.

Give several script directories (for example the scripts of another commit, extracted with
`git archive <commit> src/store/lua | tar -x -C /tmp/old`) to measure them side by side, round by round
in turn, on the same server:

    python benches/lua_cost.py [--calls 20000] [--rounds 5] [LUA_DIR ...]

Not a test: `make bench` runs it.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import redis
from bench_redis_server import redis_server

LUA_DIR = Path(__file__).resolve().parent.parent / "src" / "store" / "lua"
ALGORITHMS = ["gcra", "bucket", "fixed_window", "sliding_window", "sliding_log"]
LIMITS = [(1_000_000_000, 3_600_000_000), (2_000_000_000, 86_400_000_000)]
BATCH = 500
Call = tuple[list[str], list[str | int]]  # the keys and arguments of one EVALSHA
Case = tuple[str, str, list[Call]]  # row name, script, the calls to cycle through

MINIMAL_GCRA = """
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[5]) / tonumber(ARGV[4])
local tat = math.max(tonumber(redis.call("GET", KEYS[1])) or 0, now) + emission
redis.call("SET", KEYS[1], string.format("%.0f", tat), "PX", math.ceil((tat - now) / 1000))
return {now, 1, 1, 0, tat - now, 0}
"""


def script_text(lua_dir: Path, algorithm: str) -> str:
    """The script of `algorithm`, concatenated in the order of `script_text` (and of concurrency.rs)."""
    parts = ["prelude.lua", f"{algorithm}.lua"] + ([] if algorithm == "concurrency" else ["main.lua"])
    return "".join((lua_dir / part).read_text() for part in parts)


def decision_args(algorithm: str, limits: int) -> Call:
    """A hit of `limits` limits, time from the server's TIME."""
    keys = [f"fl:{algorithm}:{{bench}}:{limit}:{period}" for limit, period in LIMITS[:limits]]
    args: list[str | int] = ["", 1, 1]
    for limit, period in LIMITS[:limits]:
        args += [limit, period]
    return keys, args


def usec_per_call(client: redis.Redis, sha: str, calls: list[Call], n: int) -> float:
    """Runs `n` EVALSHA of `sha`, cycling through `calls`, and returns Redis's usec_per_call for them."""
    client.config_resetstat()
    done = 0
    while done < n:
        pipe = client.pipeline(transaction=False)
        for i in range(done, min(done + BATCH, n)):
            keys, args = calls[i % len(calls)]
            pipe.evalsha(sha, len(keys), *keys, *args)
        pipe.execute()
        done += BATCH
    stats = client.info("commandstats")["cmdstat_evalsha"]
    return float(stats["usec"]) / float(stats["calls"])


def cases(lua_dir: Path) -> list[Case]:
    """Every measured case with the scripts of `lua_dir`, after the two reference rows."""
    rows: list[Case] = [
        ("return 1", "return 1", [([], [])]),
        ("minimal gcra", MINIMAL_GCRA, [decision_args("gcra", 1)]),
    ]
    for algorithm in ALGORITHMS:
        script = script_text(lua_dir, algorithm)
        for limits in (1, 2):
            rows.append((f"{algorithm} x{limits}", script, [decision_args(algorithm, limits)]))
    lease = ["fl:concurrency:{bench}:leases", "fl:concurrency:{bench}:costs"]
    acquire: Call = (lease, ["", 1, 1, 1_000_000_000, 60_000_000, "lease-1"])
    release: Call = (lease, ["", 1, 3, 1_000_000_000, 60_000_000, "lease-1"])
    rows.append(("concurrency acq/rel", script_text(lua_dir, "concurrency"), [acquire, release]))
    return rows


def main(calls: int, rounds: int, lua_dirs: list[Path]) -> None:
    names = [name for name, _, _ in cases(lua_dirs[0])]
    figures: dict[str, list[list[float]]] = {name: [[] for _ in lua_dirs] for name in names}
    with redis_server() as port:
        client = redis.Redis(port=port)
        for _ in range(rounds):
            for column, lua_dir in enumerate(lua_dirs):
                client.flushall()
                for name, script, sample in cases(lua_dir):
                    sha = client.script_load(script)
                    usec_per_call(client, sha, sample, calls // 10)  # warm up
                    figures[name][column].append(usec_per_call(client, sha, sample, calls))
    width = max(len(name) for name in names)
    print(f"EVALSHA usec_per_call, median of {rounds} rounds of {calls} calls")
    for column, lua_dir in enumerate(lua_dirs):
        print(f"  [{column + 1}] {lua_dir}")
    print(f"{'case':<{width}}  " + "  ".join(f"{f'[{column + 1}]':>7}" for column in range(len(lua_dirs))))
    for name in names:
        print(f"{name:<{width}}  " + "  ".join(f"{statistics.median(values):7.2f}" for values in figures[name]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="EVALSHA calls per case and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each figure is their median")
    parser.add_argument("lua_dirs", nargs="*", type=Path, help=f"script directories (default {LUA_DIR})")
    arguments = parser.parse_args()
    main(arguments.calls, arguments.rounds, arguments.lua_dirs or [LUA_DIR])
