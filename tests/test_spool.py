"""The spool as a library: file format and durability, backoff, max age, locks, bad files.

Sends go through a real Engine with real SMTP providers against aiosmtpd on loopback.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailrelay.config import load_settings
from mailrelay.delivery import Queueing, deliver
from mailrelay.engine import Engine
from mailrelay.errors import ExitCode
from mailrelay.message import Message, build_message, message_to_dict, parse_eml
from mailrelay.policy import Policy
from mailrelay.result import SendResult
from mailrelay.spool import (
    ID_ALPHABET,
    FlushReport,
    Spool,
    SpoolError,
    UnknownQueueId,
    new_queue_id,
    retry_delay,
)
from mailrelay.state import TomlStateStore
from tests.smtpserver import SmtpServer, shared_server

T0 = datetime(2026, 11, 22, 9, 0, 0, tzinfo=timezone.utc)
RETRY, MAX_RETRY, MAX_AGE = 300.0, 3600.0, 5 * 86400.0


def NO_JITTER() -> float:
    return 0.0


class FakeClock:
    """An injected `now` for the spool (the sends themselves are real)."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def engine_for(tmp_path: Path, port: int) -> Engine:
    url = f"smtp://127.0.0.1:{port}?security=none&timeout=3&name=relay"
    providers = load_settings(None, [url]).build_providers()
    store = TomlStateStore(tmp_path / "state.toml")
    return Engine(providers, store, Policy(timeout=10))


def a_message(subject: str = "disk full", **kw: object) -> Message:
    args: dict[str, object] = {
        "sender": "cron@example.com",
        "to": ["ops@example.com"],
        "subject": subject,
        "text": "91%\n",
    }
    args.update(kw)
    return build_message(**args)  # type: ignore[arg-type]


def queue_one(spool: Spool, engine: Engine, message: Message) -> str:
    result = engine.send(message)
    assert not result.delivered
    return spool.add(message, result.attempts, retry=RETRY, max_retry=MAX_RETRY).id


def flush(spool: Spool, send: Callable[[Message], SendResult], **kw: object) -> FlushReport:
    args: dict[str, object] = {"retry": RETRY, "max_retry": MAX_RETRY, "max_age": MAX_AGE}
    args.update(kw)
    return spool.flush(send, **args)  # type: ignore[arg-type]


def test_retry_delay_doubles_and_is_capped() -> None:
    assert [retry_delay(n, 300, 3600) for n in range(1, 7)] == [
        300,
        600,
        1200,
        2400,
        3600,
        3600,
    ]
    assert retry_delay(10_000, 300, 3600) == 3600  # no overflow on a very old message


def test_ids_are_short_random_first_and_unique_from_their_first_characters() -> None:
    ids = [new_queue_id() for _ in range(2000)]
    assert all(len(i) == 12 and set(i) <= set(ID_ALPHABET) for i in ids)
    assert len({i[:6] for i in ids}) == 2000  # six characters already tell them apart
    assert len({i[0] for i in ids}) > 20  # random from the first character, not a clock


def test_a_queued_file_is_private_durable_json_and_lossless(tmp_path: Path, dead_port: int) -> None:
    spool = Spool(tmp_path / "data" / "spool", rand=NO_JITTER)
    attachment = tmp_path / "report.bin"
    attachment.write_bytes(bytes(range(256)))
    message = a_message(
        bcc=["secret-boss@example.com"],
        cc=["team@example.com"],
        attachments=[str(attachment)],
        tags=["cron", "disk"],
        metadata=["host=web1"],
        headers=["X-Job: backup"],
    )
    ident = queue_one(spool, engine_for(tmp_path, dead_port), message)
    path = spool.path / f"{ident}.json"
    assert stat.S_IMODE(os.stat(spool.path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(spool.path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in spool.path.iterdir()] == [path.name]  # no temp file left
    doc = json.loads(path.read_text())
    assert doc["schema"] == 1 and doc["id"] == ident and doc["tries"] == 1
    assert doc["envelope"] == {
        "sender": "cron@example.com",
        "recipients": ["ops@example.com", "team@example.com", "secret-boss@example.com"],
    }
    (first_try,) = doc["history"]
    assert first_try["attempts"][0]["provider"] == "relay"
    assert first_try["attempts"][0]["outcome"] in ("transient", "rejected")  # tags: not SMTP
    assert datetime.fromisoformat(doc["next_try"]) - datetime.fromisoformat(
        doc["created"]
    ) == timedelta(seconds=RETRY)
    back = spool.find(ident).message()
    assert message_to_dict(back) == message_to_dict(message)
    assert [a.email for a in back.bcc] == ["secret-boss@example.com"]
    assert back.attachments[0].data == bytes(range(256))
    assert back.tags == ["cron", "disk"] and back.metadata == {"host": "web1"}


def test_a_whole_message_keeps_its_bytes(tmp_path: Path, dead_port: int) -> None:
    raw = (
        b"From: Cron Daemon <root@example.com>\r\nTo: ops@example.com\r\n"
        b"Bcc: hidden@example.com\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\nline\r\n"
    )
    message = parse_eml(raw, recipients=(), extract=True)
    spool = Spool(tmp_path / "spool", rand=NO_JITTER)
    ident = queue_one(spool, engine_for(tmp_path, dead_port), message)
    back = spool.find(ident).message()
    assert back.raw == message.raw and b"Bcc" not in (back.raw or b"")
    assert [a.email for a in back.recipients()] == ["ops@example.com", "hidden@example.com"]


def test_flush_sends_once_removes_the_file_and_records_state(
    tmp_path: Path, dead_port: int
) -> None:
    clock = FakeClock()
    spool = Spool(tmp_path / "spool", now=clock, rand=NO_JITTER)
    message = a_message(bcc=["hidden@example.com"])
    ident = queue_one(spool, engine_for(tmp_path, dead_port), message)
    clock.advance(RETRY)
    with shared_server() as server:
        engine = engine_for(tmp_path, server.port)
        report = flush(spool, engine.send)
        assert [(i.id, i.status) for i in report.items] == [(ident, "sent")]
        assert report.exit_code == 0
        (received,) = server.messages
        assert sorted(received.rcpt_tos) == ["hidden@example.com", "ops@example.com"]
        assert b"hidden@example.com" not in received.data  # Bcc never leaves
        assert spool.files() == []
        assert flush(spool, engine.send).items == []  # nothing left: nothing sent twice
        assert len(server.messages) == 1
    state = TomlStateStore(tmp_path / "state.toml").load()
    assert state.providers["relay"].sent == 1 and state.last_provider == "relay"


def test_backoff_skips_until_due_doubles_and_caps(tmp_path: Path, dead_port: int) -> None:
    clock = FakeClock()
    spool = Spool(tmp_path / "spool", now=clock, rand=NO_JITTER)
    engine = engine_for(tmp_path, dead_port)
    ident = queue_one(spool, engine, a_message())
    tried: list[str] = []

    def send(message: Message) -> SendResult:
        tried.append(message.subject)
        return engine.send(message)

    clock.advance(RETRY - 1)
    report = flush(spool, send)
    assert [i.status for i in report.items] == ["not_due"] and tried == []
    assert report.exit_code == 0
    # --now tries it anyway; it fails again, so the next wait is twice as long
    report = flush(spool, send, ignore_backoff=True)
    assert [i.status for i in report.items] == ["queued"] and len(tried) == 1
    assert report.exit_code == ExitCode.TEMPFAIL
    entry = spool.find(ident)
    assert entry.tries == 2 and entry.next_try == clock.now + timedelta(seconds=2 * RETRY)
    assert len(entry.history) == 2
    waits = []
    for _ in range(5):
        clock.now = spool.find(ident).next_try
        before = clock.now
        report = flush(spool, send)
        assert [i.status for i in report.items] == ["queued"]
        waits.append((spool.find(ident).next_try - before).total_seconds())
    assert waits == [1200, 2400, 3600, 3600, 3600]
    assert spool.find(ident).tries == 7


def test_past_max_age_moves_to_failed_and_is_kept(tmp_path: Path, dead_port: int) -> None:
    clock = FakeClock()
    spool = Spool(tmp_path / "spool", now=clock, rand=NO_JITTER)
    ident = queue_one(spool, engine_for(tmp_path, dead_port), a_message())
    clock.advance(MAX_AGE + 1)
    sent: list[Message] = []
    report = flush(spool, sent.append)  # type: ignore[arg-type]
    (item,) = report.items
    assert item.status == "failed" and "expired" in item.detail and sent == []
    assert report.exit_code == ExitCode.UNAVAILABLE
    assert spool.files() == []
    (failed,) = spool.files(failed=True)
    assert failed.name == f"{ident}.json"
    assert stat.S_IMODE(os.stat(failed).st_mode) == 0o600
    entry = spool.find(ident)
    assert entry.failed_reason is not None and "connection refused" in entry.failed_reason
    assert [e.id for e in spool.entries(failed=True)] == [ident]
    assert spool.drop(ident).id == ident
    assert spool.files(failed=True) == []


def test_a_permanent_refusal_on_flush_moves_to_failed(tmp_path: Path, dead_port: int) -> None:
    spool = Spool(tmp_path / "spool", rand=NO_JITTER)
    ident = queue_one(spool, engine_for(tmp_path, dead_port), a_message())
    with SmtpServer(fail={"rcpt": "550 5.1.1 no such user"}) as server:
        report = flush(spool, engine_for(tmp_path, server.port).send, ignore_backoff=True)
    (item,) = report.items
    assert item.status == "failed" and "550" in item.detail
    assert [p.stem for p in spool.files(failed=True)] == [ident]


@pytest.mark.parametrize(
    ("case", "fate"),
    [("accepted", "sent"), ("failed for now", "queued"), ("refused after a failover", "failed")],
)
def test_a_flush_ends_an_entry_as_a_fresh_send_ends_its_message(
    tmp_path: Path, dead_port: int, case: str, fate: str
) -> None:
    """One rule (mailrelay.delivery): what a flush makes of a queued entry is what a fresh
    send with the same result makes of its message — sent, queued (again), or failed."""
    spool = Spool(tmp_path / "spool", rand=NO_JITTER)
    ident = queue_one(spool, engine_for(tmp_path, dead_port), a_message())
    refuse = {"rcpt": "550 5.1.1 no such user"} if case.startswith("refused") else {}
    with SmtpServer(fail=refuse) as server:
        urls = [f"smtp://127.0.0.1:{dead_port}?security=none&timeout=3&name=dead"]
        if case != "failed for now":
            urls.append(f"smtp://127.0.0.1:{server.port}?security=none&timeout=3&name=live")

        def engine(state: str) -> Engine:  # each send from the first provider on
            providers = load_settings(None, urls).build_providers()
            return Engine(providers, TomlStateStore(tmp_path / state), Policy(timeout=10))

        queueing = Queueing(
            Spool(tmp_path / "fresh", rand=NO_JITTER), retry=RETRY, max_retry=MAX_RETRY
        )
        fresh = deliver(engine("fresh.toml"), a_message("fresh"), queue=queueing)
        report = flush(spool, engine("flush.toml").send, ignore_backoff=True)
    (item,) = report.items
    assert item.result is not None and fresh.result is not None
    assert fresh.status == item.status == fate
    assert [a.provider for a in item.result.attempts] == [a.provider for a in fresh.result.attempts]
    assert [p.stem for p in spool.files()] == ([ident] if fate == "queued" else [])
    assert [p.stem for p in spool.files(failed=True)] == ([ident] if fate == "failed" else [])
    if fate == "failed":  # refused for the message itself: exit 65, and not queued anew
        assert fresh.exit_code == ExitCode.DATAERR and queueing.spool.files() == []
        assert "550" in item.detail and "refused permanently" in item.detail


def test_a_corrupt_file_is_moved_aside_and_the_others_still_go(
    tmp_path: Path, dead_port: int
) -> None:
    spool = Spool(tmp_path / "spool", rand=NO_JITTER)
    good = queue_one(spool, engine_for(tmp_path, dead_port), a_message("good"))
    bad = spool.path / "00000000T000000.000000Z-bad.json"  # sorts first
    bad.write_text('{"schema": 1, "id": ')
    wrong = spool.path / "00000000T000000.000001Z-wrong.json"
    wrong.write_text(json.dumps({"schema": 99}))
    warnings: list[str] = []
    spool.warn = warnings.append
    assert [e.id for e in spool.entries()] == [good]  # list reports and skips them
    assert len(warnings) == 2 and "not valid JSON" in warnings[0]
    with shared_server() as server:
        report = flush(spool, engine_for(tmp_path, server.port).send, ignore_backoff=True)
        assert len(server.messages) == 1
    outcomes = {i.id: i.status for i in report.items}
    assert outcomes == {bad.stem: "corrupt", wrong.stem: "corrupt", good: "sent"}
    assert report.exit_code == ExitCode.UNAVAILABLE
    assert sorted(p.name for p in spool.corrupt_dir.iterdir()) == sorted([bad.name, wrong.name])
    assert (spool.corrupt_dir / bad.name).read_text() == '{"schema": 1, "id": '  # never lost
    assert spool.files() == []


def test_a_locked_message_is_skipped_by_another_flush(tmp_path: Path, dead_port: int) -> None:
    spool = Spool(tmp_path / "spool", rand=NO_JITTER)
    ident = queue_one(spool, engine_for(tmp_path, dead_port), a_message())
    path = spool.path / f"{ident}.json"
    with shared_server() as server:
        engine = engine_for(tmp_path, server.port)
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # as a flush that is sending it right now
            report = flush(spool, engine.send, ignore_backoff=True)
            assert [i.status for i in report.items] == ["locked"]
            assert server.messages == [] and path.exists()
        finally:
            os.close(fd)
        report = flush(spool, engine.send, ignore_backoff=True)
        assert [i.status for i in report.items] == ["sent"] and len(server.messages) == 1


def test_an_unwritable_spool_raises_and_queues_nothing(tmp_path: Path, dead_port: int) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    spool = Spool(blocker / "spool")
    engine = engine_for(tmp_path, dead_port)
    with pytest.raises(SpoolError) as caught:
        queue_one(spool, engine, a_message())
    assert caught.value.exit_code == ExitCode.CANTCREAT
    assert str(blocker) in str(caught.value)


def test_find_and_drop_by_unique_prefix(tmp_path: Path, dead_port: int) -> None:
    clock = FakeClock()
    spool = Spool(tmp_path / "spool", now=clock, rand=NO_JITTER)
    engine = engine_for(tmp_path, dead_port)
    first = queue_one(spool, engine, a_message("one"))
    clock.advance(3600)
    second = queue_one(spool, engine, a_message("two"))
    differ = next(n for n in range(1, 13) if first[:n] != second[:n])
    assert spool.find(first[:differ]).subject == "one"  # its first characters name it
    # two messages queued under the old, time-first ids: a shared start is ambiguous
    for entry, old in (
        (first, "20261122T091403.123456Z-3f9a2c1b0e"),
        (second, "20261122T101403.5Z-aa"),
    ):
        path = spool.path / f"{entry}.json"
        doc = json.loads(path.read_text())
        doc["id"] = old
        (spool.path / f"{old}.json").write_text(json.dumps(doc))
        path.unlink()
    first, second = "20261122T091403.123456Z-3f9a2c1b0e", "20261122T101403.5Z-aa"
    assert spool.find("20261122T09").subject == "one"
    with pytest.raises(UnknownQueueId, match="matches 2 messages"):
        spool.find("2026")
    with pytest.raises(UnknownQueueId, match="no message nope"):
        spool.find("nope")
    with pytest.raises(UnknownQueueId):
        spool.find("../state")
    assert spool.drop(second).subject == "two"
    assert [e.id for e in spool.entries()] == [first]
    with pytest.raises(UnknownQueueId):
        spool.drop(second)


def test_flushing_a_missing_spool_does_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "never-created", rand=NO_JITTER)
    report = flush(spool, lambda m: pytest.fail("nothing to send"))  # type: ignore[arg-type,return-value]
    assert report.items == [] and report.exit_code == 0
    assert not spool.path.exists()
