"""Event payloads of Mailgun, SendGrid, Postmark, Brevo and Mailjet → `Event`s.

Each `parse_*` takes the request (already authenticated) and (provider name, type), and
returns every event of the payload (a batch is split). Names follow each ESP's webhook
documentation; mappings onto the taxonomy follow django-anymail's choices where they exist.
"""

from __future__ import annotations

from typing import Any

from mailrelay.events.common import derived_id, make
from mailrelay.events.model import (
    Event,
    WebhookRequest,
    as_dict,
    as_list,
    sub,
    utc_from_epoch,
    utc_from_iso,
)

Source = tuple[str, str]
Mapped = tuple[str, str | None]

_MAILGUN = {
    "accepted": ("queued", None),
    "rejected": ("rejected", "other"),
    "delivered": ("delivered", None),
    "opened": ("opened", None),
    "clicked": ("clicked", None),
    "unsubscribed": ("unsubscribed", "unsubscribed"),
    "complained": ("complained", "spam"),
}


def parse_mailgun(request: WebhookRequest, source: Source) -> list[Event]:
    """{"signature": {...}, "event-data": {event, severity, recipient, timestamp, id,
    message: {headers: {message-id}}}} (documentation.mailgun.com, webhooks)."""
    data = as_dict(as_dict(request.json(), "the body").get("event-data"), "event-data")
    name = str(data.get("event", ""))
    mapped: Mapped = _MAILGUN.get(name, ("unknown", None))
    if name == "failed":
        permanent = data.get("severity") == "permanent"
        mapped = ("bounced", "bounced") if permanent else ("deferred", None)
    headers = as_dict(as_dict(data.get("message", {}), "message").get("headers", {}), "headers")
    status = sub(data, "delivery-status")
    description = status.get("description") or status.get("message") or ""
    signature = as_dict(as_dict(request.json(), "the body").get("signature"), "signature")
    return [
        make(
            source,
            mapped,
            event_id=data.get("id") or signature.get("token"),
            timestamp=utc_from_epoch(data.get("timestamp")),
            recipient=data.get("recipient"),
            message_id=headers.get("message-id"),
            raw_event=name,
            description=description,
            tags=data.get("tags"),
        )
    ]


_SENDGRID = {
    "processed": ("queued", None),
    "delivered": ("delivered", None),
    "deferred": ("deferred", None),
    "open": ("opened", None),
    "click": ("clicked", None),
    "spamreport": ("complained", "spam"),
    "unsubscribe": ("unsubscribed", "unsubscribed"),
    "group_unsubscribe": ("unsubscribed", "unsubscribed"),
}
_SENDGRID_DROPPED = {
    "Bounced Address": "bounced",
    "Unsubscribed Address": "unsubscribed",
    "Spam Reporting Address": "spam",
    "Invalid": "invalid",
}


def _sendgrid_mapped(item: dict[str, Any]) -> Mapped:
    name = str(item.get("event", ""))
    if name == "bounce":
        blocked = item.get("type") == "blocked"
        return ("bounced", "blocked") if blocked else ("bounced", "bounced")
    if name == "dropped":
        return ("rejected", _SENDGRID_DROPPED.get(str(item.get("reason")), "other"))
    return _SENDGRID.get(name, ("unknown", None))


def parse_sendgrid(request: WebhookRequest, source: Source) -> list[Event]:
    """A JSON array of events, each {email, timestamp, event, sg_event_id, sg_message_id}
    (twilio.com/docs/sendgrid/for-developers/tracking-events/event)."""
    events = []
    for item in as_list(request.json(), "the body"):
        item = as_dict(item, "an event")
        name = str(item.get("event", ""))
        events.append(
            make(
                source,
                _sendgrid_mapped(dict(item)),
                event_id=item.get("sg_event_id") or derived_id(*sorted(item.items())),
                timestamp=utc_from_epoch(item.get("timestamp")),
                recipient=item.get("email"),
                message_id=str(item.get("sg_message_id") or "").partition(".")[0],
                raw_event=name,
                description=item.get("reason") or item.get("response") or "",
            )
        )
    return events


_POSTMARK_BOUNCES: dict[str, Mapped] = {
    "HardBounce": ("bounced", "bounced"),
    "BadEmailAddress": ("bounced", "invalid"),
    "ManuallyDeactivated": ("bounced", "bounced"),
    "SpamComplaint": ("complained", "spam"),
    "Unsubscribe": ("unsubscribed", "unsubscribed"),
    "Blocked": ("rejected", "blocked"),
    "SpamNotification": ("rejected", "spam"),
}
_POSTMARK = {
    "Delivery": ("delivered", None),
    "SpamComplaint": ("complained", "spam"),
    "Open": ("opened", None),
    "Click": ("clicked", None),
}


def parse_postmark(request: WebhookRequest, source: Source) -> list[Event]:
    """One JSON object per POST with RecordType Bounce, Delivery, SpamComplaint, Open,
    Click or SubscriptionChange (postmarkapp.com/developer/webhooks/*-webhook)."""
    item = as_dict(request.json(), "the body")
    kind = str(item.get("RecordType", ""))
    mapped: Mapped = _POSTMARK.get(kind, ("unknown", None))
    if kind == "Bounce":  # soft kinds (SoftBounce, Transient, DnsError, ...) are deferrals
        mapped = _POSTMARK_BOUNCES.get(str(item.get("Type")), ("deferred", None))
    elif kind == "SubscriptionChange":
        mapped = ("unsubscribed", "unsubscribed") if item.get("SuppressSending") else mapped
    when = next(
        (item[k] for k in ("BouncedAt", "DeliveredAt", "ReceivedAt", "ChangedAt") if item.get(k)),
        None,
    )
    recipient = item.get("Email") or item.get("Recipient")
    return [
        make(
            source,
            mapped,
            event_id=item.get("ID") or derived_id(item.get("MessageID"), kind, recipient, when),
            timestamp=utc_from_iso(when),
            recipient=recipient,
            message_id=item.get("MessageID"),
            raw_event=f"{kind}:{item['Type']}" if kind == "Bounce" else kind,
            description=item.get("Description") or item.get("Details") or "",
            tags=[item["Tag"]] if item.get("Tag") else None,
        )
    ]


_BREVO = {
    "request": ("queued", None),
    "delivered": ("delivered", None),
    "hard_bounce": ("bounced", "bounced"),
    "soft_bounce": ("deferred", None),
    "blocked": ("rejected", "blocked"),
    "spam": ("complained", "spam"),
    "complaint": ("complained", "spam"),
    "invalid_email": ("bounced", "invalid"),
    "deferred": ("deferred", None),
    "error": ("failed", "other"),
    "opened": ("opened", None),
    "unique_opened": ("opened", None),
    "proxy_open": ("opened", None),
    "click": ("clicked", None),
    "unsubscribed": ("unsubscribed", "unsubscribed"),
}


def parse_brevo(request: WebhookRequest, source: Source) -> list[Event]:
    """One JSON event, or an array with "batched webhooks": {event, email, message-id,
    ts_epoch (ms), reason, tags} (developers.brevo.com/docs/transactional-webhooks)."""
    events = []
    for item in as_list(request.json(), "the body"):
        item = as_dict(item, "an event")
        name = str(item.get("event", ""))
        stamp = item.get("ts_epoch")
        when = utc_from_epoch(stamp, millis=True) if stamp else utc_from_epoch(item.get("ts"))
        events.append(
            make(
                source,
                _BREVO.get(name, ("unknown", None)),
                event_id=derived_id(item.get("message-id"), name, item.get("email"), stamp),
                timestamp=when,
                recipient=item.get("email"),
                message_id=item.get("message-id"),
                raw_event=name,
                description=item.get("reason") or "",
                tags=item.get("tags"),
            )
        )
    return events


_MAILJET = {
    "sent": ("delivered", None),
    "open": ("opened", None),
    "click": ("clicked", None),
    "blocked": ("rejected", "blocked"),
    "spam": ("complained", "spam"),
    "unsub": ("unsubscribed", "unsubscribed"),
}


def parse_mailjet(request: WebhookRequest, source: Source) -> list[Event]:
    """One event or an array of "grouped" events: {event, time, email, MessageID,
    Message_GUID, hard_bounce, error} (dev.mailjet.com/email/guides/webhooks)."""
    events = []
    for item in as_list(request.json(), "the body"):
        item = as_dict(item, "an event")
        name = str(item.get("event", ""))
        mapped: Mapped = _MAILJET.get(name, ("unknown", None))
        if name == "bounce":
            mapped = ("bounced", "bounced") if item.get("hard_bounce") else ("deferred", None)
        ids = (item.get("MessageID"), name, item.get("email"), item.get("time"))
        events.append(
            make(
                source,
                mapped,
                event_id=derived_id(*ids),
                timestamp=utc_from_epoch(item.get("time")),
                recipient=item.get("email"),
                message_id=item.get("MessageID"),
                raw_event=name,
                description=item.get("error") or item.get("comment") or "",
            )
        )
    return events
