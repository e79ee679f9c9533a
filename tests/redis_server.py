"""Real redis-server processes for the tests, on free loopback ports (never 6379), and the fixtures that
run a suite over memory, one Redis server and a 3-master Redis Cluster.

A test that needs Redis is skipped when ``redis-server`` is not installed, unless
``FERROLIMIT_REQUIRE_REDIS=1`` (set by CI), which turns that into a failure.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ferrolimit import Limiter

Reply = Any


def require_redis() -> str:
    """The path of redis-server, or skip (fail under FERROLIMIT_REQUIRE_REDIS=1)."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("FERROLIMIT_REQUIRE_REDIS") == "1":
            pytest.fail(message + " and FERROLIMIT_REQUIRE_REDIS=1", pytrace=False)
        pytest.skip(message)
    return path


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20_000, 29_999)
        if port != 6379 and _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port")


def _encode(*args: object) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read(stream: Any) -> Reply:
    line = stream.readline()
    if not line:
        raise ConnectionError("connection closed")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RuntimeError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = stream.read(size + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        size = int(body)
        return None if size < 0 else [_read(stream) for _ in range(size)]
    raise RuntimeError(f"unexpected reply {line!r}")


class RedisServer:
    """One redis-server process that a test may kill, pause, resume and restart."""

    def __init__(
        self,
        directory: Path,
        *,
        cluster: bool = False,
        unix_socket: bool = False,
        tls: tuple[Path, Path] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = require_redis()
        self.extra_args = extra_args
        self.port = free_port()
        self.directory = directory
        self.cluster = cluster
        self.unix_socket = str(directory / f"redis-{self.port}.sock") if unix_socket else None
        # (certificate, key): the server then speaks only TLS, on `port`.
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.directory), "--dbfilename", f"dump-{self.port}.rdb", "--loglevel", "warning"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
            args += ["--cluster-node-timeout", "5000"]
        if self.unix_socket:
            args += ["--unixsocket", self.unix_socket, "--unixsocketperm", "700"]
        if self.tls:
            certificate, key = self.tls
            args[1:3] = ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(certificate), "--tls-key-file", str(key)]
            args += ["--tls-ca-cert-file", str(certificate), "--tls-auth-clients", "no"]
        args += self.extra_args
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.tls:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return self
                if self.command("PING") == "PONG":
                    return self
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def command(self, *args: object, timeout: float = 5.0) -> Reply:
        """Sends one command on a new connection and returns the parsed reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as connection:
            connection.sendall(_encode(*args))
            return _read(connection.makefile("rb"))

    def info(self, section: str) -> dict[str, str]:
        text = self.command("INFO", section)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def command_calls(self) -> dict[str, int]:
        """Calls per command since the last ``CONFIG RESETSTAT``, from ``INFO commandstats``."""
        calls = {}
        for name, value in self.info("commandstats").items():
            fields = dict(item.split("=", 1) for item in value.split(","))
            calls[name.removeprefix("cmdstat_")] = int(fields["calls"])
        return calls

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()


class RedisCluster:
    """Three masters on loopback, joined with ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, *, full_coverage: bool = True) -> None:
        """``full_coverage=False``: the live nodes keep serving their slots after another node is marked failed
        (``cluster-require-full-coverage no``), so a dead node's effect does not depend on the test's timing."""
        extra = () if full_coverage else ("--cluster-require-full-coverage", "no")
        self.nodes = [RedisServer(directory, cluster=True, extra_args=extra) for _ in range(3)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.fail("redis-cli is missing next to redis-server", pytrace=False)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while not all(self._ready(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ready")
            time.sleep(0.05)
        return self

    @staticmethod
    def _ready(node: RedisServer) -> bool:
        info = node.command("CLUSTER", "INFO")
        return "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


@pytest.fixture(scope="session")
def redis_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ferrolimit-redis-") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def redis_server(redis_dir: Path) -> Iterator[RedisServer]:
    """One redis-server for the whole session; tests keep apart by key prefix. Never killed by tests."""
    server = RedisServer(redis_dir, unix_socket=True).start()
    yield server
    server.kill()


@pytest.fixture
def fresh_redis(redis_dir: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may kill, pause and restart."""
    server = RedisServer(redis_dir).start()
    yield server
    server.resume()
    server.kill()


@pytest.fixture(scope="session")
def tls_redis(redis_dir: Path) -> Iterator[RedisServer]:
    """A redis-server speaking TLS with a self-signed certificate for 127.0.0.1 (skipped without openssl or
    a redis-server built with TLS)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    certificate, key = redis_dir / "tls-cert.pem", redis_dir / "tls-key.pem"
    request = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
    names = "subjectAltName=DNS:localhost,IP:127.0.0.1"
    subprocess.run(
        [*request, "-keyout", str(key), "-out", str(certificate), "-addext", names], check=True, capture_output=True
    )
    server = RedisServer(redis_dir, tls=(certificate, key))
    try:
        server.start()
    except RuntimeError:
        pytest.skip("this redis-server has no TLS support")
    yield server
    server.kill()


@pytest.fixture(scope="session")
def redis_cluster(redis_dir: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(redis_dir).start()
    yield cluster
    cluster.kill()


BACKENDS = ["memory", "redis", "cluster"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def storage(backend: str, request: pytest.FixtureRequest) -> str:
    """The storage URL of the backend under test."""
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url
    if backend == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    return "memory://"


MakeLimiter = Callable[..., Limiter]


@pytest.fixture
def make_limiter(storage: str) -> MakeLimiter:
    """``Limiter(...)`` on the backend under test, with a key prefix of this test's own."""
    prefix = f"t-{uuid.uuid4().hex[:12]}:"

    def make(rate: Any, algorithm: str = "gcra", **kwargs: Any) -> Limiter:
        if storage != "memory://":
            kwargs.setdefault("key_prefix", prefix)
            kwargs.setdefault("timeout_ms", 2_000)
        return Limiter(rate, algorithm, storage, **kwargs)

    return make
