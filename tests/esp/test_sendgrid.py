"""SendGrid specifics the shared contract does not cover: JSON mapping details, sandbox mode's
200, X-RateLimit-Reset, sender-identity errors, the scopes health check.
Its URL forms are checked in test_contract.py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mailrelay.message import Address, Attachment
from mailrelay.providers.base import Outcome
from mailrelay.providers.sendgrid import SendgridProvider
from tests.esp.conftest import build_provider, message_factory, send_error_factory
from tests.esp.fake_sendgrid import FakeSendgrid, errors

KEY = FakeSendgrid.API_KEY


def build(values: dict[str, Any]) -> SendgridProvider:
    return build_provider(SendgridProvider, values, name="sg")


message = message_factory(
    to=[Address("ann@example.com", "Ann")], subject="Backup done", text="ok\n"
)
send_error = send_error_factory(message)


# --- the request ---------------------------------------------------------------------------


def test_json_body_mapping(fake: FakeSendgrid, base: str) -> None:
    msg = message(
        to=[Address("ann@example.com", "Doe, Ann"), Address("bob@example.com")],
        cc=[Address("carol@example.com")],
        bcc=[Address("dave@example.com", "Dave")],
        reply_to=[Address("help@example.com", "Help")],
        html="<p>ok</p>",
        headers=[("X-Job", "backup")],
        attachments=[
            Attachment("log.txt", "text/plain", b"done"),
            Attachment("chart.png", "image/png", b"\x89PNG", inline=True, content_id="chart"),
        ],
        tags=["backup", "backup", "nightly"],
        metadata={"job": "17"},
    )
    receipt = build(fake.config(base)).send(msg, timeout=5)
    assert receipt.message_id == fake.last_message_id == "fake-sendgrid-1"
    req = fake.requests[0]
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    body = fake.sent[0]
    (person,) = body["personalizations"]
    # names with "," or ";" are quoted for SendGrid (sendgrid-python#291)
    assert person["to"] == [
        {"email": "ann@example.com", "name": '"Doe, Ann"'},
        {"email": "bob@example.com"},
    ]
    assert person["custom_args"] == {"job": "17"}
    assert body["from"] == {"email": "ops@example.com", "name": "Ops"}
    assert body["reply_to"] == {"email": "help@example.com", "name": "Help"}
    assert "reply_to_list" not in body
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["categories"] == ["backup", "nightly"]  # uniqueItems
    assert body["headers"] == {"X-Job": "backup"}
    assert body["attachments"][0] == {
        "content": "ZG9uZQ==",
        "filename": "log.txt",
        "type": "text/plain",
        "disposition": "attachment",
    }
    assert body["attachments"][1]["disposition"] == "inline"
    assert body["attachments"][1]["content_id"] == "chart"
    assert "mail_settings" not in body
    assert fake.normalize(body)["to"][0] == '"Doe, Ann" <ann@example.com>'


def test_several_reply_to_use_the_list(fake: FakeSendgrid, base: str) -> None:
    msg = message(reply_to=[Address("a@example.com"), Address("b@example.com", "B")])
    build(fake.config(base)).send(msg, timeout=5)
    body = fake.sent[0]
    assert "reply_to" not in body
    assert body["reply_to_list"] == [
        {"email": "a@example.com"},
        {"email": "b@example.com", "name": "B"},
    ]


def test_empty_subject_is_left_out_and_sendgrid_refuses_it(fake: FakeSendgrid, base: str) -> None:
    err = send_error(build(fake.config(base)), message(subject=""))
    assert err.outcome is Outcome.PERMANENT
    assert "subject is required" in err.message


def test_sandbox_mode_validates_without_an_id(fake: FakeSendgrid, base: str) -> None:
    receipt = build({**fake.config(base), "sandbox": True}).send(message(), timeout=5)
    assert fake.sent[0]["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert receipt.message_id is None and "sandbox" in receipt.detail


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"headers": [("X-A", "1"), ("X-A", "2")]}, "X-A header twice"),
        ({"to": [], "cc": [Address("c@example.com")]}, "To recipient"),
        ({"text": None}, "body"),
        ({"tags": [f"t{i}" for i in range(11)]}, "at most 10 tag"),
    ],
)
def test_refused_before_any_request(
    fake: FakeSendgrid, base: str, kw: dict[str, Any], words: str
) -> None:
    err = send_error(build(fake.config(base)), message(**kw))
    assert err.outcome is Outcome.REJECTED and words in err.message
    assert fake.requests == []


def test_fake_rejects_a_malformed_address_like_sendgrid(fake: FakeSendgrid, base: str) -> None:
    err = send_error(build(fake.config(base)), message(to=[Address("not-an-address")]))
    assert err.outcome is Outcome.PERMANENT
    assert "personalizations.0.to.0.email: Does not contain a valid address." in err.message


# --- classification ------------------------------------------------------------------------


def test_rate_limit_reset_timestamp_gives_the_wait(fake: FakeSendgrid, base: str) -> None:
    p = build(fake.config(base))
    reset = str(int(time.time()) + 30)
    fake.fail_next(errors(429, (None, "too many requests"), **{"X-RateLimit-Reset": reset}))
    err = send_error(p)
    assert err.outcome is Outcome.TRANSIENT
    assert err.retry_after is not None and 27 <= err.retry_after <= 31
    fake.fail_next(
        errors(429, (None, "too many requests"), **{"X-RateLimit-Reset": reset, "Retry-After": "7"})
    )
    assert send_error(p).retry_after == 7.0  # Retry-After always wins


def test_reset_header_on_a_non_429_is_no_wait(fake: FakeSendgrid, base: str) -> None:
    reset = str(int(time.time()) + 30)
    fake.fail_next(errors(400, (None, "Bad Request"), **{"X-RateLimit-Reset": reset}))
    assert send_error(build(fake.config(base))).retry_after is None


@pytest.mark.parametrize("status", [400, 403])
def test_unverified_sender_is_the_accounts_problem(
    fake: FakeSendgrid, base: str, status: int
) -> None:
    fake.fail_next(
        errors(status, ("from", "The from address does not match a verified Sender Identity."))
    )
    err = send_error(build(fake.config(base)))
    assert err.outcome is Outcome.PROVIDER
    assert "from: The from address does not match a verified Sender Identity." in err.message


def test_every_error_of_the_body_is_shown(fake: FakeSendgrid, base: str) -> None:
    fake.fail_next(errors(400, ("subject", "too long"), (None, "also bad")))
    err = send_error(build(fake.config(base)))
    assert err.message.endswith(": subject: too long; also bad")


def test_wrong_key_never_shows_in_the_error(fake: FakeSendgrid, base: str) -> None:
    err = send_error(build({**fake.config(base), "api_key": "SG.wrong.key"}))
    assert err.outcome is Outcome.PROVIDER and err.status == 401
    assert "SG.wrong.key" not in str(err) and KEY not in str(err)


# --- health --------------------------------------------------------------------------------


def test_check_needs_the_mail_send_scope(fake: FakeSendgrid, base: str) -> None:
    p = build(fake.config(base))
    assert p.check(timeout=5).ok
    assert (fake.requests[0].method, fake.requests[0].path) == ("GET", "/v3/scopes")
    fake.scopes = ["stats.read"]
    health = p.check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER
    assert "mail.send" in health.detail
    assert fake.sent == []


def test_check_with_a_bad_key(fake: FakeSendgrid, base: str) -> None:
    health = build({**fake.config(base), "api_key": "SG.bad.bad"}).check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER
    assert "authorization grant is invalid" in health.detail


# --- config ------------------------------------------------------------------------------


def test_eu_subusers_use_base_url() -> None:
    p = build({"api_key": KEY, "base_url": "https://api.eu.sendgrid.com"})
    assert isinstance(p, SendgridProvider)
    assert p.base_url == "https://api.eu.sendgrid.com"
