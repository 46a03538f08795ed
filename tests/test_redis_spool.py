"""The spool in Redis, in process against a real valkey-server: the consumer group, the
takeover of an entry a dead flusher held, the atomic "sent", each message once, and the
server's persistence read at start. The fleet itself (hosts, serve, kills) is in
tests/test_fleet_queue.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from mailrelay.config import specs_from_urls
from mailrelay.message import Message, build_message
from mailrelay.providers import registry
from mailrelay.providers.base import Outcome
from mailrelay.result import Attempt, SendResult
from mailrelay.spool import Spool
from mailrelay.spool.redisflush import RedisFlush
from mailrelay.spool.redisspool import RedisSpool
from tests.esp.fake_resend import FakeResend
from tests.esp.fakebase import server_base_url
from tests.redisserver import RedisServer, flush, server_binary, started_server

BINARY = server_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason="no redis-server or valkey-server")


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """This module's own server: its tests reconfigure, stop and restart it."""
    yield from started_server()


@pytest.fixture
def url(server: RedisServer) -> str:
    flush(server)
    return server.url


def spool(url: str, tmp_path: Path, claim_idle: float = 60.0) -> RedisSpool:
    return RedisSpool(url, local=Spool(tmp_path / "local"), claim_idle=claim_idle)


def message(subject: str) -> Message:
    return build_message(sender="ops@example.com", to=["a@example.com"], subject=subject, text="b")


FAILED = [Attempt("relay", "smtp", Outcome.TRANSIENT, "connection refused")]


class Relay:
    """The send a flush calls: accepts every message and remembers its subject."""

    def __init__(self) -> None:
        self.subjects: list[str] = []

    def __call__(self, msg: Message) -> SendResult:
        self.subjects.append(msg.subject)
        return SendResult(msg.message_id, [Attempt("relay", "smtp", Outcome.ACCEPTED, "250")])


def flush_all(s: RedisSpool, send: Relay) -> list[str]:
    report = s.flush(send, retry=60, max_retry=600, max_age=86400, ignore_backoff=True)
    return [item.status for item in report.items]


def test_two_spools_on_one_server_share_one_queue(url: str, tmp_path: Path) -> None:
    a, b = spool(url, tmp_path / "a"), spool(url, tmp_path / "b")
    queued = [a.add(message(f"m{i}"), FAILED, retry=60, max_retry=600) for i in range(3)]
    assert [e.id for e in b.entries()] == [e.id for e in queued]
    assert b.find(queued[1].id[:6]).subject == "m1"
    b.drop(queued[1].id)
    relay = Relay()
    assert flush_all(a, relay) == ["sent", "sent"]
    assert sorted(relay.subjects) == ["m0", "m2"]
    assert b.entries() == [] and b.depth() == 0
    assert flush_all(b, relay) == []  # nothing left to send twice


def test_an_entry_a_dead_flusher_held_is_taken_over_once_idle(url: str, tmp_path: Path) -> None:
    a = spool(url, tmp_path / "a", claim_idle=0.3)
    for i in range(3):
        a.add(message(f"m{i}"), FAILED, retry=60, max_retry=600)
    dead = RedisFlush(a, "killed-host")  # takes one entry and never finishes it (SIGKILL)
    dead.promote(everything=True)
    held = dead.next()
    assert held is not None
    b = spool(url, tmp_path / "b", claim_idle=0.3)
    relay = Relay()
    assert flush_all(b, relay) == ["sent", "sent"]  # the held one is not idle long enough
    assert b.depth() == 1
    time.sleep(0.5)  # longer than claim_idle: the holder is presumed dead
    assert flush_all(b, relay) == ["sent"]
    assert sorted(relay.subjects) == ["m0", "m1", "m2"]  # each once
    assert b.depth() == 0
    pending = b.call("XPENDING", b.stream, "flushers")
    assert pending[0] == 0
    assert b.call("XINFO", "CONSUMERS", b.stream, "flushers") == []  # the dead one too


def test_sent_is_recorded_in_the_step_that_acknowledges(url: str, tmp_path: Path) -> None:
    a = spool(url, tmp_path)
    entry = a.add(message("m"), FAILED, retry=60, max_retry=600)
    assert flush_all(a, Relay()) == ["sent"]
    assert a.call("EXISTS", a.sent_key(entry.id)) == 1
    assert a.call("HLEN", a.docs) == 0 and a.call("ZCARD", a.retry) == 0
    assert a.call("XLEN", a.stream) == 0
    # a copy of the delivered message (say a local spool file moved in again) is refused
    assert a.put(entry, keep_id=True) is False
    assert a.depth() == 0


def test_a_retry_waits_in_the_sorted_set_by_its_next_try(url: str, tmp_path: Path) -> None:
    a = spool(url, tmp_path)
    entry = a.add(message("m"), FAILED, retry=60, max_retry=600)

    def down(msg: Message) -> SendResult:
        return SendResult(msg.message_id, FAILED)

    report = a.flush(down, retry=60, max_retry=600, max_age=86400, ignore_backoff=True)
    assert [i.status for i in report.items] == ["queued"]
    score = float(a.call("ZSCORE", a.retry, entry.id))
    assert score > (time.time() + 60) * 1000  # 2 tries: 2 * retry from now
    report = a.flush(down, retry=60, max_retry=600, max_age=86400)
    assert [i.status for i in report.items] == ["not_due"]
    assert a.entries()[0].tries == 2


def test_a_message_past_max_age_moves_to_failed(url: str, tmp_path: Path) -> None:
    a = spool(url, tmp_path)
    a.add(message("old"), FAILED, retry=60, max_retry=600)
    report = a.flush(Relay(), retry=60, max_retry=600, max_age=-1, ignore_backoff=True)
    assert [i.status for i in report.items] == ["failed"]
    assert a.entries() == [] and [e.subject for e in a.entries(failed=True)] == ["old"]


def test_persistence_is_read_from_the_server(url: str, server: RedisServer, tmp_path: Path) -> None:
    a = spool(url, tmp_path)
    warning = a.durability_warning()
    assert warning is not None and "appendonly" in warning
    assert a._wait_commands() == []  # no AOF, no replica: nothing to wait for
    a.call("CONFIG", "SET", "appendonly", "yes")
    try:
        b = spool(url, tmp_path)
        assert b.durability_warning() is None
        assert b._wait_commands() == [["WAITAOF", 1, 0, 1000]]
        b.call("CONFIG", "RESETSTAT")
        b.add(message("m"), FAILED, retry=60, max_retry=600)  # waits for the fsync
        assert waitaof_calls(b) == 1
        with b.deferred_durability():  # a batch: one wait at its end covers every add
            for i in range(4):
                b.add(message(f"b{i}"), FAILED, retry=60, max_retry=600)
            assert waitaof_calls(b) == 1
        assert waitaof_calls(b) == 2
        assert b.depth() == 5
    finally:
        a.call("CONFIG", "SET", "appendonly", "no")


def waitaof_calls(s: RedisSpool) -> int:
    info = s.call("INFO", "commandstats").decode()
    for line in info.splitlines():
        if line.startswith("cmdstat_waitaof:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_redis_down_queues_locally_then_moves_each_message_once(tmp_path: Path) -> None:
    assert BINARY is not None
    warnings: list[str] = []
    with RedisServer(BINARY) as server:
        a = RedisSpool(server.url, local=Spool(tmp_path / "local"), warn=warnings.append)
        server.stop()
        local = [a.add(message(f"m{i}"), FAILED, retry=60, max_retry=600) for i in range(2)]
        assert all(e.path is not None for e in local) and len(warnings) == 1
        assert "queuing in the local spool" in warnings[0]
        server.start()
        assert a.migrate() == 2 and a.local.files() == []
        assert a.migrate() == 0
        assert sorted(e.id for e in a.entries()) == sorted(e.id for e in local)
        relay = Relay()
        assert flush_all(a, relay) == ["sent", "sent"]
        assert sorted(relay.subjects) == ["m0", "m1"]


def test_a_taken_over_entry_resent_to_resend_carries_the_same_idempotency_key(
    url: str, tmp_path: Path, httpserver: HTTPServer
) -> None:
    """The one duplicate window (a provider accepted, the host died before recording it) is
    closed where the provider takes an idempotency key: every try sends the same one."""
    from mailrelay.engine import Engine
    from mailrelay.policy import Policy
    from mailrelay.state import TomlStateStore

    fake = FakeResend()
    fake.install(httpserver)
    resend = registry.build(specs_from_urls([fake.url(server_base_url(httpserver))], "test")[0])
    engine = Engine([resend], TomlStateStore(tmp_path / "state.toml"), Policy(cooldown=0))
    msg = message("m")
    fake.fail_next(Response('{"name": "internal_server_error"}', status=500))
    first = engine.send(msg)  # failed for now: queued
    assert first.fate == "retry"
    a = spool(url, tmp_path / "a", claim_idle=0.3)
    a.add(msg, first.attempts, retry=60, max_retry=600)
    dead = RedisFlush(a, "killed-host")
    dead.promote(everything=True)
    taken = dead.next()
    assert taken is not None
    assert dead.spool.find(taken[1]).subject == "m"
    assert engine.send(msg).delivered  # accepted, then the host was killed: not recorded
    time.sleep(0.5)
    b = spool(url, tmp_path / "b", claim_idle=0.3)
    report = b.flush(engine.send, retry=60, max_retry=600, max_age=86400)
    assert [i.status for i in report.items] == ["sent"]
    keys = {request.headers.get("Idempotency-Key") for request in fake.requests}
    assert len(fake.requests) == 3 and len(keys) == 1 and None not in keys
    assert fake.replays == 1  # Resend answers the repeat from its store: one email


def test_a_batch_from_threads_waits_for_each_connections_fsync(url: str, tmp_path: Path) -> None:
    import threading

    a = spool(url, tmp_path)
    a.call("CONFIG", "SET", "appendonly", "yes")
    try:
        a.call("CONFIG", "RESETSTAT")
        backoff = {"retry": 1, "max_retry": 1}
        with a.deferred_durability():
            workers = [
                threading.Thread(target=a.add, args=(message(f"t{i}"), FAILED), kwargs=backoff)
                for i in range(2)
            ]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        assert waitaof_calls(a) == 2  # WAITAOF covers its own connection's writes only
        assert a.depth() == 2
    finally:
        a.call("CONFIG", "SET", "appendonly", "no")


def test_drop_refuses_an_entry_a_flush_is_sending(url: str, tmp_path: Path) -> None:
    from mailrelay.spool import QueueIdBusy

    a = spool(url, tmp_path)
    entry = a.add(message("m"), FAILED, retry=60, max_retry=600)
    flusher = RedisFlush(a, "busy-host")
    flusher.promote(everything=True)
    assert flusher.next() is not None  # held by a flush, its send in flight
    with pytest.raises(QueueIdBusy):
        a.drop(entry.id)
    stale = spool(url, tmp_path, claim_idle=0.0)  # idle beyond the claim time: its host died
    assert stale.drop(entry.id).id == entry.id
    assert stale.depth() == 0 and stale.call("XPENDING", a.stream, "flushers")[0] == 0


def test_held_messages_wait_in_redis_until_a_flush_sends_them(url: str, tmp_path: Path) -> None:
    from mailrelay.delivery import Queueing, flush_held
    from mailrelay.errors import ConfigError
    from mailrelay.spool import HeldMessage

    a = spool(url, tmp_path)
    raw = b"From: ops@example.com\nTo: a@example.com\nSubject: held\n\nbody\n"
    held = a.hold(raw, reason="no providers", options={"recipients": []}, message_id="<x@y>")
    assert held.path is None and [h.subject for h in spool(url, tmp_path / "b").held()] == ["held"]
    queue = Queueing(a, retry=60, max_retry=600)

    def still_not(entry: HeldMessage) -> Message:
        raise ConfigError("still no providers")

    items = flush_held(a, still_not, Relay(), queue=queue)
    assert [(i.status, i.detail) for i in items] == [("held", "still no providers")]
    assert a.held()[0].reason == "still no providers"
    relay = Relay()
    items = flush_held(a, lambda entry: message(entry.subject), relay, queue=queue)
    assert [i.status for i in items] == ["sent"] and relay.subjects == ["held"]
    assert a.held() == [] and a.depth() == 0


def test_a_refused_entry_moves_to_failed_in_one_step(url: str, tmp_path: Path) -> None:
    a = spool(url, tmp_path)
    entry = a.add(message("refused"), FAILED, retry=60, max_retry=600)
    assert a.fail(entry, "refused permanently: 550") is None
    assert a.call("ZSCORE", a.retry, entry.id) is None and a.call("HLEN", a.docs) == 0
    (failed,) = a.entries(failed=True)
    assert failed.failed_reason == "refused permanently: 550"
    assert a.place(failed) == f"{a.failed_where} {entry.id}"


def test_drop_removes_a_held_message_in_redis(url: str, tmp_path: Path) -> None:
    a = spool(url, tmp_path)
    raw = b"From: ops@example.com\nTo: a@example.com\nSubject: held\n\nbody\n"
    options = {"recipients": ["a@example.com"]}
    held = a.hold(raw, reason="no providers", options=options, message_id=None)
    assert a.drop(held.id[:6]).recipients == ["a@example.com"]
    assert a.held() == []


def test_an_unreadable_document_in_redis_is_warned_of_and_left_out(
    url: str, tmp_path: Path
) -> None:
    warned: list[str] = []
    a = RedisSpool(url, local=Spool(tmp_path / "local"), warn=warned.append)
    queued = a.add(message("kept"), FAILED, retry=60, max_retry=600)
    raw = b"From: ops@example.com\nTo: a@example.com\nSubject: held\n\nbody\n"
    held = a.hold(raw, reason="no providers", options={"recipients": []}, message_id=None)
    a.call("HSET", a.docs, "BADQUEUED", b'{"schema": 1}')
    a.call("HSET", a.held_key, "BADHELD", b"{not json")
    assert [e.id for e in a.entries()] == [queued.id]
    assert [h.id for h in a.held()] == [held.id]
    queued_warning, held_warning = warned
    assert queued_warning.startswith(f"message BADQUEUED in {a.where} is unreadable (")
    assert queued_warning.endswith("); skipped")
    assert held_warning.startswith(f"held message BADHELD in {a.where} is unreadable (")
    assert held_warning.endswith(")")
