"""The Python and Lua sides of every state change agree: hypothesis applies the same random
sequences of deltas to the TOML file store and to the Redis store (a real valkey-server on
loopback) and compares the states they end with.

Times are the one thing the two stores take from different clocks (the delta's `now` for the
file, the server's TIME for Redis): stamps are compared by presence, and a cooldown by the
step it was given (the steps are 100 s apart, so the one chosen is never in doubt).
"""

from __future__ import annotations

import itertools
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrelay.state import Changes, ProviderChange, State, StateDelta, TomlStateStore
from mailrelay.state.redisstore import RedisStateStore
from tests.redisserver import RedisServer, server_binary

BINARY = server_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason="no redis-server or valkey-server")

NAMES = ["mg", "pm-eu", "smtp_2"]
COUNTERS = ["sent", "failed", "consecutive_failures"]
TIMES = ["last_success", "last_failure"]
TEXT_KEYS = ["last_error", "last_outcome"]
OUTCOMES = ["accepted", "transient", "provider", "rejected", "permanent", "ambiguous"]
MESSAGES = ["sent", "queued", "failed", "rejected"]
STEP = 100.0  # seconds between cooldown steps: far more than the two clocks can differ

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
changes = st.builds(
    ProviderChange,
    st.sampled_from(NAMES),
    add=st.dictionaries(st.sampled_from(COUNTERS), st.integers(0, 5), max_size=3),
    count=st.none() | st.sampled_from(OUTCOMES),
    clear=st.lists(
        st.sampled_from(COUNTERS + TIMES + TEXT_KEYS + ["cooldown_until"]), max_size=3
    ).map(tuple),
    stamp=st.lists(st.sampled_from(TIMES), max_size=2, unique=True).map(tuple),
    texts=st.dictionaries(st.sampled_from(TEXT_KEYS), texts, max_size=2),
    cooldowns=st.lists(st.integers(0, 4), max_size=4).map(lambda ks: tuple(k * STEP for k in ks)),
)


@st.composite
def deltas(draw: st.DrawFn) -> StateDelta:
    last = draw(st.none() | st.sampled_from(NAMES))
    return StateDelta(
        datetime.now(timezone.utc),
        draw(st.lists(changes, max_size=3)),
        last_provider=last,
        last_index=draw(st.none() | st.integers(0, 5)) if last else None,
        message=draw(st.none() | st.sampled_from(MESSAGES)),
    )


# an update is one delta, or a batch of several folded into one write (Changes)
updates = st.lists(st.lists(deltas(), min_size=1, max_size=3), min_size=1, max_size=8)


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    return redis_server  # the session's shared server (tests/redisserver.py)


def normal(state: State) -> dict[str, Any]:
    """What both stores must agree on, times reduced to what the two clocks share."""
    now = datetime.now(timezone.utc)
    providers = {}
    for name, p in state.providers.items():
        left = (p.cooldown_until - now).total_seconds() if p.cooldown_until else 0.0
        providers[name] = {
            **{key: getattr(p, key) for key in COUNTERS + TEXT_KEYS},
            **{key: getattr(p, key) is not None for key in TIMES},
            "outcomes": {k: v for k, v in p.outcomes.items() if v},
            "cooldown_step": round(left / STEP) if left > 0 else 0,
        }
    return {
        "last_provider": state.last_provider,
        "last_index": state.last_index if state.last_provider else None,
        "last_result": state.last_result,
        "messages": {k: v for k, v in state.messages.items() if v},
        "providers": providers,
    }


_PREFIXES = itertools.count()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=updates)
def test_the_file_and_redis_stores_end_in_the_same_state(
    server: RedisServer, batches: list[list[StateDelta]]
) -> None:
    redis = RedisStateStore(f"{server.url}?prefix=agree{next(_PREFIXES)}")
    with tempfile.TemporaryDirectory() as tmp:
        toml = TomlStateStore(Path(tmp) / "state.toml")
        try:
            for batch in batches:
                change = batch[0] if len(batch) == 1 else Changes(batch)
                toml.update(change)
                redis.update(change)
            assert normal(redis.load()) == normal(toml.load())
        finally:
            redis.client.close()
