"""WorkerStore (serve's per-worker state): counters written behind, what plans depend on at
once; two stores on one file stand for two gunicorn workers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from mailrelay.state import ProviderChange, StateDelta, TomlStateStore
from mailrelay.state.workerstore import WorkerStore

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def accepted(name: str, now: datetime) -> StateDelta:
    change = ProviderChange(name, add={"sent": 1}, count="accepted", stamp=("last_success",))
    change.clear = ("consecutive_failures", "cooldown_until")
    change.texts["last_outcome"] = "accepted"
    return StateDelta(now, [change], last_provider=name, last_index=0, message="sent")


def transient(name: str, now: datetime) -> StateDelta:
    change = ProviderChange(
        name,
        add={"failed": 1, "consecutive_failures": 1},
        count="transient",
        stamp=("last_failure",),
        texts={"last_outcome": "transient", "last_error": "transient: 451"},
        cooldowns=(60.0,),
    )
    return StateDelta(now, [change], message="failed")


def store(path: Path) -> WorkerStore:
    return WorkerStore(TomlStateStore(path), flush_interval=3600)  # flushed by hand here


def test_counters_wait_for_the_flush_and_then_add_up(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    a, b = store(path), store(path)
    a.update(accepted("pm", T0))  # the first one moves last_provider and last_result: written
    assert TomlStateStore(path).load().providers["pm"].sent == 1
    writes = a.writes
    for i in range(5):
        a.update(accepted("pm", T0 + timedelta(seconds=i + 1)))
        b.update(accepted("pm", T0 + timedelta(seconds=i + 1)))
    assert a.writes == writes  # only counting: nothing written yet
    assert TomlStateStore(path).load().providers["pm"].sent == 1
    assert a.load().providers["pm"].sent == 6  # the worker sees its own counters
    a.flush()
    b.close()
    on_disk = TomlStateStore(path).load()
    assert on_disk.providers["pm"].sent == 11
    assert on_disk.providers["pm"].outcomes == {"accepted": 11}
    assert on_disk.messages == {"sent": 11}
    assert on_disk.providers["pm"].last_success == T0 + timedelta(seconds=5)


def test_a_cooldown_is_written_at_once_and_seen_by_the_other_worker(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    a, b = store(path), store(path)
    a.update(accepted("pm", T0))
    assert b.load().providers["pm"].cooldown_until is None
    a.update(transient("pm", T0 + timedelta(seconds=1)))  # starts a cooldown
    until = T0 + timedelta(seconds=61)
    assert TomlStateStore(path).load().providers["pm"].cooldown_until == until
    assert b.load().providers["pm"].cooldown_until == until  # re-read: the file changed
    b.update(accepted("pm", T0 + timedelta(seconds=2)))  # ends it: written at once too
    after = TomlStateStore(path).load().providers["pm"]
    assert after.cooldown_until is None and after.consecutive_failures == 0
    assert a.load().providers["pm"].cooldown_until is None


def test_a_counted_success_replayed_later_does_not_undo_a_cooldown(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    a, b = store(path), store(path)
    a.update(accepted("pm", T0))
    a.update(accepted("pm", T0 + timedelta(seconds=1)))  # pending in a
    b.update(transient("pm", T0 + timedelta(seconds=2)))  # b's cooldown, on disk
    a.flush()
    entry = TomlStateStore(path).load().providers["pm"]
    assert entry.cooldown_until == T0 + timedelta(seconds=62)
    assert entry.consecutive_failures == 1
    assert entry.last_outcome == "transient"  # the newest attempt's, not the replayed one's
    assert entry.sent == 2 and entry.failed == 1
    assert TomlStateStore(path).load().last_result == "failed"
