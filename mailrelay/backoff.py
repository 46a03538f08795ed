"""The one backoff formula: a wait that doubles with each consecutive failure up to a cap,
then shortened by a random fraction (jitter) so that many waits started by one event (an
outage that queued a thousand messages, a fleet whose hosts saw the same provider fail) do
not all end in the same second.

Both backoffs of mailrelay use it: how long a failing provider rests (`Policy.cooldown_for`)
and when a queued message is tried again (`spool.backoff`).
"""

from __future__ import annotations

import random
from collections.abc import Callable

# Up to a tenth shorter: wide enough to spread a burst over minutes at the longer steps,
# narrow enough that a wait never drops far under the step a user configured.
JITTER = 0.1

Random = Callable[[], float]
"""A source of floats in [0, 1), as `random.random`; tests give one returning a constant."""


def doubling(base: float, step: int, cap: float) -> float:
    """`base` after the first failure, twice `base` after the second ... never over `cap`."""
    exponent = min(max(step - 1, 0), 60)  # 2**60 times any base is past any cap: no overflow
    return float(min(base * float(2**exponent), cap))


def jittered(wait: float, *, jitter: float = JITTER, rand: Random = random.random) -> float:
    """`wait` shortened by up to `jitter` of itself (never lengthened: a cap stays a cap)."""
    if jitter <= 0 or wait <= 0:
        return wait
    return wait * (1.0 - min(jitter, 1.0) * rand())
