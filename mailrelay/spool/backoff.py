"""When a queued message is tried again: retry, 2*retry, 4*retry ... capped at max_retry,
each wait shortened by the jitter of `mailrelay.backoff`."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from mailrelay.backoff import JITTER, Random, doubling, jittered


def retry_delay(tries: int, retry: float, max_retry: float) -> float:
    """Seconds to wait after the `tries`-th failed try, before jitter: retry, 2*retry ..."""
    return doubling(retry, tries, max_retry)


def next_try_time(
    now: datetime,
    tries: int,
    retry: float,
    max_retry: float,
    *,
    jitter: float = JITTER,
    rand: Random = random.random,
) -> datetime:
    wait = jittered(retry_delay(tries, retry, max_retry), jitter=jitter, rand=rand)
    return now + timedelta(seconds=wait)
