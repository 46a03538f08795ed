"""The two clocks the engine, the spool and the alerts are given (so tests can give others):
a monotonic one for deadlines and latencies, and the wall clock in UTC for what is kept."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], float]  # seconds, monotonic (time.monotonic)
Now = Callable[[], datetime]  # an aware datetime in UTC (utcnow)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
