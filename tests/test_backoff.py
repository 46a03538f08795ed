"""The one backoff formula (mailrelay.backoff) and its jitter, as both backoffs use it."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

from mailrelay.backoff import JITTER, doubling, jittered
from mailrelay.policy import Policy
from mailrelay.providers.base import Outcome
from mailrelay.spool.backoff import next_try_time

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_doubling_is_capped_and_never_overflows() -> None:
    assert [doubling(300, n, 3600) for n in range(0, 7)] == [300, 300, 600, 1200, 2400, 3600, 3600]
    assert doubling(1e300, 10_000, 1e308) == 1e308


def test_jitter_only_shortens_by_at_most_its_fraction() -> None:
    rng = random.Random(7)
    waits = [jittered(600.0, rand=rng.random) for _ in range(1000)]
    assert all(600 * (1 - JITTER) <= w <= 600 for w in waits)
    assert len({round(w) for w in waits}) > 30  # spread, not one value
    assert jittered(600.0, jitter=0.0) == 600.0
    assert jittered(0.0, rand=lambda: 0.99) == 0.0


def test_queued_messages_of_one_outage_spread_their_retries() -> None:
    rng = random.Random(1)
    times = {next_try_time(T0, 3, 300, 3600, rand=rng.random) for _ in range(200)}
    seconds = sorted((t - T0).total_seconds() for t in times)
    assert len(times) == 200 and seconds[0] >= 1080 and seconds[-1] <= 1200


def test_cooldown_jitter_keeps_retry_after_and_the_cap() -> None:
    policy = Policy(cooldown=60, max_cooldown=300, rand=lambda: 0.999)
    assert policy.cooldown_for(Outcome.TRANSIENT, 1, None) < 60
    assert policy.cooldown_for(Outcome.TRANSIENT, 1, 90) == 90  # Retry-After still wins
    assert policy.cooldown_for(Outcome.TRANSIENT, 9, None) <= 300
    steps = policy.cooldown_steps(Outcome.TRANSIENT, None)
    assert len(steps) == 4 and all(a < b for a, b in itertools.pairwise(steps))
    assert Policy(jitter=0.0, cooldown=60, max_cooldown=300).cooldown_steps(
        Outcome.TRANSIENT, None
    ) == (60, 120, 240, 300)
    assert policy.cooldown_for(Outcome.REJECTED, 1, None) is None
