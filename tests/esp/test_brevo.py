"""Brevo specifics the shared contract does not cover: the api-key header, the JSON
`headers` entries (sandbox, idempotencyKey, metadata in X-Mailin-custom), what Brevo cannot
carry (inline images, several reply-to, some extensions, 8-bit headers), 201 messageId,
classification by error code, x-sib-ratelimit-reset and the GET /v3/account health check."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.message import Address, Attachment
from mailrelay.providers import registry
from mailrelay.providers.base import Outcome
from mailrelay.providers.brevo import BrevoProvider, idempotency_uuid
from mailrelay.providers.options import ProviderSpec
from tests.esp.conftest import build_provider, message_factory, send_error_factory
from tests.esp.conftest import last_json as last_body
from tests.esp.fake_brevo import API_KEY, FakeBrevo, error
from tests.esp.fakebase import json_response, server_base_url


def build(server: HTTPServer, **values: Any) -> BrevoProvider:
    values = {"api_key": API_KEY, "base_url": server_base_url(server), **values}
    return build_provider(BrevoProvider, values, name="bv")


message = message_factory()
send_error = send_error_factory(message)


def test_endpoints() -> None:
    provider = registry.build(
        ProviderSpec("bv", "brevo", {"type": "brevo", "api_key": API_KEY}, "t")
    )
    assert isinstance(provider, BrevoProvider)
    assert provider.base_url == "https://api.brevo.com/v3"


def test_base_url_keeps_the_v3_root(httpserver: HTTPServer) -> None:
    assert build(httpserver).base_url == server_base_url(httpserver) + "/v3"


def test_payload_and_headers(fake: FakeBrevo, httpserver: HTTPServer) -> None:
    msg = message(
        to=[Address("a@example.com", "Ann"), Address("b@example.com")],
        cc=[Address("c@example.com", "Cee")],
        bcc=[Address("d@example.com")],
        reply_to=[Address("r@example.com", "Desk")],
        html="<p>hi</p>",
        headers=[("X-Ticket", "42")],
        attachments=[Attachment("report.pdf", "application/pdf", b"%PDF-1.4")],
        tags=["deploy", "web1"],
        metadata={"run": "7"},
    )
    receipt = build(httpserver).send(msg, timeout=5)
    request = fake.requests[-1]
    assert request.method == "POST" and request.path == "/v3/smtp/email"
    assert request.headers["api-key"] == API_KEY
    body = last_body(fake)
    assert body["sender"] == {"email": "ops@example.com", "name": "Ops"}
    assert body["to"] == [{"email": "a@example.com", "name": "Ann"}, {"email": "b@example.com"}]
    assert body["cc"] == [{"email": "c@example.com", "name": "Cee"}]
    assert body["bcc"] == [{"email": "d@example.com"}]
    assert body["replyTo"] == {"email": "r@example.com", "name": "Desk"}
    assert body["subject"] == "Disk full"
    assert body["textContent"] == "disk 91% full\n" and body["htmlContent"] == "<p>hi</p>"
    assert body["attachment"] == [
        {"name": "report.pdf", "content": base64.b64encode(b"%PDF-1.4").decode()}
    ]
    assert body["tags"] == ["deploy", "web1"]
    assert body["headers"] == {
        "X-Ticket": "42",
        "X-Mailin-custom": '{"run":"7"}',
        "idempotencyKey": idempotency_uuid(msg),
    }
    assert receipt.message_id == fake.last_message_id
    assert receipt.message_id.endswith("@smtp-relay.mailin.fr>")


def test_idempotency_key_is_a_uuid_stable_per_message(
    fake: FakeBrevo, httpserver: HTTPServer
) -> None:
    provider = build(httpserver)
    msg = message()
    first = provider.send(msg, timeout=5)
    assert provider.send(msg, timeout=5).message_id == first.message_id
    assert fake.replays == 1
    key = last_body(fake)["headers"]["idempotencyKey"]
    assert uuid.UUID(key).version == 4 and key == idempotency_uuid(msg)
    assert idempotency_uuid(message()) != key


def test_sandbox_drops_the_message(fake: FakeBrevo, httpserver: HTTPServer) -> None:
    provider = build(httpserver, sandbox=True)
    assert provider.describe()["sandbox"] == "on"
    receipt = provider.send(message(), timeout=5)
    assert last_body(fake)["headers"]["X-Sib-Sandbox"] == "drop"
    assert "sandbox" in receipt.detail
    build(httpserver, sandbox=False).send(message(), timeout=5)
    assert "X-Sib-Sandbox" not in last_body(fake)["headers"]


def test_the_batch_form_of_the_reply(fake: FakeBrevo, httpserver: HTTPServer) -> None:
    fake.fail_next(json_response(201, {"messageIds": ["<1@relay>", "<2@relay>"]}))
    assert build(httpserver).send(message(), timeout=5).message_id == "<1@relay>"


def test_a_201_without_a_message_id_is_ambiguous(fake: FakeBrevo, httpserver: HTTPServer) -> None:
    fake.fail_next(json_response(201, {}))
    assert send_error(build(httpserver)).outcome is Outcome.AMBIGUOUS


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"reply_to": [Address("r@example.com"), Address("s@example.com")]}, "single reply-to"),
        ({"text": None}, "text or HTML body"),
        ({"subject": ""}, "subject"),
        ({"attachments": [Attachment("tool.exe", "application/x-msdownload", b"MZ")]}, "tool.exe"),
        ({"attachments": [Attachment("noext", "text/plain", b"x")]}, "noext"),
        ({"headers": [("X-Sib-Sandbox", "drop")]}, "reserves"),
        ({"headers": [("idempotencyKey", "x")]}, "reserves"),
        ({"headers": [("X-Note", "café")]}, "non-ASCII"),
        ({"headers": [("X-A", "1"), ("x-a", "2")]}, "more than once"),
        (
            {"attachments": [Attachment("l.png", "image/png", b"x", inline=True, content_id="l")]},
            "inline",
        ),
    ],
)
def test_what_brevo_cannot_carry_is_refused_before_sending(
    fake: FakeBrevo, httpserver: HTTPServer, overrides: dict[str, Any], words: str
) -> None:
    err = send_error(build(httpserver), message(**overrides))
    assert err.outcome is Outcome.REJECTED and words in err.message
    assert fake.requests == []


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (400, "invalid_parameter", Outcome.PERMANENT),
        (400, "missing_parameter", Outcome.PERMANENT),
        (422, "unprocessable_entity", Outcome.PERMANENT),
        (401, "unauthorized", Outcome.PROVIDER),
        (402, "not_enough_credits", Outcome.PROVIDER),
        (403, "permission_denied", Outcome.PROVIDER),
        (400, "account_under_validation", Outcome.PROVIDER),
        (400, "not_enough_credits", Outcome.PROVIDER),
        (404, "document_not_found", Outcome.PROVIDER),
        (405, "method_not_allowed", Outcome.REJECTED),
        (429, "too_many_requests", Outcome.TRANSIENT),
        (503, "unauthorized", Outcome.TRANSIENT),  # a 5xx stays transient
    ],
)
def test_classified_by_error_code(
    fake: FakeBrevo, httpserver: HTTPServer, status: int, code: str, outcome: Outcome
) -> None:
    fake.fail_next(error(status, code, f"words for {code}"))
    provider = build(httpserver)
    err = send_error(provider)
    assert err.outcome is outcome and err.status == status
    assert err.message == f"HTTP {status} from {provider.host}: {code}: words for {code}"


def test_rate_limit_wait_from_x_sib_ratelimit_reset(
    fake: FakeBrevo, httpserver: HTTPServer
) -> None:
    fake.fail_next(error(429, "too_many_requests", "slow", {"x-sib-ratelimit-reset": "42"}))
    assert send_error(build(httpserver)).retry_after == 42
    fake.fail_next(
        error(429, "too_many_requests", "slow", {"x-sib-ratelimit-reset": "42", "Retry-After": "5"})
    )
    assert send_error(build(httpserver)).retry_after == 5


def test_the_fake_refuses_a_malformed_recipient(fake: FakeBrevo, httpserver: HTTPServer) -> None:
    err = send_error(build(httpserver), message(to=[Address("not-an-address")]))
    assert err.outcome is Outcome.PERMANENT and "email is not valid in to" in err.message


def test_a_wrong_key(fake: FakeBrevo, httpserver: HTTPServer) -> None:
    err = send_error(build(httpserver, api_key="xkeysib-wrong-000"))
    assert err.outcome is Outcome.PROVIDER and "Key not found" in err.message
    assert "xkeysib-wrong-000" not in str(err)


def test_health_check_reads_the_account(fake: FakeBrevo, httpserver: HTTPServer) -> None:
    health = build(httpserver).check(timeout=5)
    assert health.ok and "ops@example.com" in health.detail
    request = fake.requests[-1]
    assert request.method == "GET" and request.path == "/v3/account"
    assert request.headers["api-key"] == API_KEY
    assert fake.sent == []


def test_health_check_with_a_wrong_key(fake: FakeBrevo, httpserver: HTTPServer) -> None:
    health = build(httpserver, api_key="xkeysib-nope-1").check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER
    assert "Key not found" in health.detail and "xkeysib-nope-1" not in health.detail
