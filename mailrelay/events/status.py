"""What became of a message, per recipient: the send's own result (the provider that took
it and its id) and the provider's later events (delivered, deferred, bounced…), kept as
records of kind "message" for `message_status_for` seconds ([defaults], 7 days). An
`ambiguous` send that a later event shows delivered reads as delivered: the event's status
replaces the send's.

`StatusLog` is an engine Listener (serve adds it), and `apply` takes each new event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailrelay.clock import iso_text, utcnow

if TYPE_CHECKING:
    from mailrelay.events.model import Event
    from mailrelay.message import Message
    from mailrelay.result import Attempt, SendResult
    from mailrelay.state.records import Record, RecordStore

KIND = "message"
INDEX = "message-index"  # "<provider>:<its message id>" → our message id
# events that say where a message is for its recipient (opens and clicks do not)
STATUS_EVENTS = ("delivered", "deferred", "bounced", "rejected", "failed", "complained")


def message_key(message_id: str) -> str:
    return message_id.strip().strip("<>")


def _now() -> str:
    return iso_text(utcnow(), timespec="seconds")


class StatusLog:
    def __init__(self, records: RecordStore, *, keep: float) -> None:
        self.records = records
        self.keep = keep

    # --- engine Listener ---------------------------------------------------------------

    def attempt(self, message: Message, attempt: Attempt) -> None:
        pass

    def result(self, message: Message, result: SendResult) -> None:
        if self.keep <= 0:
            return
        winner = result.winner
        last = result.attempts[-1] if result.attempts else None
        if winner is not None:
            status = "accepted"
        elif last is not None and last.outcome.value == "ambiguous":
            status = "ambiguous"
        else:
            status = "not_sent"
        chosen = winner or last
        key = message_key(message.message_id)
        doc: Record = {
            "message_id": key,
            "provider": chosen.provider if chosen else None,
            "provider_message_id": _provider_id(chosen),
            "status": status,
            "updated": _now(),
            "recipients": {
                a.email.lower(): {"status": status, "at": _now()} for a in message.recipients()
            },
        }
        for address, words in chosen.refused if chosen is not None else ():
            doc["recipients"][address] = {"status": "rejected", "at": _now(), "detail": words}
        self.records.put(KIND, key, doc, self.keep)
        if chosen is not None and doc["provider_message_id"]:
            index = f"{chosen.provider}:{doc['provider_message_id']}"
            self.records.put(INDEX, index, {"message_id": key}, self.keep)

    # --- provider events ---------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold a new event into its message's record (when the message is known)."""
        if self.keep <= 0 or event.event not in STATUS_EVENTS or not event.message_id:
            return
        key = self._message_for(event)
        doc = self.records.get(KIND, key) if key else None
        if key is None or doc is None or not event.recipient:
            return
        recipients: dict[str, Any] = dict(doc.get("recipients") or {})
        recipients[event.recipient] = {
            "status": event.event,
            "at": iso_text(event.timestamp, timespec="seconds"),
            "detail": event.description[:200] or event.raw_event,
            "event_provider": event.provider,
        }
        doc["recipients"] = recipients
        doc["updated"] = _now()
        self.records.put(KIND, key, doc, self.keep)

    def _message_for(self, event: Event) -> str | None:
        assert event.message_id is not None
        found = self.records.get(INDEX, f"{event.provider}:{event.message_id}")
        if found is not None:
            return str(found.get("message_id"))
        for own in (event.rfc_message_id, event.message_id):  # our own Message-ID, reported
            if own and self.records.get(KIND, message_key(own)) is not None:
                return message_key(own)
        return None

    def lookup(self, message_id: str) -> Record | None:
        return self.records.get(KIND, message_key(message_id))


def _provider_id(attempt: Attempt | None) -> str | None:
    if attempt is None or not attempt.message_id:
        return None
    return message_key(attempt.message_id)
