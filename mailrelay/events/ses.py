"""Amazon SES events, as SNS delivers them: the SNS envelope's `Message` is a JSON string
with `eventType` (configuration-set event publishing) or `notificationType` (identity
notifications) (docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html).
One Event per recipient the SES event names."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mailrelay.events.common import make
from mailrelay.events.model import Event, as_dict, malformed, sub, utc_from_iso

Source = tuple[str, str]
Mapped = tuple[str, str | None]

# eventType -> (normalised, reject reason, the object holding details, its recipient list)
_SES: dict[str, tuple[Mapped, str, str | None]] = {
    "Send": (("sent", None), "mail", None),
    "Reject": (("rejected", "blocked"), "reject", None),
    "Delivery": (("delivered", None), "delivery", "recipients"),
    "Complaint": (("complained", "spam"), "complaint", "complainedRecipients"),
    "DeliveryDelay": (("deferred", None), "deliveryDelay", "delayedRecipients"),
    "Open": (("opened", None), "open", None),
    "Click": (("clicked", None), "click", None),
    "Rendering Failure": (("failed", "other"), "failure", None),
    "RenderingFailure": (("failed", "other"), "failure", None),
}


def _bounce_mapped(bounce: Mapping[str, Any]) -> Mapped:
    kind = bounce.get("bounceType")
    if kind == "Permanent":
        return ("bounced", "bounced")
    if kind == "Transient":
        return ("deferred", None)
    return ("bounced", "other")


def _recipients(found: object) -> list[str]:
    if not isinstance(found, list):
        return []
    out = []
    for item in found:
        if isinstance(item, dict):
            item = item.get("emailAddress")
        if isinstance(item, str):
            out.append(item)
    return out


def parse_ses(envelope: Mapping[str, object], source: Source) -> list[Event]:
    try:
        data = as_dict(json.loads(str(envelope.get("Message", ""))), "the SES event")
    except ValueError:
        raise malformed("the SNS Message is not an SES event (JSON)") from None
    name = str(data.get("eventType") or data.get("notificationType") or "")
    mail = as_dict(data.get("mail", {}), "mail")
    if name == "Bounce":
        detail = as_dict(data.get("bounce", {}), "bounce")
        mapped, recipients = _bounce_mapped(detail), _recipients(detail.get("bouncedRecipients"))
    else:
        mapped, key, listed = _SES.get(name, (("unknown", None), "", None))
        detail = as_dict(data.get(key, {}), key) if key else {}
        recipients = _recipients(detail.get(listed)) if listed else []
    recipients = recipients or _recipients(mail.get("destination"))
    when = detail.get("timestamp") or mail.get("timestamp") or envelope.get("Timestamp")
    base = str(envelope.get("MessageId", ""))
    description = detail.get("smtpResponse") or detail.get("bounceSubType") or ""
    return [
        make(
            source,
            mapped,
            event_id=base if len(recipients) == 1 else f"{base}#{i}",
            timestamp=utc_from_iso(when),
            recipient=to,
            message_id=mail.get("messageId"),
            raw_event=name,
            description=description,
            rfc_message_id=sub(mail, "commonHeaders").get("messageId"),
        )
        for i, to in enumerate(recipients or [None])
    ]
