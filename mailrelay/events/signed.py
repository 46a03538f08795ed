"""The signature schemes of the ESPs that sign their webhooks, each a pure function of the
request and the key: Mailgun, SendGrid (ECDSA), Mandrill, MailerSend and Resend (Svix).
A mismatch raises `forged`, a signature too old `stale`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime

from mailrelay.events.model import (
    WebhookRequest,
    as_dict,
    check_age,
    forged,
    malformed,
    utc_from_epoch,
)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def mailgun(request: WebhookRequest, key: str, now: datetime) -> None:
    """hex(HMAC-SHA256(webhook signing key, timestamp + token)), inside the JSON body
    (documentation.mailgun.com, "Securing webhooks")."""
    signature = as_dict(as_dict(request.json(), "the body").get("signature"), "signature")
    timestamp, token, given = (
        str(signature.get(k, "")) for k in ("timestamp", "token", "signature")
    )
    if not (timestamp and token and given):
        raise forged("the signature object lacks timestamp, token or signature")
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not _same(expected, given.lower()):
        raise forged("the Mailgun signature does not match webhook_signing_key")
    check_age(utc_from_epoch(timestamp), now)


def sendgrid(request: WebhookRequest, key: str, now: datetime) -> None:
    """ECDSA P-256 with SHA-256 over timestamp + raw body; the signature (base64 DER) and the
    timestamp in X-Twilio-Email-Event-Webhook-Signature/-Timestamp; the key is the base64
    public key SendGrid shows for the signed event webhook (twilio.com SendGrid docs,
    "Getting started with the Event Webhook security features")."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    signature = request.header("X-Twilio-Email-Event-Webhook-Signature")
    timestamp = request.header("X-Twilio-Email-Event-Webhook-Timestamp")
    if not signature or not timestamp:
        raise forged("no X-Twilio-Email-Event-Webhook-Signature/-Timestamp headers")
    try:
        public = load_der_public_key(base64.b64decode(key))
    except (ValueError, binascii.Error):
        raise forged("webhook_signing_key is not SendGrid's base64 public key") from None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise forged("webhook_signing_key is not an elliptic-curve public key")
    try:
        der = base64.b64decode(signature, validate=True)
        public.verify(der, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
    except (ValueError, binascii.Error, InvalidSignature):
        raise forged("the SendGrid signature does not match webhook_signing_key") from None
    check_age(utc_from_epoch(timestamp), now)


def mandrill(request: WebhookRequest, key: str, url: str) -> None:
    """base64(HMAC-SHA1(webhook key, URL + each POST field's name and value, sorted by
    name)) in X-Mandrill-Signature (mailchimp.com/developer/transactional/guides/
    track-respond-activity-webhooks, "Authenticating webhook requests")."""
    given = request.header("X-Mandrill-Signature")
    if not given:
        raise forged("no X-Mandrill-Signature header")
    signed = url + "".join(name + value for name, value in sorted(request.form))
    digest = hmac.new(key.encode(), signed.encode("utf-8"), hashlib.sha1).digest()
    if not _same(base64.b64encode(digest).decode(), given.strip()):
        raise forged("the Mandrill signature does not match webhook_signing_key and this URL")


def mailersend(request: WebhookRequest, key: str) -> None:
    """hex(HMAC-SHA256(signing secret, raw body)) in the Signature header
    (developers.mailersend.com/api/v1/webhooks.html#security)."""
    given = request.header("Signature")
    if not given:
        raise forged("no Signature header")
    expected = hmac.new(key.encode(), request.body, hashlib.sha256).hexdigest()
    if not _same(expected, given.strip().lower()):
        raise forged("the MailerSend signature does not match webhook_signing_key")


def svix(request: WebhookRequest, key: str, now: datetime) -> None:
    """Resend signs through Svix: svix-signature holds space-separated "v1,<base64
    HMAC-SHA256(secret, id.timestamp.body)>" entries; the secret is "whsec_" + base64
    (resend.com/docs/dashboard/webhooks/verify-webhooks-requests, docs.svix.com)."""
    msg_id = request.header("svix-id")
    timestamp = request.header("svix-timestamp")
    signatures = request.header("svix-signature")
    if not (msg_id and timestamp and signatures):
        raise forged("no svix-id, svix-timestamp and svix-signature headers")
    try:
        secret = base64.b64decode(key.removeprefix("whsec_"), validate=True)
    except (ValueError, binascii.Error):
        raise forged("webhook_signing_key is not a whsec_ base64 secret") from None
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + request.body
    expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    offered = [s.partition(",")[2] for s in signatures.split() if s.startswith("v1,")]
    if not any(_same(expected, s) for s in offered):
        raise forged("no svix-signature matches webhook_signing_key")
    check_age(utc_from_epoch(timestamp), now)


def form_fields(body: bytes) -> list[tuple[str, str]]:
    """The fields of an application/x-www-form-urlencoded body, in order."""
    from urllib.parse import parse_qsl

    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise malformed("the form body is not UTF-8") from None
