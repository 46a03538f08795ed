"""mailrelay.events without serve: each ESP's request, signed as the ESP signs it, becomes
normalised events; a forged or stale one is refused; batches are split."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from mailrelay.events import WebhookError, WebhookRequest, read_events, webhook_settings
from mailrelay.providers.options import ProviderSpec
from tests import webhooksigning as sign
from tests.webhookpayloads import BATCHING, TIMESTAMPED, forge, payload

KINDS = (
    "mailgun",
    "sendgrid",
    "postmark",
    "brevo",
    "mailjet",
    "mailersend",
    "resend",
    "sparkpost",
    "mandrill",
)
URL = "https://relay.example.com/v1/webhooks/esp"
KEYS = {
    "mailgun": sign.MAILGUN_KEY,
    "sendgrid": sign.SENDGRID_PUBLIC,
    "mandrill": sign.MANDRILL_KEY,
    "mailersend": sign.MAILERSEND_KEY,
    "resend": sign.RESEND_KEY,
}


def settings_for(kind: str):  # type: ignore[no-untyped-def]
    table: dict[str, object] = {"name": "esp", "type": kind}
    if kind in KEYS:
        table["webhook_signing_key"] = KEYS[kind]
    else:
        table["webhook_basic_auth"] = ["old:rotated-out-pass", sign.BASIC]
    return webhook_settings(ProviderSpec("esp", kind, table, "test.toml"))


def read(kind: str, body: bytes, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    request = WebhookRequest(URL, headers, body)
    return read_events(request, settings_for(kind), datetime.now(timezone.utc))


@pytest.mark.parametrize("kind", KINDS)
def test_a_signed_hard_bounce_becomes_one_bounced_event(kind: str) -> None:
    body, headers = payload(kind, ["Gone@Example.ORG"], url=URL)
    [event] = read(kind, body, headers).events
    assert (event.event, event.reject_reason) in (("bounced", "bounced"), ("bounced", "invalid"))
    assert event.recipient == "gone@example.org"
    assert event.provider == "esp" and event.type == kind
    assert event.event_id and event.message_id
    assert abs(event.timestamp.timestamp() - time.time()) < 3600


@pytest.mark.parametrize("kind", KINDS)
def test_a_forged_request_is_refused(kind: str) -> None:
    body, headers = forge(kind, *payload(kind, ["gone@example.org"], url=URL))
    with pytest.raises(WebhookError) as caught:
        read(kind, body, headers)
    assert caught.value.kind == "forged" and caught.value.http_status == 401


@pytest.mark.parametrize("kind", KINDS)
def test_a_request_without_credentials_is_refused(kind: str) -> None:
    body, headers = payload(kind, ["gone@example.org"], url=URL)
    bare = {"Content-Type": headers.get("Content-Type", "application/json")}
    if kind == "mailgun":  # its signature is in the body: take it out
        import json

        doc = json.loads(body)
        doc.pop("signature")
        body = json.dumps(doc).encode()
    with pytest.raises(WebhookError) as caught:
        read(kind, body, bare)
    assert caught.value.kind in ("forged", "malformed")


@pytest.mark.parametrize("kind", TIMESTAMPED)
def test_a_stale_signature_is_refused(kind: str) -> None:
    body, headers = payload(kind, ["gone@example.org"], at=time.time() - 16 * 60, url=URL)
    with pytest.raises(WebhookError) as caught:
        read(kind, body, headers)
    assert caught.value.kind == "stale"


@pytest.mark.parametrize("kind", TIMESTAMPED)
def test_a_signature_fourteen_minutes_old_is_accepted(kind: str) -> None:
    body, headers = payload(kind, ["gone@example.org"], at=time.time() - 14 * 60, url=URL)
    assert len(read(kind, body, headers).events) == 1


@pytest.mark.parametrize("kind", BATCHING)
def test_a_batch_is_split_into_one_event_each(kind: str) -> None:
    rcpts = ["a@example.org", "b@example.org", "c@example.org"]
    events = read(kind, *payload(kind, rcpts, url=URL)).events
    assert [e.recipient for e in events] == rcpts
    assert events[0].event == "bounced"
    assert {e.event for e in events[1:]} <= {"delivered", "sent"}
    assert len({e.event_id for e in events}) == 3


def test_mandrill_signs_the_url_so_another_url_is_forged() -> None:
    body, headers = payload("mandrill", ["gone@example.org"], url="https://other.example/hook")
    with pytest.raises(WebhookError, match="Mandrill signature"):
        read("mandrill", body, headers)


def test_mandrill_webhook_url_setting_names_the_url_signed() -> None:
    body, headers = payload("mandrill", ["gone@example.org"], url="https://proxy.example/hook")
    table = {"name": "esp", "type": "mandrill", "webhook_signing_key": sign.MANDRILL_KEY}
    table["webhook_url"] = "https://proxy.example/hook"
    settings = webhook_settings(ProviderSpec("esp", "mandrill", table, "test.toml"))
    request = WebhookRequest(URL, headers, body)
    assert len(read_events(request, settings, datetime.now(timezone.utc)).events) == 1


def test_a_malformed_body_is_a_malformed_refusal_not_a_crash() -> None:
    body = b'{"signature": {"timestamp": "1", "token": "t", "signature": "s"}, "event-data": 5}'
    with pytest.raises(WebhookError):
        read("mailgun", body, {})
    headers = sign.mailersend_headers(b"[1, 2]")
    with pytest.raises(WebhookError) as caught:
        read("mailersend", b"[1, 2]", headers)
    assert caught.value.kind == "malformed"
