"""A fleet sharing one queue in Redis: hosts are separate HOMEs running the installed
`mailrelay` (and `mailrelay serve` on gunicorn, each on its own port) against one real
valkey-server and one aiosmtpd relay that is down, then back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import free_port
from tests.redisserver import RedisServer, server_binary
from tests.servehost import host_env, wait_until_healthy
from tests.smtpserver import SmtpServer
from tests.test_e2e import mailrelay, mailrelay_command

BINARY = server_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason="no redis-server or valkey-server")
TOKEN = "fleet-queue-token-5b1e"


class Host:
    """One machine: its own HOME, config and data; the state (and so the queue) in Redis."""

    def __init__(self, root: Path, name: str, redis_url: str, relay_port: int) -> None:
        self.home = root / name
        self.home.mkdir(parents=True)
        self.config = self.home / "config.toml"
        lines = [
            "[defaults]",
            'from = "ops@example.com"',
            f'state_file = "{redis_url}"',
            'on_failure = "queue"',
            "timeout = 3",
            "cooldown = 1",
            "provider_cooldown = 1",
            "max_cooldown = 1",
            "queue_retry = 1",
            "queue_max_retry = 1",
            "[serve]",
            f'tokens = ["{TOKEN}"]',
            "workers = 1",
            "threads = 2",
            "flush_interval = 0.5",
            "[[providers]]",
            'name = "relay"',
            'type = "smtp"',
            'host = "127.0.0.1"',
            f"port = {relay_port}",
            'security = "none"',
            "timeout = 2",
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self.config.chmod(0o600)
        self.env = host_env(self.home)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log = root / f"{name}-serve.log"

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return mailrelay("--config", str(self.config), *args, input=input, env=self.env)

    def queue_count(self) -> int:
        r = self.run("queue", "list", "--json")
        assert r.returncode == 0, r.stderr
        count: int = json.loads(r.stdout)["count"]
        return count

    def serve(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        bind = f"127.0.0.1:{port}"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [mailrelay_command(), "--config", str(self.config), "serve", "--bind", bind],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,  # its own process group: the whole tree can be killed
            )
        wait_until_healthy(self.url, self.proc, self.log, self.stop)

    def post(self, subject: str) -> requests.Response:
        doc = {"to": ["ops@example.com"], "subject": subject, "text": "b"}
        auth = {"Authorization": f"Bearer {TOKEN}"}
        return requests.post(self.url + "/v1/messages", json=doc, headers=auth, timeout=30)

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: the master's children."""
        assert self.proc is not None
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                found.append(int(stat.parent.name))
        return found

    def kill_tree(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # the master and its workers, no goodbye
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def valkey() -> Iterator[RedisServer]:
    assert BINARY is not None
    with RedisServer(BINARY) as server:
        yield server


@pytest.fixture
def relay() -> Iterator[SmtpServer]:
    """The relay, stopped: a test starts it (on the same port) when the outage ends."""
    server = SmtpServer(data_delay=0.1)
    server.start()
    server.stop()
    yield server
    server.stop()


def subjects(relay: SmtpServer) -> Counter[str]:
    return Counter(str(message_from_bytes(m.data)["Subject"]) for m in list(relay.messages))


def held_by(valkey: RedisServer, pids: list[int]) -> int:
    """Entries pending in the consumer group for a consumer of one of these processes."""
    from mailrelay.state.redisclient import Connection, parse_url

    conn = Connection(parse_url(valkey.url), timeout=5)
    try:
        summary = conn.execute("XPENDING", "{mailrelay}:spool:stream", "flushers")
    finally:
        conn.close()
    consumers = summary[3] or []
    return sum(
        int(count) for name, count in consumers if any(f"-{pid}-" in name.decode() for pid in pids)
    )


def wait_until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.2)


def test_a_host_killed_mid_flush_loses_nothing(
    tmp_path: Path, valkey: RedisServer, relay: SmtpServer
) -> None:
    hosts = [Host(tmp_path, name, valkey.url, relay.port) for name in ("a", "b", "c")]
    try:
        for host in hosts:
            host.serve()
        total = 45  # across the three hosts while the relay is down: every one is queued
        for i in range(total):
            r = hosts[i % 3].post(f"m{i}")
            assert r.status_code == 202, r.text
        assert hosts[1].queue_count() == total  # any host sees the whole fleet's queue
        relay.start()  # the outage ends: every host's flusher works the one queue
        wait_until(lambda: sum(subjects(relay).values()) >= 6, 60, "the flush started")
        victim = hosts[0]
        workers = victim.worker_pids()
        victim.kill_tree()  # mid-flush: it may hold one entry it was sending
        shutil.rmtree(victim.home)
        held = held_by(valkey, workers)  # entries left pending in the group by the victim
        wait_until(lambda: len(subjects(relay)) == total, 90, "every message delivered")
        wait_until(lambda: hosts[1].queue_count() == 0, 60, "the queue emptied")
        seen = subjects(relay)
        twice = {s: n for s, n in seen.items() if n > 1}
        print(
            f"fleet: {total} queued, {sum(seen.values())} deliveries, {held} entry(ies) held "
            f"by the killed host, sent twice: {twice or 'none'}"
        )
        assert set(seen) == {f"m{i}" for i in range(total)}
        assert held <= 1  # one flusher thread on the victim, one entry at a time
        assert sum(n - 1 for n in twice.values()) <= held
    finally:
        for host in hosts:
            host.stop()


def test_redis_restarted_with_appendonly_yes_keeps_the_queue(
    tmp_path: Path, valkey: RedisServer, relay: SmtpServer
) -> None:
    valkey.stop()
    valkey.extra = ["--appendonly", "yes", "--appendfsync", "everysec"]
    valkey.start()
    host = Host(tmp_path, "a", valkey.url, relay.port)
    check = host.run("config", "check")
    assert "appendonly" not in check.stderr
    for i in range(5):
        r = host.run("send", "--queue", "-s", f"m{i}", "ops@example.com", input="b\n")
        assert r.returncode == 0 and "queued as" in r.stderr, r.stderr
    assert valkey.proc is not None
    valkey.proc.kill()  # no shutdown, no last fsync: what was answered "queued" is on disk
    valkey.proc.wait()
    valkey.proc = None
    valkey.start()
    assert host.queue_count() == 5
    relay.start()
    r = host.run("queue", "flush", "--now")
    assert r.returncode == 0, r.stderr
    assert subjects(relay) == Counter({f"m{i}": 1 for i in range(5)})


def test_appendonly_no_is_said_once_in_config_check_and_serve_start(
    tmp_path: Path, valkey: RedisServer, relay: SmtpServer
) -> None:
    host = Host(tmp_path, "a", valkey.url, relay.port)
    check = host.run("config", "check")
    assert check.returncode == 0, check.stderr
    assert check.stderr.count("appendonly is off") == 1
    assert "restart of Redis loses the messages queued" in check.stderr
    try:
        host.serve()
    finally:
        host.stop()
    assert host.log.read_text().count("appendonly is off") == 1


def test_redis_down_queues_locally_and_the_next_flush_moves_it_in_once(
    tmp_path: Path, valkey: RedisServer, relay: SmtpServer
) -> None:
    a, b = (Host(tmp_path, name, valkey.url, relay.port) for name in ("a", "b"))
    valkey.stop()
    for i in range(3):
        r = a.run("send", "--queue", "-s", f"m{i}", "ops@example.com", input="b\n")
        assert r.returncode == 0 and "queued as" in r.stderr, r.stderr
        assert "queuing in the local spool" in r.stderr
    local = a.home / "data" / "mailrelay" / "spool"
    assert len(list(local.glob("*.json"))) == 3
    valkey.start()
    assert b.queue_count() == 0  # not in Redis yet: only on host a
    for _ in range(2):  # relay still down: the first flush moves them in, the second finds none
        r = a.run("queue", "flush")
        assert r.returncode in (0, 75), r.stderr
    assert list(local.glob("*.json")) == []
    assert b.queue_count() == 3  # once each, and every host sees them now
    relay.start()
    r = b.run("queue", "flush", "--now")
    assert r.returncode == 0, r.stderr
    assert subjects(relay) == Counter({"m0": 1, "m1": 1, "m2": 1})


def test_spool_option_and_variable_name_a_folder_or_a_url(
    tmp_path: Path, valkey: RedisServer, relay: SmtpServer
) -> None:
    a = Host(tmp_path, "a", valkey.url, relay.port)
    folder = tmp_path / "folder-spool"
    r = a.run("--spool", str(folder), "send", "--queue", "-s", "f", "x@example.com", input="b\n")
    assert r.returncode == 0, r.stderr
    assert len(list(folder.glob("*.json"))) == 1 and a.queue_count() == 0
    env = {**a.env, "MAILRELAY_SPOOL": str(folder)}
    r = mailrelay("--config", str(a.config), "queue", "list", "--json", env=env)
    assert json.loads(r.stdout)["count"] == 1
    show = a.run("--spool", str(folder), "config", "show", "--json")
    assert json.loads(show.stdout)["files"]["spool"] == str(folder)
    show = a.run("config", "show", "--json")  # no spool setting: the queue is with the state
    assert json.loads(show.stdout)["files"]["spool"] == f"{valkey.url} (spool)"


def test_send_queue_json_names_the_queue_id_and_no_file(
    tmp_path: Path, valkey: RedisServer, relay: SmtpServer
) -> None:
    a = Host(tmp_path, "a", valkey.url, relay.port)
    r = a.run("send", "--queue", "--json", "-s", "j", "ops@example.com", input="b\n")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["queued"] is True and doc["spool_file"] is None
    shown = json.loads(a.run("queue", "show", doc["queue_id"], "--json").stdout)
    assert shown["path"] is None and shown["where"] == f"{valkey.url} (spool) {doc['queue_id']}"


def test_metrics_count_the_queue_in_redis(
    tmp_path: Path, valkey: RedisServer, relay: SmtpServer
) -> None:
    a, b = (Host(tmp_path, name, valkey.url, relay.port) for name in ("a", "b"))
    for i in range(2):
        r = a.run("send", "--queue", "-s", f"m{i}", "ops@example.com", input="b\n")
        assert r.returncode == 0, r.stderr
    r = b.run("metrics")  # another host: the fleet's queue, not its own folder
    assert r.returncode == 0, r.stderr
    assert 'mailrelay_spool_messages{folder="queued"} 2' in r.stdout
