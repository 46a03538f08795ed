"""Webhook requests as each ESP sends them, shaped from its documentation: a hard bounce for
the first recipient and, where the ESP batches, a delivery for each other one. Signed (or
with Basic credentials) as the ESP would; `payload(...)` returns (body, headers)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tests import webhooksigning as sign

BATCHING = ("sendgrid", "sparkpost", "mandrill", "mailjet", "brevo")
TIMESTAMPED = ("mailgun", "sendgrid", "resend")  # signatures that carry a time


def _mailgun(rcpts: list[str], at: float) -> tuple[bytes, dict[str, str]]:
    data = {
        "id": "mg-" + uuid.uuid4().hex,
        "event": "failed",
        "severity": "permanent",
        "timestamp": at,
        "recipient": rcpts[0],
        "message": {"headers": {"message-id": "20261204.abc@mg.example.com"}},
        "delivery-status": {"code": 550, "description": "No such user"},
    }
    return sign.mailgun_body(data, at=at), {"Content-Type": "application/json"}


def _sendgrid(rcpts: list[str], at: float) -> tuple[bytes, dict[str, str]]:
    events: list[dict[str, Any]] = [
        {
            "email": rcpts[0],
            "timestamp": int(at),
            "event": "bounce",
            "type": "bounce",
            "reason": "550 5.1.1 unknown user",
            "sg_event_id": "sg-" + uuid.uuid4().hex,
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        }
    ]
    for r in rcpts[1:]:
        events.append(
            {**events[0], "email": r, "event": "delivered", "sg_event_id": uuid.uuid4().hex}
        )
    body = json.dumps(events).encode()
    return body, sign.sendgrid_headers(body, at=at)


def _postmark(rcpts: list[str], at: float) -> tuple[bytes, dict[str, str]]:
    item = {
        "RecordType": "Bounce",
        "ID": int(at * 1000) % 10**9,
        "Type": "HardBounce",
        "TypeCode": 1,
        "MessageID": str(uuid.uuid4()),
        "Description": "The server was unable to deliver your message",
        "Email": rcpts[0],
        "BouncedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
        "MessageStream": "outbound",
    }
    return json.dumps(item).encode(), {**sign.basic_header(), "Content-Type": "application/json"}


def _brevo(rcpts: list[str], at: float) -> tuple[bytes, dict[str, str]]:
    events = [
        {
            "event": "hard_bounce" if i == 0 else "delivered",
            "email": r,
            "id": 12345,
            "message-id": "<202612041200.123@smtp-relay.mailin.fr>",
            "ts_epoch": int(at * 1000) + i,
            "reason": "unknown user" if i == 0 else "",
        }
        for i, r in enumerate(rcpts)
    ]
    body = json.dumps(events if len(events) > 1 else events[0]).encode()
    return body, {**sign.basic_header(), "Content-Type": "application/json"}


def _mailjet(rcpts: list[str], at: float) -> tuple[bytes, dict[str, str]]:
    events = [
        {
            "event": "bounce" if i == 0 else "sent",
            "time": int(at),
            "MessageID": 19421777835146490 + i,
            "Message_GUID": str(uuid.uuid4()),
            "email": r,
            "hard_bounce": True,
            "error": "user unknown",
        }
        for i, r in enumerate(rcpts)
    ]
    body = json.dumps(events if len(events) > 1 else events[0]).encode()
    return body, {**sign.basic_header(), "Content-Type": "application/json"}


def _mailersend(rcpts: list[str], at: float) -> tuple[bytes, dict[str, str]]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(at))
    body = {
        "type": "activity.hard_bounced",
        "domain_id": "7z3m5jgrogdpyo6n",
        "created_at": stamp,
        "webhook_id": "7z3m5jgrogdpyo6n",
        "url": "https://relay.example.com/v1/webhooks/ms",
        "data": {
            "id": uuid.uuid4().hex[:24],
            "type": "hard_bounced",
            "created_at": stamp,
            "email": {
                "id": "62fb66bef54a112e920b5493",
                "message": {"id": "62fb66bef54a112e920b5492"},
                "recipient": {"email": rcpts[0]},
            },
            "morph": {"object": "recipient_bounce", "reason": "Host or domain name not found"},
        },
    }
    raw = json.dumps(body).encode()
    return raw, sign.mailersend_headers(raw)


def _resend(rcpts: list[str], at: float) -> tuple[bytes, dict[str, str]]:
    body = {
        "type": "email.bounced",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at)),
        "data": {
            "email_id": str(uuid.uuid4()),
            "from": "Acme <onboarding@resend.dev>",
            "to": [rcpts[0]],
            "subject": "Sending this example",
            "bounce": {"message": "The recipient's mailbox does not exist", "type": "Permanent"},
        },
    }
    raw = json.dumps(body).encode()
    return raw, sign.svix_headers(raw, msg_id="msg_" + uuid.uuid4().hex, at=at)


def _sparkpost(rcpts: list[str], at: float) -> tuple[bytes, dict[str, str]]:
    events = []
    for i, r in enumerate(rcpts):
        ev = {
            "type": "bounce" if i == 0 else "delivery",
            "event_id": str(uuid.uuid4().int)[:18],
            "message_id": "0e0d94b7-9085-4e3c-ab30-e3f2cd9c273e",
            "transmission_id": "65832150921904138",
            "rcpt_to": r,
            "timestamp": str(int(at)),
            "bounce_class": "10",
            "reason": "550 5.1.1 user unknown",
        }
        events.append({"msys": {"message_event": ev}})
    raw = json.dumps(events).encode()
    return raw, {**sign.basic_header(), "Content-Type": "application/json"}


def mandrill_events(rcpts: list[str], at: float) -> list[dict[str, Any]]:
    return [
        {
            "event": "hard_bounce" if i == 0 else "send",
            "_id": uuid.uuid4().hex,
            "ts": int(at),
            "msg": {"_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa", "email": r, "state": "bounced"},
        }
        for i, r in enumerate(rcpts)
    ]


def payload(
    kind: str, rcpts: list[str], *, at: float | None = None, url: str = ""
) -> tuple[bytes, dict[str, str]]:
    when = time.time() if at is None else at
    if kind == "mandrill":
        return sign.mandrill_form(url, mandrill_events(rcpts, when))
    return {
        "mailgun": _mailgun,
        "sendgrid": _sendgrid,
        "postmark": _postmark,
        "brevo": _brevo,
        "mailjet": _mailjet,
        "mailersend": _mailersend,
        "resend": _resend,
        "sparkpost": _sparkpost,
    }[kind](rcpts, when)


def forge(kind: str, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """The same request with its signature (or credentials) wrong."""
    headers = dict(headers)
    if kind == "mailgun":
        doc = json.loads(body)
        doc["signature"]["signature"] = "0" * 64
        return json.dumps(doc).encode(), headers
    if kind in ("postmark", "brevo", "mailjet", "sparkpost"):
        return body, {**headers, **sign.basic_header("hook:wrong-password")}
    # a body changed after signing: the header signature no longer matches
    return body.replace(b"example.org", b"exbmple.org", 1), headers
