"""MailerSend specifics the contract test does not cover: the body mapping, 202 with the id in
a header, suppression warnings, the Enterprise-only headers, #MS codes, the daily API quota."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.errors import ConfigError
from mailrelay.message import Address, Attachment
from mailrelay.providers.base import Outcome
from mailrelay.providers.mailersend import MailersendProvider
from tests.esp.conftest import build_provider, message_factory, send_error_factory
from tests.esp.fake_mailersend import API_TOKEN, FakeMailersend
from tests.esp.fakebase import json_response, server_base_url


def provider(fake: FakeMailersend, server: HTTPServer, **extra: Any) -> MailersendProvider:
    return build_provider(
        MailersendProvider, {**fake.config(server_base_url(server)), **extra}, name="ms"
    )


message = message_factory(subject="s", text="t\n")
send_error = send_error_factory(message)


def test_request_shape_and_receipt_from_the_header(
    fake: FakeMailersend, httpserver: HTTPServer
) -> None:
    msg = message(
        cc=[Address("c@example.com", "Cy")],
        bcc=[Address("d@example.com")],
        reply_to=[Address("r@example.com", "Rae")],
        html="<p>x</p>",
        headers=[("X-Ticket", "42")],
        attachments=[
            Attachment("r.csv", "text/csv", b"a,b\n"),
            Attachment("logo.png", "image/png", b"\x89PNG", inline=True, content_id="logo"),
        ],
        tags=["deploy", "web1"],
    )
    receipt = provider(fake, httpserver).send(msg, timeout=5)
    assert receipt.message_id == fake.last_message_id and len(receipt.message_id or "") == 24
    request = fake.requests[-1]
    assert request.path == "/v1/email"
    assert request.headers["Authorization"] == f"Bearer {API_TOKEN}"
    body = fake.sent[-1]
    assert body["from"] == {"email": "ops@example.com", "name": "Ops"}
    assert body["cc"] == [{"email": "c@example.com", "name": "Cy"}]
    assert body["reply_to"] == {"email": "r@example.com", "name": "Rae"}
    assert body["headers"] == [{"name": "X-Ticket", "value": "42"}]
    assert body["tags"] == ["deploy", "web1"]
    assert body["attachments"][0] == {
        "content": base64.b64encode(b"a,b\n").decode(),
        "filename": "r.csv",
        "disposition": "attachment",
    }
    assert body["attachments"][1]["disposition"] == "inline"
    assert body["attachments"][1]["id"] == "logo"
    assert "metadata" not in body


def test_no_metadata_no_sandbox_and_one_reply_to(
    fake: FakeMailersend, httpserver: HTTPServer
) -> None:
    assert "metadata" not in MailersendProvider.capabilities
    with pytest.raises(ConfigError, match="sandbox"):
        provider(fake, httpserver, sandbox=True)
    p = provider(fake, httpserver)
    assert send_error(p, message(metadata={"k": "v"})).outcome is Outcome.REJECTED
    err = send_error(p, message(reply_to=[Address("r@example.com"), Address("s@example.com")]))
    assert err.outcome is Outcome.REJECTED and "one reply-to" in err.message
    err = send_error(p, message(to=[], cc=[Address("c@example.com")]))
    assert err.outcome is Outcome.REJECTED and "at least one To" in err.message
    assert fake.requests == []


def test_all_suppressed_is_permanent_and_names_the_recipients(
    fake: FakeMailersend, httpserver: HTTPServer
) -> None:
    fake.suppressed = {"a@example.com"}
    err = send_error(provider(fake, httpserver))
    assert err.outcome is Outcome.PERMANENT and err.status == 202
    assert "All of the recipients provided have been suppressed." in err.message
    assert "a@example.com: hard_bounced" in err.message
    assert fake.sent == []


def test_some_suppressed_is_accepted_with_a_note(
    fake: FakeMailersend, httpserver: HTTPServer
) -> None:
    fake.suppressed = {"b@example.com"}
    msg = message(to=[Address("a@example.com"), Address("b@example.com")])
    receipt = provider(fake, httpserver).send(msg, timeout=5)
    assert receipt.message_id == fake.last_message_id
    assert "b@example.com: hard_bounced" in receipt.detail
    # carried per recipient (send --json attempts[].refused, message status "rejected")
    assert receipt.refused == (
        ("b@example.com", "b@example.com suppressed by MailerSend (hard_bounced)"),
    )


def test_headers_refused_by_the_plan_fail_over(
    fake: FakeMailersend, httpserver: HTTPServer
) -> None:
    fake.enterprise = False
    err = send_error(provider(fake, httpserver), message(headers=[("X-Ticket", "42")]))
    # not the message's fault: another provider can carry the header
    assert err.outcome is Outcome.REJECTED and "#MS42235" in err.message
    assert "headers:" in err.message or "Enterprise" in err.message


@pytest.mark.parametrize(
    ("status", "text", "outcome"),
    [
        (422, "The from.email domain must be verified in your account. #MS42207", Outcome.PROVIDER),
        (
            422,
            "The recipient domain must be one of the verified domains. #MS42212",
            Outcome.PROVIDER,
        ),
        (422, "Your trial domain reached its email quota limit. #MS42222", Outcome.PROVIDER),
        (422, "The subject field is required.", Outcome.PERMANENT),
        (421, "Service Unavailable", Outcome.TRANSIENT),
        (408, "Request Timeout", Outcome.TRANSIENT),
        (403, "This action is unauthorized.", Outcome.PROVIDER),
    ],
)
def test_classification(
    fake: FakeMailersend, httpserver: HTTPServer, status: int, text: str, outcome: Outcome
) -> None:
    fake.fail_next(json_response(status, {"message": text, "errors": {"field": [text]}}))
    err = send_error(provider(fake, httpserver))
    assert err.outcome is outcome and text in err.message


def test_validation_details_are_shown(fake: FakeMailersend, httpserver: HTTPServer) -> None:
    err = send_error(provider(fake, httpserver), message(to=[Address("nope")], subject=""))
    assert err.outcome is Outcome.PERMANENT and err.status == 422
    assert "(and 1 more error)" in err.message
    assert "subject: The subject field is required" in err.message


def test_daily_quota_waits_for_its_reset(fake: FakeMailersend, httpserver: HTTPServer) -> None:
    reset = (datetime.now(timezone.utc) + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {"x-apiquota-remaining": "0", "x-apiquota-reset": reset}
    fake.fail_next(json_response(429, {"message": "Too Many Attempts."}, headers))
    err = send_error(provider(fake, httpserver))
    assert err.outcome is Outcome.TRANSIENT
    assert err.retry_after == pytest.approx(3 * 3600, abs=5)
    # a Retry-After header always wins
    fake.fail_next(json_response(429, {"message": "x"}, {**headers, "Retry-After": "30"}))
    assert send_error(provider(fake, httpserver)).retry_after == 30
    # per-minute limit, quota left: no wait is invented
    fake.fail_next(json_response(429, {"message": "x"}, {"x-apiquota-remaining": "5"}))
    assert send_error(provider(fake, httpserver)).retry_after is None


def test_health_check_reads_the_api_quota(fake: FakeMailersend, httpserver: HTTPServer) -> None:
    p = provider(fake, httpserver)
    health = p.check(timeout=5)
    assert health.ok and "99/100" in health.detail
    assert fake.requests[-1].path == "/v1/api-quota" and fake.requests[-1].method == "GET"
    fake.quota_remaining = 0
    health = p.check(timeout=5)
    assert not health.ok and health.outcome is Outcome.TRANSIENT and "quota" in health.detail
    assert fake.sent == []


def test_wrong_token(fake: FakeMailersend, httpserver: HTTPServer) -> None:
    err = send_error(provider(fake, httpserver, api_token="mlsn.wrong"))
    assert err.outcome is Outcome.PROVIDER and "Unauthenticated." in err.message
    assert "mlsn.wrong" not in str(err)
