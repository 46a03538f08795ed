"""The two clocks the engine, the spool and the alerts are given (so tests can give others):
a monotonic one for deadlines and latencies, and the wall clock in UTC for what is kept; and
the one way each front end writes a time: RFC 3339 for files and JSON, a short UTC stamp for
people, and an age ("3h05m")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], float]  # seconds, monotonic (time.monotonic)
Now = Callable[[], datetime]  # an aware datetime in UTC (utcnow)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso_text(value: datetime, *, timespec: str = "auto") -> str:
    """RFC 3339 in UTC with a "Z" (spool files, JSON documents); `timespec` as
    `datetime.isoformat` takes it: "milliseconds" (the audit log, alerts), "seconds" (the
    suppression list, message statuses)."""
    return value.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def when_text(value: datetime | None) -> str:
    """A time for people, to the second ("2026-03-01 12:00:05Z"), or "-" for none."""
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def age_text(seconds: float) -> str:
    """A duration in at most two units: "45s", "12m", "3h05m", "2d4h"."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"
