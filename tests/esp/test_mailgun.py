"""Mailgun specifics the shared contract does not cover: form mapping, regions,
text-borne rate-limit waits, account-problem 400s and the domain health check.
Its URL forms are checked in test_contract.py."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from werkzeug import Response

from mailrelay.errors import ConfigError
from mailrelay.message import Address, Attachment
from mailrelay.providers.base import Outcome
from mailrelay.providers.mailgun import MailgunProvider
from tests.esp.conftest import build_provider, message_factory, send_error_factory
from tests.esp.fake_mailgun import FakeMailgun
from tests.esp.fakebase import json_response

KEY = FakeMailgun.API_KEY


def build(values: dict[str, Any], name: str = "mg") -> MailgunProvider:
    return build_provider(MailgunProvider, values, name=name)


message = message_factory(
    sender=Address("ops@mg.example.com", "Ops Team"),
    to=[Address("ann@example.com", "Ann"), Address("bob@example.com")],
    subject="Disk almost full",
    text="85% used\n",
)
send_error = send_error_factory(message)


# --- config ------------------------------------------------------------------------------


def test_region_picks_the_documented_host() -> None:
    us = build({"api_key": KEY, "domain": "mg.example.com"})
    eu = build({"api_key": KEY, "domain": "mg.example.com", "region": "eu"})
    assert isinstance(us, MailgunProvider) and isinstance(eu, MailgunProvider)
    assert us.base_url == "https://api.mailgun.net"
    assert eu.base_url == "https://api.eu.mailgun.net"
    assert eu.describe()["region"] == "eu"


def test_base_url_wins_over_region() -> None:
    p = build(
        {"api_key": KEY, "domain": "d.example", "region": "eu", "base_url": "http://127.0.0.1:9"}
    )
    assert isinstance(p, MailgunProvider)
    assert p.base_url == "http://127.0.0.1:9"


def test_unknown_region_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build({"api_key": KEY, "domain": "mg.example.com", "region": "asia"})
    assert "region" in str(info.value)


# --- the request ---------------------------------------------------------------------------


def test_every_field_goes_into_a_multipart_form(fake: FakeMailgun, base: str) -> None:
    p = build(fake.config(base))
    msg = message(
        cc=[Address("carol@example.com", "Carol")],
        bcc=[Address("dave@example.com")],
        reply_to=[Address("help@example.com", "Help"), Address("noc@example.com")],
        html="<p>85% used</p>",
        headers=[("X-Campaign", "disk"), ("List-Id", "<ops.example.com>")],
        attachments=[
            Attachment("report.csv", "text/csv", b"a,b\n1,2\n"),
            Attachment("logo.png", "image/png", b"\x89PNG\r\n", inline=True, content_id="logo1"),
        ],
        tags=["alerts", "disk"],
        metadata={"host": "db1", "run": "42"},
    )
    receipt = p.send(msg, timeout=5)
    assert receipt.message_id == fake.last_message_id == "<fake-mailgun-1@mg.example.com>"
    (req,) = fake.requests
    assert req.path == "/v3/mg.example.com/messages"
    assert req.authorization is not None and req.authorization.username == "api"
    sent = fake.sent[0]
    assert sent["content_type"] == "multipart/form-data"
    fields = sent["fields"]
    assert ("from", "Ops Team <ops@mg.example.com>") in fields
    assert [v for k, v in fields if k == "to"] == ["Ann <ann@example.com>", "bob@example.com"]
    assert ("h:Reply-To", "Help <help@example.com>, noc@example.com") in fields
    assert ("h:X-Campaign", "disk") in fields
    assert [v for k, v in fields if k == "o:tag"] == ["alerts", "disk"]
    assert ("v:host", "db1") in fields and ("v:run", "42") in fields
    assert not any(k == "o:testmode" for k, _ in fields)
    # inline parts are named by their Content-ID, so cid:logo1 in the HTML finds them
    assert ("inline", "logo1", "image/png", b"\x89PNG\r\n") in sent["files"]
    assert ("attachment", "report.csv", "text/csv", b"a,b\n1,2\n") in sent["files"]


def test_plain_message_is_still_multipart(fake: FakeMailgun, base: str) -> None:
    build(fake.config(base)).send(message(), timeout=5)
    assert fake.sent[0]["content_type"] == "multipart/form-data"
    assert fake.sent[0]["files"] == []


def test_sandbox_sends_testmode(fake: FakeMailgun, base: str) -> None:
    p = build({**fake.config(base), "sandbox": True})
    receipt = p.send(message(), timeout=5)
    assert ("o:testmode", "yes") in fake.sent[0]["fields"]
    assert fake.normalize(fake.sent[0])["sandbox"] is True
    assert "test mode" in receipt.detail
    assert p.describe()["sandbox"] == "on"


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"tags": ["a", "b", "c", "d"]}, "at most 3 tag"),
        ({"to": [], "bcc": [Address("x@example.com")]}, "To recipient"),
        ({"text": None, "attachments": [Attachment("a.txt", "text/plain", b"x")]}, "body"),
    ],
)
def test_what_mailgun_cannot_take_is_refused_before_any_request(
    fake: FakeMailgun, base: str, kw: dict[str, Any], words: str
) -> None:
    err = send_error(build(fake.config(base)), message(**kw))
    assert err.outcome is Outcome.REJECTED
    assert words in err.message
    assert fake.requests == []


def test_credential_from_unset_env_fails_at_send_without_a_request(
    fake: FakeMailgun, base: str
) -> None:
    p = build({**fake.config(base), "api_key": {"env": "MAILRELAY_TEST_UNSET_MG"}})
    with pytest.raises(ConfigError) as info:
        p.send(message(), timeout=5)
    assert "MAILRELAY_TEST_UNSET_MG" in str(info.value)
    assert fake.requests == []


def test_wrong_key_and_wrong_domain(fake: FakeMailgun, base: str) -> None:
    err = send_error(build({**fake.config(base), "api_key": "key-wrong-0000"}))
    assert (err.outcome, err.status) == (Outcome.PROVIDER, 401)
    assert "Forbidden" in err.message and "key-wrong-0000" not in str(err)
    err = send_error(build({**fake.config(base), "domain": "other.example.com"}))
    assert (err.outcome, err.status) == (Outcome.PROVIDER, 404)
    assert "Domain not found" in err.message


# --- classification ------------------------------------------------------------------------


def test_rate_limit_wait_comes_from_the_text_unless_a_header_says(
    fake: FakeMailgun, base: str
) -> None:
    p = build(fake.config(base))
    fake.fail_next(FakeMailgun.scenarios["rate_limit"].response())
    err = send_error(p)
    assert (err.outcome, err.retry_after) == (Outcome.TRANSIENT, 120.0)
    assert "try again after 120 seconds" in err.message
    resp = FakeMailgun.scenarios["rate_limit"].response()
    resp.headers["Retry-After"] = "7"
    fake.fail_next(resp)
    assert send_error(p).retry_after == 7.0


@pytest.mark.parametrize(
    ("status", "text", "outcome"),
    [
        (400, "from parameter is missing", Outcome.PERMANENT),
        (400, "Domain x.example is not allowed to send: domain is disabled", Outcome.PROVIDER),
        (400, "Domain x is not allowed to send: limit exceeded, try again", Outcome.TRANSIENT),
        (403, "Invalid private key", Outcome.PROVIDER),
        (404, "Domain not found", Outcome.PROVIDER),
        (502, "Bad Gateway", Outcome.TRANSIENT),
    ],
)
def test_classification(
    fake: FakeMailgun, base: str, status: int, text: str, outcome: Outcome
) -> None:
    fake.fail_next(json_response(status, {"message": text}))
    err = send_error(build(fake.config(base)))
    assert err.outcome is outcome
    assert err.message == f"HTTP {status} from {base.split('//')[1]}: {text}"


def test_plain_text_401_is_surfaced(fake: FakeMailgun, base: str) -> None:
    fake.fail_next(Response("Forbidden", 401, content_type="text/plain"))
    err = send_error(build(fake.config(base)))
    assert err.message.endswith(": Forbidden")


# --- health --------------------------------------------------------------------------------


def test_check_reads_the_domain_and_sends_nothing(fake: FakeMailgun, base: str) -> None:
    health = build(fake.config(base)).check(timeout=5)
    assert health.ok and "active" in health.detail
    (req,) = fake.requests
    assert (req.method, req.path) == ("GET", "/v4/domains/mg.example.com")
    assert fake.sent == []


def test_check_unverified_domain_is_unhealthy(fake: FakeMailgun, base: str) -> None:
    fake.domain_state = "unverified"
    health = build(fake.config(base)).check(timeout=5)
    assert not health.ok
    assert health.outcome is Outcome.PROVIDER
    assert "unverified" in health.detail


def test_check_sandbox_domain_says_so(fake: FakeMailgun, base: str) -> None:
    fake.domain_type = "sandbox"
    health = build(fake.config(base)).check(timeout=5)
    assert health.ok and "authorized recipients" in health.detail


def test_check_with_a_bad_key_explains_sending_keys(fake: FakeMailgun, base: str) -> None:
    health = build({**fake.config(base), "api_key": "key-sending-only-1"}).check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER
    assert "Invalid private key" in health.detail
    assert "sending key" in health.detail
    assert "key-sending-only-1" not in health.detail


def test_basic_auth_header_is_api_colon_key(fake: FakeMailgun, base: str) -> None:
    build(fake.config(base)).check(timeout=5)
    expected = "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    assert fake.requests[0].headers["Authorization"] == expected
