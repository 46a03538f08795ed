"""Resend specifics the shared contract does not cover: Bearer auth, the Idempotency-Key
header and its replay, address formatting quirks, tags and metadata as name/value tags,
classification by error name, retry-after vs ratelimit-reset, and the GET /domains health
check where a sending-only key still proves the key."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.errors import ConfigError
from mailrelay.message import Address, Attachment
from mailrelay.providers import registry
from mailrelay.providers.base import Outcome
from mailrelay.providers.options import ProviderSpec
from mailrelay.providers.resend import ResendProvider
from tests.esp.conftest import build_provider, message_factory, send_error_factory
from tests.esp.conftest import last_json as last_body
from tests.esp.fake_resend import API_KEY, SENDING_KEY, FakeResend, error
from tests.esp.fakebase import server_base_url

PNG = b"\x89PNG\r\n\x1a\n-not-really"


def build(server: HTTPServer, **values: Any) -> ResendProvider:
    values = {"api_key": API_KEY, "base_url": server_base_url(server), **values}
    return build_provider(ResendProvider, values, name="rs")


message = message_factory()
send_error = send_error_factory(message)


def test_default_endpoint() -> None:
    provider = registry.build(
        ProviderSpec("rs", "resend", {"type": "resend", "api_key": API_KEY}, "t")
    )
    assert isinstance(provider, ResendProvider)
    assert provider.base_url == "https://api.resend.com"


def test_payload_and_headers(fake: FakeResend, httpserver: HTTPServer) -> None:
    msg = message(
        to=[Address("a@example.com", "Ann"), Address("b@example.com")],
        cc=[Address("c@example.com")],
        bcc=[Address("d@example.com")],
        reply_to=[Address("r@example.com", "Desk")],
        html="<p>hi</p>",
        headers=[("X-Ticket", "42")],
        attachments=[
            Attachment("report.csv", "text/csv", b"a,b\n"),
            Attachment("logo.png", "image/png", PNG, inline=True, content_id="logo"),
        ],
        tags=["deploy"],
        metadata={"run": "7"},
    )
    receipt = build(httpserver).send(msg, timeout=5)
    request = fake.requests[-1]
    assert request.method == "POST" and request.path == "/emails"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Idempotency-Key"] == msg.idempotency_key()
    body = last_body(fake)
    assert body["from"] == "Ops <ops@example.com>"
    assert body["to"] == ["Ann <a@example.com>", "b@example.com"]
    assert body["cc"] == ["c@example.com"] and body["bcc"] == ["d@example.com"]
    assert body["reply_to"] == ["Desk <r@example.com>"]
    assert body["text"] == "disk 91% full\n" and body["html"] == "<p>hi</p>"
    assert body["headers"] == {"X-Ticket": "42"}
    assert body["attachments"] == [
        {
            "filename": "report.csv",
            "content": base64.b64encode(b"a,b\n").decode(),
            "content_type": "text/csv",
        },
        {
            "filename": "logo.png",
            "content": base64.b64encode(PNG).decode(),
            "content_type": "image/png",
            "content_id": "logo",
        },
    ]
    # metadata as name/value tags; a bare tag as name=<tag>, value "true"
    assert body["tags"] == [
        {"name": "run", "value": "7"},
        {"name": "deploy", "value": "true"},
    ]
    assert receipt.message_id == fake.last_message_id


def test_display_names_resend_would_refuse_quoted(fake: FakeResend, httpserver: HTTPServer) -> None:
    msg = message(
        sender=Address("ops@example.com", "Ops, Night"), to=[Address("a@example.com", "Doe, Jane")]
    )
    build(httpserver).send(msg, timeout=5)
    body = last_body(fake)
    assert body["from"] == "Ops, Night <ops@example.com>"  # unquoted, as Resend documents
    assert body["to"][0].startswith("=?utf-8?") and body["to"][0].endswith(" <a@example.com>")
    assert fake.normalize(fake.sent[-1])["to"] == ["Doe, Jane <a@example.com>"]


def test_a_retry_of_the_same_message_is_not_sent_twice(
    fake: FakeResend, httpserver: HTTPServer
) -> None:
    provider = build(httpserver)
    msg = message()
    first = provider.send(msg, timeout=5)
    second = provider.send(msg, timeout=5)
    assert first.message_id == second.message_id
    assert fake.replays == 1
    assert provider.send(message(), timeout=5).message_id != first.message_id


@pytest.mark.parametrize(
    ("tags", "metadata"),
    [(["has space"], {}), ([], {"k": "é"}), (["x" * 257], {}), (["run"], {"run": "7"})],
)
def test_tags_resend_cannot_carry_are_refused_before_sending(
    fake: FakeResend, httpserver: HTTPServer, tags: list[str], metadata: dict[str, str]
) -> None:
    err = send_error(build(httpserver), message(tags=tags, metadata=metadata))
    assert err.outcome is Outcome.REJECTED
    assert fake.requests == []


def test_a_message_without_a_body_is_refused_before_sending(
    fake: FakeResend, httpserver: HTTPServer
) -> None:
    msg = message(text=None, attachments=[Attachment("a.txt", "text/plain", b"x")])
    assert send_error(build(httpserver), msg).outcome is Outcome.REJECTED
    assert fake.requests == []


@pytest.mark.parametrize(
    ("status", "name", "outcome"),
    [
        (400, "validation_error", Outcome.PERMANENT),
        (422, "validation_error", Outcome.PERMANENT),
        (403, "validation_error", Outcome.PROVIDER),  # testing mode / unverified domain
        (422, "invalid_from_address", Outcome.PERMANENT),
        (422, "invalid_attachment", Outcome.PERMANENT),
        (401, "missing_api_key", Outcome.PROVIDER),
        (401, "restricted_api_key", Outcome.PROVIDER),
        (403, "invalid_api_key", Outcome.PROVIDER),
        (429, "rate_limit_exceeded", Outcome.TRANSIENT),
        (429, "daily_quota_exceeded", Outcome.PROVIDER),
        (429, "monthly_quota_exceeded", Outcome.PROVIDER),
        (400, "invalid_idempotency_key", Outcome.REJECTED),
        (409, "invalid_idempotent_request", Outcome.REJECTED),
        (409, "concurrent_idempotent_requests", Outcome.AMBIGUOUS),
        (451, "security_error", Outcome.PROVIDER),
        (500, "application_error", Outcome.TRANSIENT),
        (404, "not_found", Outcome.PROVIDER),  # not in the table: the status decides
    ],
)
def test_classified_by_error_name(
    fake: FakeResend, httpserver: HTTPServer, status: int, name: str, outcome: Outcome
) -> None:
    fake.fail_next(error(status, name, f"words for {name}"))
    provider = build(httpserver)
    err = send_error(provider)
    assert err.outcome is outcome and err.status == status
    assert err.message == f"HTTP {status} from {provider.host}: {name}: words for {name}"


def test_rate_limit_wait_from_ratelimit_reset(fake: FakeResend, httpserver: HTTPServer) -> None:
    fake.fail_next(error(429, "rate_limit_exceeded", "slow down", {"ratelimit-reset": "4"}))
    assert send_error(build(httpserver)).retry_after == 4


def test_retry_after_wins_over_ratelimit_reset(fake: FakeResend, httpserver: HTTPServer) -> None:
    headers = {"ratelimit-reset": "4", "retry-after": "9"}
    fake.fail_next(error(429, "rate_limit_exceeded", "slow down", headers))
    assert send_error(build(httpserver)).retry_after == 9


def test_ratelimit_reset_is_ignored_outside_a_429(fake: FakeResend, httpserver: HTTPServer) -> None:
    fake.fail_next(error(500, "internal_server_error", "oops", {"ratelimit-reset": "4"}))
    assert send_error(build(httpserver)).retry_after is None


def test_the_fake_refuses_a_malformed_recipient(fake: FakeResend, httpserver: HTTPServer) -> None:
    err = send_error(build(httpserver), message(to=[Address("not-an-address")]))
    assert err.outcome is Outcome.PERMANENT and "Invalid `to` field" in err.message


def test_a_wrong_key(fake: FakeResend, httpserver: HTTPServer) -> None:
    err = send_error(build(httpserver, api_key="re_wrong_key_000"))
    assert err.outcome is Outcome.PROVIDER and "API key is invalid" in err.message
    assert "re_wrong_key_000" not in str(err)


def test_health_check_lists_domains(fake: FakeResend, httpserver: HTTPServer) -> None:
    health = build(httpserver).check(timeout=5)
    assert health.ok
    request = fake.requests[-1]
    assert request.method == "GET" and request.path == "/domains"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_a_sending_only_key_is_still_healthy(fake: FakeResend, httpserver: HTTPServer) -> None:
    health = build(httpserver, api_key=SENDING_KEY).check(timeout=5)
    assert health.ok and "sending-only" in health.detail
    assert build(httpserver, api_key=SENDING_KEY).send(message(), timeout=5).message_id


def test_an_invalid_key_is_unhealthy(fake: FakeResend, httpserver: HTTPServer) -> None:
    health = build(httpserver, api_key="re_nope_123").check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER
    assert "invalid_api_key" in health.detail and "re_nope_123" not in health.detail


def test_sandbox_is_not_a_resend_key(httpserver: HTTPServer) -> None:
    with pytest.raises(ConfigError):
        build(httpserver, sandbox=True)
