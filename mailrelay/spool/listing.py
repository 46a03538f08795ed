"""The words of `mailrelay queue list` as table rows (columns and cells), so the status page
of `serve` shows the queue with the same words."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from mailrelay.clock import age_text, when_text

if TYPE_CHECKING:
    from mailrelay.spool.entry import HeldMessage, QueuedMessage

QUEUED_COLUMNS = ["id", "queued", "age", "tries", "next try", "to", "subject", "last error"]
FAILED_COLUMNS = ["id", "queued", "age", "tries", "to", "subject", "why"]


def relative(at: datetime, now: datetime) -> str:
    seconds = (at - now).total_seconds()
    return "due" if seconds <= 0 else f"in {age_text(seconds)}"


def queued_rows(
    held: list[HeldMessage], entries: list[QueuedMessage], now: datetime
) -> list[list[str]]:
    """Held messages first (the reason says why), then the queued ones, oldest first."""
    return [
        [
            h.id,
            when_text(h.created),
            age_text((now - h.created).total_seconds()),
            "0",
            "held",  # until the configuration allows sending (the reason says why)
            ", ".join(h.recipients),
            h.subject,
            f"held: {h.reason}",
        ]
        for h in held
    ] + [
        [
            e.id,
            when_text(e.created),
            age_text((now - e.created).total_seconds()),
            str(e.tries),
            relative(e.next_try, now),
            ", ".join(e.recipients),
            e.subject,
            e.last_error or "",
        ]
        for e in entries
    ]


def failed_rows(entries: list[QueuedMessage], now: datetime) -> list[list[str]]:
    return [
        [
            e.id,
            when_text(e.created),
            age_text((now - e.created).total_seconds()),
            str(e.tries),
            ", ".join(e.recipients),
            e.subject,
            e.failed_reason or "",
        ]
        for e in entries
    ]
