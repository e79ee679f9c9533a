"""A throwaway redis-server on a free loopback port for the Redis benchmarks (never 6379). No ferrolimit
import, so scripts that only talk to Redis can use it without the extension built."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port if port != 6379 else free_port()


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """Starts redis-server (no persistence) and yields its port once it answers PING; kills it after."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed; the Redis benchmarks need it")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        process = subprocess.Popen([*args, "--dir", directory], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                        connection.sendall(b"PING\r\n")
                        if connection.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            yield port
        finally:
            process.kill()
            process.wait()
