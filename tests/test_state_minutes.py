"""The last hour of attempts by minute and outcome (the status page's chart), kept by the
TOML file and by Redis alike, never longer than 60 minutes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from mailrelay.state import ProviderChange, StateDelta, TomlStateStore
from tests.redisserver import server_binary

T0 = datetime(2026, 12, 4, 20, 0, 30, tzinfo=timezone.utc)
M0 = int(T0.timestamp()) // 60


def attempt(outcome: str, at: datetime, name: str = "relay") -> StateDelta:
    return StateDelta(at, [ProviderChange(name, count=outcome)])


def test_the_file_counts_by_minute_and_keeps_one_hour(tmp_path: Path) -> None:
    store = TomlStateStore(tmp_path / "state.toml")
    for outcome, at in [
        ("transient", T0),
        ("transient", T0 + timedelta(seconds=20)),
        ("accepted", T0 + timedelta(seconds=20)),
        ("accepted", T0 + timedelta(minutes=5)),
    ]:
        store.update(attempt(outcome, at))
    minutes = TomlStateStore(tmp_path / "state.toml").load().providers["relay"].minutes
    assert minutes == {f"{M0}:transient": 2, f"{M0}:accepted": 1, f"{M0 + 5}:accepted": 1}
    store.update(attempt("accepted", T0 + timedelta(minutes=61)))
    minutes = TomlStateStore(tmp_path / "state.toml").load().providers["relay"].minutes
    assert minutes == {f"{M0 + 5}:accepted": 1, f"{M0 + 61}:accepted": 1}  # M0 is gone
    assert store.load().providers["relay"].outcomes == {"transient": 2, "accepted": 3}


def test_a_bad_minute_key_is_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    path.write_text('schema = 1\n[providers.relay.minutes]\n"x:accepted" = 1\n')
    warnings: list[str] = []
    assert TomlStateStore(path, warn=warnings.append).load().providers == {}
    assert any("minutes" in w for w in warnings), warnings


BINARY = server_binary()


def test_redis_counts_by_minute_and_drops_an_hour_old(redis_url: str) -> None:
    import redis

    from mailrelay.state.redisstore import RedisStateStore

    store = RedisStateStore(redis_url)
    store.update(attempt("transient", T0))
    store.update(attempt("accepted", T0))
    minutes = store.load().providers["relay"].minutes
    (now,) = {int(k.partition(":")[0]) for k in minutes}  # the server's minute
    assert minutes == {f"{now}:transient": 1, f"{now}:accepted": 1}
    other = redis.Redis.from_url(redis_url)
    other.hset("{mailrelay}:provider:relay", f"minute:{now - 60}:accepted", 7)
    other.hset("{mailrelay}:provider:relay", f"minute:{now - 59}:accepted", 2)
    other.close()
    store.update(attempt("accepted", T0))
    after = store.load().providers["relay"].minutes
    assert f"{now - 60}:accepted" not in after  # an hour old (or more, if the minute turned)
    assert after[f"{now}:accepted"] + after.get(f"{now + 1}:accepted", 0) == 2
