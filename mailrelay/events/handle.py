"""What mailrelay does with the events of an authenticated webhook request: each event is
handled once (its provider's event id is claimed in the state's records for `SEEN_FOR`;
a replay finds it taken), an event that calls for it suppresses its recipient, and every
event new is written to the audit log, counted, and (when it suppressed an address)
offered to the alert command. Framework-free: serve's webhooks blueprint calls `handle`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from mailrelay.datarecord import field, record

if TYPE_CHECKING:
    from mailrelay.audit import AuditLog
    from mailrelay.events.model import Event
    from mailrelay.state.records import RecordStore
    from mailrelay.state.transitions import Event as AlertEvent
    from mailrelay.suppression import Suppression, SuppressionList

SEEN_FOR = 7 * 86400.0  # seconds an event id is remembered (ESPs retry for a day at most)
SEEN = "event"


@record
class Handled:
    events: int = 0
    duplicates: int = 0
    suppressed: list[Suppression] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "duplicates": self.duplicates,
            "suppressed": [s.address for s in self.suppressed],
        }


@record
class EventSinks:
    records: RecordStore
    suppressions: SuppressionList
    audit: list[AuditLog] = field(default_factory=list)
    count: Callable[[Event], None] | None = None
    alert: Callable[[Sequence[AlertEvent]], None] | None = None
    also: list[Callable[[Event], None]] = field(default_factory=list)  # e.g. message status
    forward: Callable[[Sequence[Event]], None] | None = None  # the new events, to events_url


def handle(events: Sequence[Event], sinks: EventSinks) -> Handled:
    done = Handled()
    alerts = []
    new: list[Event] = []
    for event in events:
        if not sinks.records.claim(SEEN, f"{event.provider}:{event.event_id}", SEEN_FOR):
            done.duplicates += 1
            continue
        done.events += 1
        new.append(event)
        suppression = sinks.suppressions.add_event(event)
        if suppression is not None:
            done.suppressed.append(suppression)
            alerts.append(_alert(event, suppression))
        for log in sinks.audit:
            log.write(event_record(event, suppression))
        if sinks.count is not None:
            sinks.count(event)
        for call in sinks.also:
            call(event)
    if alerts and sinks.alert is not None:
        sinks.alert(alerts)
    if new and sinks.forward is not None:
        sinks.forward(new)
    return done


def event_record(event: Event, suppression: Suppression | None) -> dict[str, Any]:
    from mailrelay.audit import rfc3339_now

    doc = {"time": rfc3339_now(), "event": "provider_event", **event.to_dict()}
    doc["provider_event"] = doc.pop("event")  # "event" names the record's kind in the log
    doc["event"] = "provider_event"
    doc["suppressed"] = suppression.reason if suppression is not None else None
    return doc


def _alert(event: Event, suppression: Suppression) -> AlertEvent:
    from mailrelay.state.transitions import Event as AlertEvent
    from mailrelay.state.transitions import hostname

    detail = f"{suppression.address} suppressed: {event.event} ({event.raw_event})"
    if event.description:
        detail += f": {event.description}"
    return AlertEvent(
        "suppressed",
        datetime.now(timezone.utc),
        provider=event.provider,
        outcome=event.event,
        detail=detail,
        host=hostname(),
    )
