"""When a queued message is tried again: retry, 2*retry, 4*retry ... capped at max_retry."""

from __future__ import annotations

from datetime import datetime, timedelta


def retry_delay(tries: int, retry: float, max_retry: float) -> float:
    """Seconds to wait after the `tries`-th failed try: retry, 2*retry, 4*retry ... capped."""
    exponent = min(max(tries - 1, 0), 60)  # 2**60 s is beyond any cap; avoid float overflow
    return float(min(retry * float(2**exponent), max_retry))


def next_try_time(now: datetime, tries: int, retry: float, max_retry: float) -> datetime:
    return now + timedelta(seconds=retry_delay(tries, retry, max_retry))
