"""The one way a time is written (mailrelay/clock.py): files and JSON, people, ages."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailrelay.clock import age_text, iso_text, when_text

PARIS = timezone(timedelta(hours=1))


def test_iso_text_is_utc_with_a_z() -> None:
    at = datetime(2026, 3, 1, 13, 0, 5, 123456, tzinfo=PARIS)
    assert iso_text(at) == "2026-03-01T12:00:05.123456Z"
    assert iso_text(at, timespec="milliseconds") == "2026-03-01T12:00:05.123Z"
    whole = datetime(2026, 3, 1, 12, 0, 5, tzinfo=timezone.utc)
    assert iso_text(whole) == "2026-03-01T12:00:05Z"
    assert iso_text(whole, timespec="milliseconds") == "2026-03-01T12:00:05.000Z"


def test_when_text_is_for_people() -> None:
    assert when_text(datetime(2026, 3, 1, 12, 0, 5, tzinfo=timezone.utc)) == "2026-03-01 12:00:05Z"
    assert when_text(None) == "-"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "0s"),
        (45.9, "45s"),
        (60, "1m"),
        (3599, "59m"),
        (3600 + 5 * 60, "1h05m"),
        (2 * 86400 + 4 * 3600 + 59, "2d4h"),
    ],
)
def test_age_text_in_at_most_two_units(seconds: float, text: str) -> None:
    assert age_text(seconds) == text
