"""Helpers the ESP parsers share: a stable event id for ESPs that send none, and how one
event of a provider becomes an `Event`."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from mailrelay.events.model import Event, text


def derived_id(*parts: object) -> str:
    """An event id made of the fields that identify an event when the ESP sends no id: the
    same event sent twice gets the same id."""
    joined = "\x1f".join("" if p is None else str(p) for p in parts)
    return "h:" + hashlib.sha256(joined.encode("utf-8")).hexdigest()[:32]


def make(
    source: tuple[str, str],
    mapped: tuple[str, str | None],
    *,
    event_id: object,
    timestamp: datetime,
    recipient: object,
    message_id: object,
    raw_event: str,
    description: object = "",
    tags: Any = None,
    rfc_message_id: object = None,
) -> Event:
    """One Event from what a parser read: `source` is (provider name, type), `mapped` the
    normalised (event, reject reason)."""
    return Event(
        provider=source[0],
        type=source[1],
        event=mapped[0],
        event_id=str(event_id),
        timestamp=timestamp,
        recipient=(text(recipient) or "").strip().lower() or None,
        message_id=None if message_id in (None, "") else str(message_id).strip("<>"),
        reject_reason=mapped[1],
        description=str(description or "")[:500],
        raw_event=raw_event,
        tags=[t for t in tags if isinstance(t, str)] if isinstance(tags, list) else [],
        rfc_message_id=str(rfc_message_id).strip().strip("<>") if rfc_message_id else None,
    )
