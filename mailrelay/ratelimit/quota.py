"""When a spent quota comes back: daily quotas reset at 00:00 UTC (MailerSend's
x-apiquota-reset, SES's rolling 24 hours taken at its longest), monthly ones on the 1st."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def to_midnight(now: datetime | None = None) -> float:
    """Seconds to the next 00:00 UTC."""
    now = _now(now)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def to_month_end(now: datetime | None = None) -> float:
    """Seconds to 00:00 UTC on the 1st of the next month."""
    now = _now(now)
    first = (now.replace(day=28) + timedelta(days=4)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    return (first - now).total_seconds()


def until_text(seconds: float, now: datetime | None = None) -> str:
    """ "00:00 UTC" within a day, "2026-08-01 00:00 UTC" further off; to the nearest minute
    (a reset stored a few milliseconds before midnight is still midnight's)."""
    now = _now(now)
    when = now + timedelta(seconds=seconds + 30)
    when = when.replace(second=0, microsecond=0)
    if seconds < 86400 - 30:
        return when.strftime("%H:%M UTC")
    return when.strftime("%Y-%m-%d %H:%M UTC")
