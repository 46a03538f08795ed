"""Postmark specifics the shared contract does not cover: field mapping, one tag, message
streams, ErrorCode classification (also inside a 200), the /server check.
Its URL forms are checked in test_contract.py."""

from __future__ import annotations

from typing import Any

import pytest

from mailrelay.errors import ConfigError
from mailrelay.message import Address, Attachment
from mailrelay.providers.base import Outcome
from mailrelay.providers.postmark import PostmarkProvider
from tests.esp.conftest import build_provider, message_factory, send_error_factory
from tests.esp.fake_postmark import FakePostmark, pm_error
from tests.esp.fakebase import json_response

TOKEN = FakePostmark.TOKEN


def build(values: dict[str, Any]) -> PostmarkProvider:
    return build_provider(PostmarkProvider, values, name="pm")


message = message_factory(
    to=[Address("ann@example.com", "Ann")], subject="Cert expires in 7 days", text="renew\n"
)
send_error = send_error_factory(message)


# --- the request ---------------------------------------------------------------------------


def test_json_body_mapping(fake: FakePostmark, base: str) -> None:
    msg = message(
        to=[Address("ann@example.com", "Ann"), Address("bob@example.com")],
        cc=[Address("carol@example.com", "Carol, C")],
        bcc=[Address("dave@example.com")],
        reply_to=[Address("help@example.com")],
        html="<p>renew <img src='cid:logo'></p>",
        headers=[("X-Ticket", "42"), ("X-Ticket", "43")],
        attachments=[
            Attachment("cert.pem", "application/x-pem-file", b"-----BEGIN"),
            Attachment("logo.png", "image/png", b"\x89PNG", inline=True, content_id="logo"),
        ],
        tags=["certs"],
        metadata={"host": "web1"},
    )
    receipt = build(fake.config(base)).send(msg, timeout=5)
    assert receipt.message_id == fake.last_message_id
    req = fake.requests[0]
    assert req.headers["X-Postmark-Server-Token"] == TOKEN
    assert req.headers["Accept"] == "application/json"
    body = fake.sent[0]
    assert body["From"] == "Ops <ops@example.com>"
    assert body["To"] == "Ann <ann@example.com>, bob@example.com"
    assert body["Cc"] == '"Carol, C" <carol@example.com>'
    assert body["ReplyTo"] == "help@example.com"
    assert body["Headers"] == [
        {"Name": "X-Ticket", "Value": "42"},
        {"Name": "X-Ticket", "Value": "43"},
    ]
    assert body["Tag"] == "certs"
    assert body["Metadata"] == {"host": "web1"}
    assert body["Attachments"][1]["ContentID"] == "cid:logo"
    assert "ContentID" not in body["Attachments"][0]
    assert "MessageStream" not in body  # the server's default stream


def test_message_stream_is_sent_when_configured(fake: FakePostmark, base: str) -> None:
    p = build({**fake.config(base), "message_stream": "outbound-alerts"})
    p.send(message(), timeout=5)
    assert fake.sent[0]["MessageStream"] == "outbound-alerts"
    assert p.describe()["message_stream"] == "outbound-alerts"


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"tags": ["a", "b"]}, "at most 1 tag"),
        ({"to": [Address(f"u{i}@example.com") for i in range(51)]}, "at most 50 recipients"),
        ({"text": None, "attachments": [Attachment("a.txt", "text/plain", b"x")]}, "body"),
    ],
)
def test_refused_before_any_request(
    fake: FakePostmark, base: str, kw: dict[str, Any], words: str
) -> None:
    err = send_error(build(fake.config(base)), message(**kw))
    assert err.outcome is Outcome.REJECTED and words in err.message
    assert fake.requests == []


def test_postmark_has_no_sandbox_key(base: str) -> None:
    with pytest.raises(ConfigError) as info:
        build({"server_token": TOKEN, "sandbox": True})
    assert "sandbox" in str(info.value)


def test_fake_refuses_a_bad_address_with_code_300(fake: FakePostmark, base: str) -> None:
    err = send_error(build(fake.config(base)), message(to=[Address("nobody")]))
    assert err.outcome is Outcome.PERMANENT
    assert "ErrorCode 300: Invalid 'To' address: 'nobody'." in err.message


# --- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (401, 10, Outcome.PROVIDER),
        (422, 10, Outcome.PROVIDER),
        (422, 300, Outcome.PERMANENT),
        (422, 400, Outcome.PROVIDER),
        (422, 401, Outcome.PROVIDER),
        (422, 402, Outcome.PERMANENT),
        (422, 405, Outcome.PROVIDER),
        (422, 406, Outcome.PERMANENT),
        (422, 409, Outcome.PERMANENT),
        (422, 411, Outcome.PERMANENT),
        (422, 412, Outcome.PROVIDER),
        (422, 413, Outcome.PROVIDER),
        (422, 429, Outcome.TRANSIENT),
        (422, 9999, Outcome.PERMANENT),  # an unknown code keeps the status's class
        (500, 406, Outcome.TRANSIENT),  # a 5xx is transient whatever the body says
        (429, 0, Outcome.TRANSIENT),
    ],
)
def test_error_codes(
    fake: FakePostmark, base: str, status: int, code: int, outcome: Outcome
) -> None:
    fake.fail_next(pm_error(status, code, f"words for {code}"))
    err = send_error(build(fake.config(base)))
    assert err.outcome is outcome
    assert f"words for {code}" in err.message
    if code:
        assert f"ErrorCode {code}" in err.message


def test_a_200_carrying_an_error_code_is_not_success(fake: FakePostmark, base: str) -> None:
    fake.fail_next(
        pm_error(200, 406, "You tried to send to recipient(s) that have been marked as inactive.")
    )
    err = send_error(build(fake.config(base)))
    assert err.outcome is Outcome.PERMANENT and "inactive" in err.message


def test_partly_inactive_recipients_still_count_as_sent(fake: FakePostmark, base: str) -> None:
    text = (
        "Message OK, but will not deliver to these inactive addresses: bob@example.com. "
        "Inactive recipients are ones that have generated a hard bounce or a spam complaint."
    )
    fake.fail_next(
        json_response(
            200, {"To": "ann@example.com", "MessageID": "abc-1", "ErrorCode": 0, "Message": text}
        )
    )
    receipt = build(fake.config(base)).send(message(), timeout=5)
    assert receipt.message_id == "abc-1"
    assert "inactive addresses: bob@example.com" in receipt.detail


def test_wrong_token_is_provider_and_not_echoed(fake: FakePostmark, base: str) -> None:
    err = send_error(build({**fake.config(base), "server_token": "pm-wrong-token"}))
    assert (err.outcome, err.status) == (Outcome.PROVIDER, 401)
    assert "ErrorCode 10" in err.message
    assert "pm-wrong-token" not in str(err)


# --- health --------------------------------------------------------------------------------


def test_check_reads_the_server(fake: FakePostmark, base: str) -> None:
    health = build(fake.config(base)).check(timeout=5)
    assert health.ok and "Staging Testing" in health.detail
    assert (fake.requests[0].method, fake.requests[0].path) == ("GET", "/server")
    assert fake.sent == []


def test_check_with_a_bad_token(fake: FakePostmark, base: str) -> None:
    health = build({**fake.config(base), "server_token": "pm-nope-nope"}).check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER
    assert "Server Token you provided" in health.detail
