"""Signing webhook requests the way each ESP does (from their documentation), for tests:
the other half of mailrelay/events/signed.py, written independently of it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

MAILGUN_KEY = "key-mailgun-signing-0123456789"
MANDRILL_KEY = "mandrill-webhook-key-abcdef"
MAILERSEND_KEY = "mailersend-signing-secret-xyz"
RESEND_KEY = "whsec_" + base64.b64encode(b"resend-svix-secret-bytes-32-long").decode()
BASIC = "hook:s3cret-basic-pass"

_EC = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    _EC.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def basic_header(credentials: str = BASIC) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def mailgun_body(
    event_data: dict[str, Any], *, at: float | None = None, key: str = MAILGUN_KEY
) -> bytes:
    timestamp = str(int(at if at is not None else time.time()))
    token = hashlib.sha256(json.dumps(event_data).encode() + timestamp.encode()).hexdigest()[:50]
    sig = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    body = {"signature": {"timestamp": timestamp, "token": token, "signature": sig}}
    body["event-data"] = event_data
    return json.dumps(body).encode()


def sendgrid_headers(body: bytes, *, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    der = _EC.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(der).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def mandrill_form(
    url: str, events: list[dict[str, Any]], key: str = MANDRILL_KEY
) -> tuple[bytes, dict[str, str]]:
    fields = {"mandrill_events": json.dumps(events)}
    signed = url + "".join(k + v for k, v in sorted(fields.items()))
    sig = base64.b64encode(hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()).decode()
    headers = {"X-Mandrill-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"}
    return urlencode(fields).encode(), headers


def mailersend_headers(body: bytes, key: str = MAILERSEND_KEY) -> dict[str, str]:
    sig = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return {"Signature": sig, "Content-Type": "application/json"}


def svix_headers(
    body: bytes, *, msg_id: str, at: float | None = None, key: str = RESEND_KEY
) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    secret = base64.b64decode(key.removeprefix("whsec_"))
    mac = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "svix-id": msg_id,
        "svix-timestamp": timestamp,
        "svix-signature": "v1,bm90LXRoaXMtb25l v1," + base64.b64encode(mac).decode(),
        "Content-Type": "application/json",
    }
