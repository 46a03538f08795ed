"""Mandrill specifics the shared contract does not cover: the key in the body, recipient
types, Reply-To as a header, images, classification by error name whatever the HTTP status,
the per-recipient result array, the ping2 health check.
Its URL forms are checked in test_contract.py."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.errors import ConfigError
from mailrelay.message import Address, Attachment
from mailrelay.providers import registry
from mailrelay.providers.base import Outcome
from mailrelay.providers.mandrill import MandrillProvider
from mailrelay.providers.options import ProviderSpec
from tests.esp.conftest import build_provider, message_factory, send_error_factory
from tests.esp.conftest import last_json as sent_body
from tests.esp.fake_mandrill import API_KEY, FakeMandrill, error
from tests.esp.fakebase import json_response, server_base_url

PNG = b"\x89PNG\r\n\x1a\n-not-really"


def build(server: HTTPServer, **values: Any) -> MandrillProvider:
    values = {"api_key": API_KEY, "base_url": server_base_url(server), **values}
    return build_provider(MandrillProvider, values, name="md")


message = message_factory(
    to=[Address("a@example.com", "Ann"), Address("b@example.com")], html="<p>disk 91% full</p>"
)
send_error = send_error_factory(message)


def test_default_endpoint_is_the_api_1_0_root() -> None:
    cfg = {"type": "mandrill", "api_key": API_KEY}
    provider = registry.build(ProviderSpec("md", "mandrill", cfg, "test"))
    assert isinstance(provider, MandrillProvider)
    assert provider.base_url == "https://mandrillapp.com/api/1.0"


def test_base_url_replaces_scheme_and_host_only(httpserver: HTTPServer) -> None:
    assert build(httpserver).base_url == server_base_url(httpserver) + "/api/1.0"


def test_payload_mapping(fake: FakeMandrill, httpserver: HTTPServer) -> None:
    msg = message(
        cc=[Address("c@example.com", "Cee")],
        bcc=[Address("d@example.com")],
        reply_to=[Address("r@example.com", "Desk"), Address("s@example.com")],
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
    assert request.path == "/api/1.0/messages/send.json"
    assert "Authorization" not in request.headers  # the key travels in the body
    body = sent_body(fake)
    assert body["key"] == API_KEY
    m = body["message"]
    assert m["from_email"] == "ops@example.com" and m["from_name"] == "Ops"
    assert m["to"] == [
        {"email": "a@example.com", "name": "Ann", "type": "to"},
        {"email": "b@example.com", "type": "to"},
        {"email": "c@example.com", "name": "Cee", "type": "cc"},
        {"email": "d@example.com", "type": "bcc"},
    ]
    assert m["preserve_recipients"] is True  # so To and Cc show every visible recipient
    assert m["headers"] == {"X-Ticket": "42", "Reply-To": "Desk <r@example.com>, s@example.com"}
    assert m["attachments"] == [
        {"type": "text/csv", "name": "report.csv", "content": base64.b64encode(b"a,b\n").decode()}
    ]
    assert m["images"] == [
        {"type": "image/png", "name": "logo", "content": base64.b64encode(PNG).decode()}
    ]
    assert m["tags"] == ["deploy"] and m["metadata"] == {"run": "7"}
    assert receipt.message_id == fake.last_message_id


def test_single_recipient_does_not_ask_to_preserve_recipients(
    fake: FakeMandrill, httpserver: HTTPServer
) -> None:
    build(httpserver).send(message(to=[Address("a@example.com")], html=None), timeout=5)
    m = sent_body(fake)["message"]
    assert "preserve_recipients" not in m and "html" not in m and "from_name" in m


@pytest.mark.parametrize(
    ("status", "name", "outcome"),
    [
        (500, "ValidationError", Outcome.PERMANENT),  # older clients: 500 for every error
        (500, "Invalid_Key", Outcome.PROVIDER),
        (500, "PaymentRequired", Outcome.PROVIDER),
        (500, "Unknown_Subaccount", Outcome.PROVIDER),
        (400, "GeneralError", Outcome.TRANSIENT),
        (500, "RequestLimitExceeded", Outcome.TRANSIENT),
        (404, "Unknown_Method", Outcome.PROVIDER),  # unknown name: the status decides
        (409, "Something_New", Outcome.REJECTED),
    ],
)
def test_classified_by_error_name_whatever_the_status(
    fake: FakeMandrill, httpserver: HTTPServer, status: int, name: str, outcome: Outcome
) -> None:
    fake.fail_next(error(status, name, f"words for {name}"))
    provider = build(httpserver)
    err = send_error(provider)
    assert err.outcome is outcome
    assert err.status == status
    assert err.message == f"HTTP {status} from {provider.host}: {name}: words for {name}"


def test_an_error_payload_inside_a_200_is_still_an_error(
    fake: FakeMandrill, httpserver: HTTPServer
) -> None:
    fake.fail_next(error(200, "Invalid_Key", "Invalid API key"))
    assert send_error(build(httpserver)).outcome is Outcome.PROVIDER


def test_a_200_that_is_not_a_result_list_is_ambiguous(
    fake: FakeMandrill, httpserver: HTTPServer
) -> None:
    fake.fail_next(json_response(200, {"ok": True}))
    assert send_error(build(httpserver)).outcome is Outcome.AMBIGUOUS


def test_some_recipients_rejected_is_still_accepted(
    fake: FakeMandrill, httpserver: HTTPServer
) -> None:
    fake.rejects["a@example.com"] = "hard-bounce"
    receipt = build(httpserver).send(message(), timeout=5)
    assert receipt.message_id == fake.last_message_id and len(fake.sent) == 1
    assert "a@example.com rejected (hard-bounce)" in receipt.detail
    # carried per recipient into the attempt (send --json, message status)
    assert receipt.refused == (("a@example.com", "a@example.com rejected (hard-bounce)"),)


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        ("hard-bounce", Outcome.PERMANENT),  # the provider's suppression list
        ("unsub", Outcome.PERMANENT),
        ("spam", Outcome.PERMANENT),
        ("unsigned", Outcome.PROVIDER),  # the sending domain is not verified/signed
        ("invalid-sender", Outcome.PROVIDER),
        ("test-mode-limit", Outcome.PROVIDER),
    ],
)
def test_every_recipient_rejected_is_not_success(
    fake: FakeMandrill, httpserver: HTTPServer, reason: str, outcome: Outcome
) -> None:
    fake.rejects.update({"a@example.com": reason, "b@example.com": reason})
    err = send_error(build(httpserver))
    assert err.outcome is outcome
    assert f"a@example.com rejected ({reason})" in err.message
    assert fake.sent == []


def test_an_invalid_recipient_comes_back_in_the_result_array(
    fake: FakeMandrill, httpserver: HTTPServer
) -> None:
    # Message objects skip the CLI's address validation, so the fake sees the bad address
    err = send_error(build(httpserver), message(to=[Address("not-an-address")]))
    assert err.outcome is Outcome.PERMANENT
    assert "not-an-address invalid" in err.message


def test_the_fake_validates_the_body_against_the_spec(
    fake: FakeMandrill, httpserver: HTTPServer
) -> None:
    err = send_error(build(httpserver), message(sender=Address("nobody")))
    assert err.outcome is Outcome.PERMANENT
    assert "ValidationError" in err.message and "from_email" in err.message


def test_inline_parts_must_be_images(fake: FakeMandrill, httpserver: HTTPServer) -> None:
    pdf = Attachment("a.pdf", "application/pdf", b"%PDF", inline=True, content_id="a")
    err = send_error(build(httpserver), message(attachments=[pdf]))
    assert err.outcome is Outcome.REJECTED and "images" in err.message
    assert fake.requests == []


@pytest.mark.parametrize("tag", ["_internal", "x" * 51])
def test_tags_mandrill_would_refuse(fake: FakeMandrill, httpserver: HTTPServer, tag: str) -> None:
    assert send_error(build(httpserver), message(tags=[tag])).outcome is Outcome.REJECTED
    assert fake.requests == []


def test_a_header_given_twice_cannot_be_carried(fake: FakeMandrill, httpserver: HTTPServer) -> None:
    msg = message(headers=[("X-A", "1"), ("x-a", "2")])
    assert send_error(build(httpserver), msg).outcome is Outcome.REJECTED
    assert fake.requests == []


def test_health_check_pings_with_the_key(fake: FakeMandrill, httpserver: HTTPServer) -> None:
    health = build(httpserver).check(timeout=5)
    assert health.ok and "PONG" in health.detail
    request = fake.requests[-1]
    assert request.method == "POST" and request.path == "/api/1.0/users/ping2.json"
    assert json.loads(request.get_data(as_text=True)) == {"key": API_KEY}
    assert fake.sent == []


def test_health_check_with_a_wrong_key(fake: FakeMandrill, httpserver: HTTPServer) -> None:
    health = build(httpserver, api_key="wrong-key-123").check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER
    assert "Invalid_Key" in health.detail and "wrong-key-123" not in health.detail


def test_health_check_with_an_unexpected_200(fake: FakeMandrill, httpserver: HTTPServer) -> None:
    fake.fail_next(json_response(200, "PONG?"))
    health = build(httpserver).check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER


def test_a_wrong_key_is_a_provider_failure_without_the_key_in_it(
    fake: FakeMandrill, httpserver: HTTPServer
) -> None:
    err = send_error(build(httpserver, api_key="md-wrong-key-999"))
    assert err.outcome is Outcome.PROVIDER and "Invalid API key" in err.message
    assert "md-wrong-key-999" not in str(err) and "md-wrong-key-999" not in repr(err)


def test_describe_shows_no_key(httpserver: HTTPServer) -> None:
    assert API_KEY not in repr(build(httpserver).describe())


def test_sandbox_is_not_a_mandrill_key(httpserver: HTTPServer) -> None:
    with pytest.raises(ConfigError):
        build(httpserver, sandbox=True)
