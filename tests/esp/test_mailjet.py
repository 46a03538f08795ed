"""Mailjet specifics the contract test does not cover: the v3.1 field mapping, SandboxMode,
per-message Status "error" (also inside a 200), classification by error code.
Its URL forms are checked in test_contract.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.message import Address, Attachment, Message
from mailrelay.providers.base import Outcome
from mailrelay.providers.mailjet import MailjetProvider
from tests.esp.conftest import build_provider, message_factory, send_error_factory
from tests.esp.fake_mailjet import API_KEY, SECRET_KEY, FakeMailjet, _error
from tests.esp.fakebase import json_response, server_base_url


def provider(fake: FakeMailjet, server: HTTPServer, **extra: Any) -> MailjetProvider:
    return build_provider(
        MailjetProvider, {**fake.config(server_base_url(server)), **extra}, name="mj"
    )


message = message_factory(subject="s", text="t\n")
send_error = send_error_factory(message)


def test_request_shape(fake: FakeMailjet, httpserver: HTTPServer) -> None:
    p = provider(fake, httpserver)
    msg = message(
        to=[Address("a@example.com", "Ann")],
        cc=[Address("c@example.com")],
        bcc=[Address("d@example.com", "Dee")],
        reply_to=[Address("r@example.com", "Rae")],
        html="<p>x</p>",
        headers=[("X-Ticket", "42")],
        attachments=[
            Attachment("r.csv", "text/csv", b"a,b\n"),
            Attachment("logo.png", "image/png", b"\x89PNG", inline=True, content_id="logo"),
        ],
        tags=["deploy"],
        metadata={"run": "7", "host": "web1"},
    )
    receipt = p.send(msg, timeout=5)
    assert receipt.message_id == fake.last_message_id
    request = fake.requests[-1]
    assert request.path == "/v3.1/send"
    assert request.authorization is not None
    assert (request.authorization.username, request.authorization.password) == (API_KEY, SECRET_KEY)
    body = fake.sent[-1]
    assert "SandboxMode" not in body
    (m,) = body["Messages"]
    assert m["From"] == {"Email": "ops@example.com", "Name": "Ops"}
    assert m["To"] == [{"Email": "a@example.com", "Name": "Ann"}]
    assert m["Cc"] == [{"Email": "c@example.com"}]
    assert m["ReplyTo"] == {"Email": "r@example.com", "Name": "Rae"}
    assert m["TextPart"] == "t\n" and m["HTMLPart"] == "<p>x</p>"
    assert m["Headers"] == {"X-Ticket": "42"}
    assert m["Attachments"][0]["Filename"] == "r.csv"
    assert m["InlinedAttachments"][0]["ContentID"] == "logo"
    assert m["CustomCampaign"] == "deploy"
    assert json.loads(m["EventPayload"]) == {"run": "7", "host": "web1"}


def test_sandbox_mode_is_a_root_property(fake: FakeMailjet, httpserver: HTTPServer) -> None:
    receipt = provider(fake, httpserver, sandbox=True).send(message(), timeout=5)
    assert fake.sent[-1]["SandboxMode"] is True
    assert "SandboxMode" not in fake.sent[-1]["Messages"][0]
    # the sandbox answers MessageID 0 and an empty MessageUUID: there is no id to report
    assert receipt.message_id is None and "sandbox" in receipt.detail


@pytest.mark.parametrize(
    ("msg", "words"),
    [
        (message(reply_to=[Address("r@example.com"), Address("s@example.com")]), "one reply-to"),
        (message(to=[], bcc=[Address("b@example.com")]), "at least one To"),
    ],
)
def test_what_v31_cannot_express_is_refused_before_sending(
    fake: FakeMailjet, httpserver: HTTPServer, msg: Message, words: str
) -> None:
    err = send_error(provider(fake, httpserver), msg)
    assert err.outcome is Outcome.REJECTED and words in err.message
    assert fake.requests == []


def test_status_error_inside_a_200_is_not_success(
    fake: FakeMailjet, httpserver: HTTPServer
) -> None:
    fake.fail_next(
        json_response(
            200,
            {
                "Messages": [
                    {
                        "Status": "error",
                        "Errors": [
                            _error("send-0008", '"ops@example.com" is not allowed', ["From"], 403)
                        ],
                    }
                ]
            },
        )
    )
    err = send_error(provider(fake, httpserver))
    assert err.outcome is Outcome.PROVIDER and err.status == 200
    assert 'send-0008 "ops@example.com" is not allowed [From]' in err.message


def test_the_fakes_own_validation_is_classified(fake: FakeMailjet, httpserver: HTTPServer) -> None:
    p = provider(fake, httpserver)
    err = send_error(p, message(to=[Address("not-an-address")]))
    assert err.outcome is Outcome.PERMANENT and err.status == 400
    assert "mj-0013" in err.message and "To[0].Email" in err.message
    # a header Mailjet sets itself: its rule, not a bad message, so fail over
    err = send_error(p, message(headers=[("X-Mailer", "x")]))
    assert err.outcome is Outcome.REJECTED and "send-0011" in err.message
    assert fake.sent == []


def test_the_most_provider_like_error_wins(fake: FakeMailjet, httpserver: HTTPServer) -> None:
    fake.fail_next(
        json_response(
            400,
            {
                "Messages": [
                    {
                        "Status": "error",
                        "Errors": [
                            _error("mj-0013", "bad address", ["To[0].Email"]),
                            _error("send-0008", "sender not authorized", ["From"], 403),
                        ],
                    }
                ]
            },
        )
    )
    err = send_error(provider(fake, httpserver))
    assert err.outcome is Outcome.PROVIDER  # a bad message stops everything only when sure
    assert "mj-0013 bad address" in err.message and "send-0008" in err.message


def test_wrong_credentials(fake: FakeMailjet, httpserver: HTTPServer) -> None:
    p = provider(fake, httpserver, secret_key="not-the-secret")
    err = send_error(p)
    assert err.outcome is Outcome.PROVIDER and "authentication/authorization failure" in err.message
    assert "not-the-secret" not in str(err)
    health = p.check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER
    assert fake.requests[-1].path == "/v3/REST/apikey" and fake.requests[-1].method == "GET"
