"""The records beside the state (suppressions, event ids, message statuses): the file store
and the Redis store keep the same promises."""

from __future__ import annotations

import multiprocessing
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailrelay.state.records import FileRecordStore, RecordStore
from tests.redisserver import RedisServer, server_binary

BINARY = server_binary()


@pytest.fixture(scope="module")
def valkey() -> Iterator[RedisServer | None]:
    if BINARY is None:
        yield None
        return
    with RedisServer(BINARY) as server:
        yield server


def make(kind: str, tmp: Path, valkey: RedisServer | None) -> RecordStore:
    if kind == "file":
        return FileRecordStore(tmp / "state.records")
    if valkey is None:
        pytest.skip("no valkey-server")
    from mailrelay.state.redisrecords import RedisRecordStore
    from mailrelay.state.redisstore import RedisStateStore

    return RedisRecordStore(RedisStateStore(f"{valkey.url}?prefix={tmp.name}"))


@pytest.fixture(params=["file", "redis"])
def store(request: Any, tmp_path: Path, valkey: RedisServer | None) -> RecordStore:
    return make(request.param, tmp_path, valkey)


def test_put_get_remove_and_list(store: RecordStore) -> None:
    store.put("suppression", "a@example.org", {"reason": "bounced", "since": 1.5})
    store.put("suppression", "b@example.org", {"reason": "manual", "detail": None})
    assert store.get("suppression", "a@example.org") == {"reason": "bounced", "since": 1.5}
    assert store.get("other", "a@example.org") is None
    assert sorted(store.items("suppression")) == ["a@example.org", "b@example.org"]
    assert store.get_many("suppression", ["b@example.org", "c@example.org"]) == {
        "b@example.org": {"reason": "manual"}
    }
    assert store.remove("suppression", "a@example.org") is True
    assert store.remove("suppression", "a@example.org") is False
    assert list(store.items("suppression")) == ["b@example.org"]
    assert (
        store.put_many("suppression", [(f"{i}@x.org", {"reason": "manual"}) for i in range(50)])
        == 50
    )
    assert len(store.items("suppression")) == 51


def test_a_claim_is_won_once(store: RecordStore) -> None:
    assert store.claim("event", "pm:1", 60) is True
    assert store.claim("event", "pm:1", 60) is False
    assert store.claim("event", "pm:2", 60) is True


def test_an_expired_file_record_is_gone_and_can_be_claimed_again(tmp_path: Path) -> None:
    now = [1000.0]
    store = FileRecordStore(tmp_path / "r", clock=lambda: now[0])
    assert store.claim("event", "x", 10)
    store.put("suppression", "a@x.org", {"reason": "bounced"}, ttl=10)
    now[0] += 11
    assert store.get("suppression", "a@x.org") is None
    assert store.claim("event", "x", 10) is True
    assert store.items("suppression") == {}
    assert not list((tmp_path / "r" / "suppression").glob("*.json"))  # listing swept it


def test_files_are_private(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path / "r")
    store.put("suppression", "a@x.org", {"reason": "bounced"})
    [record] = list((tmp_path / "r" / "suppression").iterdir())
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "r" / "suppression").stat().st_mode) == 0o700


def _claim(args: tuple[str, int]) -> int:
    path, n = args
    store = FileRecordStore(Path(path))
    return sum(store.claim("event", f"id{i}", 60) for i in range(n))


def test_concurrent_claims_of_the_same_ids_are_won_once_in_all(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        won = pool.map(_claim, [(str(tmp_path / "r"), 40)] * 4)
    assert sum(won) == 40
