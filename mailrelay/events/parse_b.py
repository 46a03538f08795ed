"""Event payloads of MailerSend, Resend, SparkPost, Mandrill and Amazon SES → `Event`s
(see parse_a for the conventions)."""

from __future__ import annotations

import json
from typing import Any

from mailrelay.events.common import derived_id, make
from mailrelay.events.model import (
    Event,
    WebhookRequest,
    as_dict,
    as_list,
    malformed,
    sub,
    utc_from_epoch,
    utc_from_iso,
)

Source = tuple[str, str]
Mapped = tuple[str, str | None]

_MAILERSEND = {
    "sent": ("sent", None),
    "delivered": ("delivered", None),
    "soft_bounced": ("deferred", None),
    "hard_bounced": ("bounced", "bounced"),
    "opened": ("opened", None),
    "opened_unique": ("opened", None),
    "clicked": ("clicked", None),
    "clicked_unique": ("clicked", None),
    "unsubscribed": ("unsubscribed", "unsubscribed"),
    "spam_complaint": ("complained", "spam"),
}


def parse_mailersend(request: WebhookRequest, source: Source) -> list[Event]:
    """{type: "activity.<kind>", created_at, data: {id, type, created_at, email: {message:
    {id}, recipient: {email}}}} (developers.mailersend.com/api/v1/webhooks.html)."""
    body = as_dict(request.json(), "the body")
    data = as_dict(body.get("data"), "data")
    kind = str(data.get("type") or str(body.get("type", "")).removeprefix("activity."))
    email = as_dict(data.get("email", {}), "data.email")
    message = as_dict(email.get("message", {}), "data.email.message")
    recipient = as_dict(email.get("recipient", {}), "data.email.recipient")
    return [
        make(
            source,
            _MAILERSEND.get(kind, ("unknown", None)),
            event_id=data.get("id") or derived_id(body.get("webhook_id"), kind, email.get("id")),
            timestamp=utc_from_iso(data.get("created_at") or body.get("created_at")),
            recipient=recipient.get("email"),
            message_id=message.get("id"),
            raw_event=kind,
            description=sub(data, "morph").get("reason", ""),
            tags=email.get("tags"),
        )
    ]


_RESEND = {
    "email.sent": ("sent", None),
    "email.delivered": ("delivered", None),
    "email.delivery_delayed": ("deferred", None),
    "email.complained": ("complained", "spam"),
    "email.opened": ("opened", None),
    "email.clicked": ("clicked", None),
    "email.failed": ("failed", "other"),
}


def parse_resend(request: WebhookRequest, source: Source) -> list[Event]:
    """{type: "email.<kind>", created_at, data: {email_id, to: [...], bounce: {type}}}
    (resend.com/docs/dashboard/webhooks/event-types); one event per recipient in `to`."""
    body = as_dict(request.json(), "the body")
    data = as_dict(body.get("data"), "data")
    name = str(body.get("type", ""))
    mapped: Mapped = _RESEND.get(name, ("unknown", None))
    if name == "email.bounced":
        transient = str(sub(data, "bounce").get("type", "")).lower() == "transient"
        mapped = ("deferred", None) if transient else ("bounced", "bounced")
    to_field = data.get("to")
    recipients: list[Any] = to_field if isinstance(to_field, list) else [to_field]
    event_id = request.header("svix-id") or derived_id(name, data.get("email_id"))
    return [
        make(
            source,
            mapped,
            event_id=event_id if len(recipients) == 1 else f"{event_id}#{i}",
            timestamp=utc_from_iso(body.get("created_at") or data.get("created_at")),
            recipient=to,
            message_id=data.get("email_id"),
            raw_event=name,
            description=sub(data, "bounce").get("message", ""),
        )
        for i, to in enumerate(recipients)
    ]


_SPARKPOST = {
    "injection": ("queued", None),
    "delivery": ("delivered", None),
    "delay": ("deferred", None),
    "policy_rejection": ("rejected", "blocked"),
    "generation_failure": ("failed", "other"),
    "generation_rejection": ("failed", "other"),
    "spam_complaint": ("complained", "spam"),
    "open": ("opened", None),
    "initial_open": ("opened", None),
    "amp_open": ("opened", None),
    "click": ("clicked", None),
    "amp_click": ("clicked", None),
    "list_unsubscribe": ("unsubscribed", "unsubscribed"),
    "link_unsubscribe": ("unsubscribed", "unsubscribed"),
}


def _sparkpost_bounce(bounce_class: object) -> Mapped:
    """SparkPost's bounce classes (support.sparkpost.com, "Bounce classification codes"):
    10 invalid recipient, 25 admin failure, 30 no RCPT: hard; 50-54 blocks; 90 unsubscribe;
    the rest are soft."""
    code = str(bounce_class)
    if code == "10":
        return ("bounced", "invalid")
    if code in ("25", "30"):
        return ("bounced", "bounced")
    if code in ("50", "51", "52", "53", "54"):
        return ("rejected", "blocked")
    if code == "90":
        return ("unsubscribed", "unsubscribed")
    return ("deferred", None)


def parse_sparkpost(request: WebhookRequest, source: Source) -> list[Event]:
    """A JSON array of {"msys": {"<class>_event": {type, event_id, message_id, rcpt_to,
    timestamp, bounce_class, reason}}}; an empty msys is SparkPost's test ping."""
    events = []
    for item in as_list(request.json(), "the body"):
        msys = as_dict(as_dict(item, "an event").get("msys", {}), "msys")
        for inner in msys.values():
            ev = as_dict(inner, "a msys event")
            name = str(ev.get("type", ""))
            mapped = _SPARKPOST.get(name, ("unknown", None))
            if name in ("bounce", "out_of_band"):
                mapped = _sparkpost_bounce(ev.get("bounce_class"))
            events.append(
                make(
                    source,
                    mapped,
                    event_id=ev.get("event_id") or derived_id(*sorted(ev.items())),
                    timestamp=utc_from_epoch(ev.get("timestamp")),
                    recipient=ev.get("rcpt_to"),
                    message_id=ev.get("transmission_id") or ev.get("message_id"),
                    raw_event=name,
                    description=ev.get("reason") or ev.get("raw_reason") or "",
                    tags=ev.get("rcpt_tags"),
                )
            )
    return events


_MANDRILL = {
    "send": ("sent", None),
    "deferral": ("deferred", None),
    "hard_bounce": ("bounced", "bounced"),
    "soft_bounce": ("deferred", None),
    "open": ("opened", None),
    "click": ("clicked", None),
    "spam": ("complained", "spam"),
    "unsub": ("unsubscribed", "unsubscribed"),
    "reject": ("rejected", "blocked"),
}


def parse_mandrill(request: WebhookRequest, source: Source) -> list[Event]:
    """The form field mandrill_events: a JSON array of {event, _id, ts, msg: {_id, email,
    tags, bounce_description}}; sync events (with `type`, no `event`) are skipped."""
    raw = dict(request.form).get("mandrill_events")
    if raw is None:
        raise malformed("no mandrill_events field in the form")
    try:
        batch = json.loads(raw)
    except ValueError as exc:
        raise malformed(f"mandrill_events is not JSON: {exc}") from None
    events = []
    for item in as_list(batch, "mandrill_events"):
        item = as_dict(item, "an event")
        if "event" not in item:
            continue  # a sync event (allowlist/denylist change): nothing about a message
        name = str(item["event"])
        msg: dict[str, Any] = dict(as_dict(item.get("msg", {}), "msg"))
        events.append(
            make(
                source,
                _MANDRILL.get(name, ("unknown", None)),
                event_id=item.get("_id") or derived_id(msg.get("_id"), name, item.get("ts")),
                timestamp=utc_from_epoch(item.get("ts")),
                recipient=msg.get("email"),
                message_id=msg.get("_id"),
                raw_event=name,
                description=msg.get("bounce_description") or msg.get("diag") or "",
                tags=msg.get("tags"),
            )
        )
    return events
